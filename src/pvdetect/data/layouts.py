"""Find image/mask chip pairs on disk in the supported dataset layouts and assign splits.

Three layouts are recognised:

* **Solar-Plants-Brazil**: ``ROOT/{train,val,test}/input/img(N).tif`` with
  ``ROOT/{train,val,test}/labels/target(N).tif``, paired by the number ``N`` (not by sort
  order). Sites come from ``ROOT/sites.csv`` (columns ``split,n,site[,date]``) when present,
  else every chip is its own site ``<split>-<N>``.
* **Folders**: ``ROOT/images/`` and ``ROOT/masks/`` (or ``labels/``) with the same file names,
  optionally below ``ROOT/{train,val,test}/``. The site is the file-name prefix before the first
  ``_`` or ``-``.
* **CSV manifest**: ``ROOT/manifest.csv`` or a path to a ``.csv`` file with columns ``image``,
  ``mask`` and optionally ``split`` and ``site``; relative paths are relative to the CSV's folder.

Without declared splits the chips are split by site (:mod:`pvdetect.data.splits`).

:func:`scan_layout` returns the pairs plus every problem it found (missing partner files,
duplicate numbers, ...) so that ``pvdetect check`` can list them all; :func:`find_chips` returns
just the complete pairs.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from pvdetect.data.records import (
    SPLITS,
    ChipRecord,
    LayoutScan,
    natural_key,
)
from pvdetect.data.splits import (
    assign_missing_splits,
    check_fractions,
    site_leaks,
)
from pvdetect.errors import DataError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
SITES_FILE = "sites.csv"
RASTER_SUFFIXES = (".tif", ".tiff")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_IMG_RE = re.compile(r"^img[\s_\-]*\(?\s*(\d+)\s*\)?$", re.IGNORECASE)
_TARGET_RE = re.compile(r"^(?:target|label|mask)[\s_\-]*\(?\s*(\d+)\s*\)?$", re.IGNORECASE)
_SITE_RE = re.compile(r"[_\-]")


# --------------------------------------------------------------------------- public API


def find_chips(
    root: Path | str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> list[ChipRecord]:
    """Find the chip pairs below ``root`` and their splits.

    Incomplete pairs and other layout problems are logged as warnings and the affected chips
    left out; run ``pvdetect check`` to list them.

    Args:
        root: Dataset folder, or a CSV manifest path.
        seed: Seed of the site-grouped split (used only where the layout gives no split).
        val_fraction: Share of chips for validation in a computed split.
        test_fraction: Share of chips for testing in a computed split.

    Returns:
        The records, ordered by split (train, val, test) then by key.

    Raises:
        DataError: ``root`` is missing, no layout is recognised, or no chip pair is found.
    """
    scan = scan_layout(root, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    for line in scan.problems:
        log.warning("%s", line)
    if not scan.records:
        raise DataError(f"{scan.root}: no complete image/mask pair found ({scan.layout} layout)")
    return scan.records


def scan_layout(
    root: Path | str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    save_split: bool = True,
) -> LayoutScan:
    """Scan a dataset, collecting pairs and every layout problem instead of stopping at one.

    Raises:
        DataError: ``root`` is missing, unreadable, or no layout is recognised.
    """
    check_fractions(val_fraction, test_fraction)
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{path}: dataset not found")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path}: not a dataset folder or a .csv manifest")
        scan = _scan_manifest(path)
    elif (path / MANIFEST_NAME).is_file():
        scan = _scan_manifest(path / MANIFEST_NAME)
    elif any((path / s / "input").is_dir() for s in SPLITS):
        scan = _scan_brazil(path)
    elif (path / "images").is_dir() or any((path / s / "images").is_dir() for s in SPLITS):
        scan = _scan_folders(path)
    else:
        raise DataError(
            f"{path}: no dataset layout recognised; expected {{train,val,test}}/input/img(N).tif "
            f"with {{train,val,test}}/labels/target(N).tif, or images/ and masks/ folders with "
            f"the same file names, or a {MANIFEST_NAME} with columns image,mask[,split,site]"
        )
    assign_missing_splits(scan, seed, val_fraction, test_fraction, save_split)
    site_leaks(scan)
    order = {s: i for i, s in enumerate(SPLITS)}
    scan.records.sort(key=lambda r: (order.get(r.split, 9), natural_key(r.key)))
    return scan


def dataset_root(records: Sequence[ChipRecord]) -> Path:
    """The dataset folder that holds every chip of ``records`` (for every layout).

    The common folder of all images and masks, above ``split/input``, ``split/labels``,
    ``images`` and ``masks`` folders; the working folder when there are no records.
    """
    paths = [str(p.resolve().parent) for r in records for p in (r.image, r.mask)]
    root = Path(os.path.commonpath(paths)) if paths else Path.cwd()
    if root.name in ("input", "labels", "images", "masks"):
        root = root.parent
    if root.name in SPLITS:
        root = root.parent
    return root


def site_from_name(stem: str) -> str:
    """Site id from a file stem: the part before the first ``_`` or ``-`` (else the stem)."""
    head = _SITE_RE.split(stem, maxsplit=1)[0]
    return head or stem


# --------------------------------------------------------------------------- layouts


def _rasters(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RASTER_SUFFIXES
    )


def _numbered(
    folder: Path, pattern: re.Pattern[str], scan: LayoutScan, what: str
) -> dict[int, Path | None]:
    """Files of ``folder`` by their number (None for a duplicated number, reported)."""
    found: dict[int, list[Path]] = defaultdict(list)
    for p in _rasters(folder):
        m = pattern.match(p.stem)
        if m is None:
            scan.warnings.append(f"{p}: file name does not match {what}; ignored")
            continue
        found[int(m.group(1))].append(p)
    out: dict[int, Path | None] = {}
    for n, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            scan.problems.append(f"{folder}: duplicate chip number {n} ({names})")
            out[n] = None  # known number, but no usable file
            continue
        out[n] = paths[0]
    return out


def _scan_brazil(root: Path) -> LayoutScan:
    scan = LayoutScan(root=root, layout="brazil")
    scan.declared_splits = tuple(s for s in SPLITS if (root / s).is_dir())
    sites = _read_sites_csv(root / SITES_FILE, scan) if (root / SITES_FILE).is_file() else None
    seen_sites: set[tuple[str, int]] = set()
    for split in scan.declared_splits:
        inp, lab = root / split / "input", root / split / "labels"
        for folder in (inp, lab):
            if not folder.is_dir():
                scan.problems.append(f"{folder}: folder missing")
        images = _numbered(inp, _IMG_RE, scan, "img(N).tif")
        masks = _numbered(lab, _TARGET_RE, scan, "target(N).tif")
        for n in sorted(set(images) - set(masks)):
            if images[n] is not None:
                scan.problems.append(f"{images[n]}: no mask {lab / f'target({n}).tif'}")
        for n in sorted(set(masks) - set(images)):
            if masks[n] is not None:
                scan.problems.append(f"{masks[n]}: no image {inp / f'img({n}).tif'}")
        for n in sorted(set(images) & set(masks)):
            image, mask = images[n], masks[n]
            if image is None or mask is None:
                continue
            if sites is None:
                site = f"{split}-{n}"
            elif (split, n) in sites:
                site = sites[(split, n)]
                seen_sites.add((split, n))
            else:
                scan.problems.append(f"{image}: no row for split {split}, n {n} in {SITES_FILE}")
                site = f"{split}-{n}"
            scan.records.append(ChipRecord(image, mask, split, site, f"{split}/{n}"))
    if sites is not None:
        extra = sorted(set(sites) - seen_sites)
        if extra:
            shown = ", ".join(f"{s}/{n}" for s, n in extra[:5])
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            scan.warnings.append(
                f"{root / SITES_FILE}: {len(extra)} row(s) without a chip pair ({shown}{more})"
            )
    return scan


def _read_sites_csv(path: Path, scan: LayoutScan) -> dict[tuple[str, int], str]:
    rows = _read_csv(path)
    header = {c.strip().lower() for c in rows[0]} if rows else set()
    missing = {"split", "n", "site"} - header
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(sorted(missing))}; expected split,n,site[,date]"
        )
    out: dict[tuple[str, int], str] = {}
    for line_no, row in enumerate(_dict_rows(rows), start=2):
        split = _SPLIT_ALIASES.get(row.get("split", "").strip().lower())
        try:
            n = int(row.get("n", "").strip())
        except ValueError:
            n = None
        site = row.get("site", "").strip()
        if split is None or n is None or not site:
            scan.problems.append(f"{path}: line {line_no}: bad row (split, n or site invalid)")
            continue
        if (split, n) in out and out[(split, n)] != site:
            scan.problems.append(f"{path}: line {line_no}: {split}/{n} listed twice")
        out[(split, n)] = site
    return out


def _scan_folders(root: Path) -> LayoutScan:
    scan = LayoutScan(root=root, layout="folders")
    split_dirs = [s for s in SPLITS if (root / s / "images").is_dir()]
    if split_dirs:
        scan.declared_splits = tuple(split_dirs)
        groups = [(s, root / s) for s in split_dirs]
        if (root / "images").is_dir():
            scan.warnings.append(f"{root / 'images'}: ignored, split folders are used")
    else:
        groups = [("", root)]
    for split, base in groups:
        img_dir = base / "images"
        mask_dir = next((base / n for n in ("masks", "labels") if (base / n).is_dir()), None)
        if mask_dir is None:
            scan.problems.append(f"{base / 'masks'}: folder missing (masks for {img_dir})")
            continue
        images = _by_stem(img_dir, scan)
        masks = _by_stem(mask_dir, scan)
        for stem in sorted(set(images) - set(masks)):
            if images[stem] is not None:
                scan.problems.append(f"{images[stem]}: no mask with the same name in {mask_dir}")
        for stem in sorted(set(masks) - set(images)):
            if masks[stem] is not None:
                scan.problems.append(f"{masks[stem]}: no image with the same name in {img_dir}")
        for stem in sorted(set(images) & set(masks)):
            image, mask = images[stem], masks[stem]
            if image is None or mask is None:
                continue
            key = f"{split}/{stem}" if split else stem
            scan.records.append(ChipRecord(image, mask, split, site_from_name(stem), key))
    return scan


def _by_stem(folder: Path, scan: LayoutScan) -> dict[str, Path | None]:
    found: dict[str, list[Path]] = defaultdict(list)
    for p in _rasters(folder):
        found[p.stem].append(p)
    out: dict[str, Path | None] = {}
    for stem, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            scan.problems.append(f"{folder}: duplicate chip name {stem} ({names})")
            out[stem] = None
            continue
        out[stem] = paths[0]
    return out


def _scan_manifest(path: Path) -> LayoutScan:
    base = path.parent
    scan = LayoutScan(root=base, layout="manifest")
    rows = _read_csv(path)
    header = [c.strip().lower() for c in rows[0]] if rows else []
    missing = {"image", "mask"} - set(header)
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(sorted(missing))}; "
            f"expected image,mask[,split,site]"
        )
    has_split = "split" in header
    declared: set[str] = set()
    seen: dict[Path, int] = {}
    keys: set[str] = set()
    for line_no, row in enumerate(_dict_rows(rows), start=2):
        img_txt, mask_txt = row.get("image", "").strip(), row.get("mask", "").strip()
        if not img_txt or not mask_txt:
            scan.problems.append(f"{path}: line {line_no}: empty image or mask path")
            continue
        image = _resolve(base, img_txt)
        mask = _resolve(base, mask_txt)
        if image in seen:
            scan.problems.append(
                f"{path}: line {line_no}: image {img_txt} already listed on line {seen[image]}"
            )
            continue
        seen[image] = line_no
        split = ""
        if has_split:
            raw = row.get("split", "").strip().lower()
            split = _SPLIT_ALIASES.get(raw, "")
            if raw and not split:
                scan.problems.append(
                    f"{path}: line {line_no}: unknown split {raw!r} (expected train, val or test)"
                )
                continue
            if split:
                declared.add(split)
        ok = True
        for p, what in ((image, "image"), (mask, "mask")):
            if not p.is_file():
                scan.problems.append(
                    f"{p}: {what} file not found (listed on {path.name} line {line_no})"
                )
                ok = False
        if not ok:
            continue
        site = row.get("site", "").strip() or site_from_name(image.stem)
        key = _manifest_key(base, image, keys)
        keys.add(key)
        scan.records.append(ChipRecord(image, mask, split, site, key))
    if declared:
        undeclared = [r for r in scan.records if not r.split]
        for r in undeclared:
            scan.problems.append(
                f"{r.image}: no split given while other rows of {path.name} have one"
            )
        scan.records = [r for r in scan.records if r.split]
        scan.declared_splits = tuple(s for s in SPLITS if s in declared)
    return scan


def _manifest_key(base: Path, image: Path, taken: set[str]) -> str:
    try:
        key = image.relative_to(base).with_suffix("").as_posix()
    except ValueError:
        key = image.with_suffix("").as_posix()
    if key in taken:  # same stem with another suffix, e.g. a.tif and a.tiff
        key = image.relative_to(base).as_posix() if image.is_relative_to(base) else image.as_posix()
    return key


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return [row for row in csv.reader(fh) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None


def _dict_rows(rows: list[list[str]]) -> Iterable[dict[str, str]]:
    header = [c.strip().lower() for c in rows[0]]
    for row in rows[1:]:
        yield {h: (row[i] if i < len(row) else "") for i, h in enumerate(header)}


# --------------------------------------------------------------------------- splits
