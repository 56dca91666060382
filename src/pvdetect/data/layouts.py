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

Without declared splits the chips are split by site (no site in two splits), deterministically
for a seed, and the split is saved as ``ROOT/.pvdetect_split.json`` when the folder is writable.

:func:`scan_layout` returns the pairs plus every problem it found (missing partner files,
duplicate numbers, ...) so that ``pvdetect check`` can list them all; :func:`find_chips` returns
just the complete pairs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import re
import stat
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pvdetect.data.raster import atomic_output
from pvdetect.errors import ConfigError, DataError, OutputError

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FILE = ".pvdetect_split.json"
MANIFEST_NAME = "manifest.csv"
SITES_FILE = "sites.csv"
RASTER_SUFFIXES = (".tif", ".tiff")
_SPLIT_FILE_VERSION = 1
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


@dataclass(frozen=True)
class ChipRecord:
    """One image/mask pair.

    Attributes:
        image: Path of the 4-band image GeoTIFF.
        mask: Path of the 1-band mask GeoTIFF.
        split: ``"train"``, ``"val"`` or ``"test"``.
        site: Plant/site id; chips of one site never cross splits.
        key: Unique id of the chip, e.g. ``"train/12"`` or the file stem.
    """

    image: Path
    mask: Path
    split: str
    site: str
    key: str


@dataclass
class LayoutScan:
    """Everything found while scanning a dataset folder.

    Attributes:
        root: The dataset folder (for a manifest: the CSV's folder).
        layout: ``"brazil"``, ``"folders"`` or ``"manifest"``.
        records: Complete image/mask pairs with their split and site.
        problems: ``"path: problem"`` lines for contract violations found by the scan.
        warnings: Non-fatal remarks (ignored files, carved splits, ...).
        declared_splits: Splits that the layout itself declares (folders or manifest column).
        split_source: ``"layout"`` (declared), ``"saved"`` (reused split file) or ``"site"``
            (computed site-grouped split).
        split_file: The split file that was written or reused, if any.
    """

    root: Path
    layout: str
    records: list[ChipRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    declared_splits: tuple[str, ...] = ()
    split_source: str = "layout"
    split_file: Path | None = None


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
    _check_fractions(val_fraction, test_fraction)
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
    _assign_missing_splits(scan, seed, val_fraction, test_fraction, save_split)
    _site_leaks(scan)
    order = {s: i for i, s in enumerate(SPLITS)}
    scan.records.sort(key=lambda r: (order.get(r.split, 9), _natural_key(r.key)))
    return scan


def site_split(
    sites: dict[str, int],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> dict[str, str]:
    """Assign whole sites to splits so that the chip shares approach the fractions.

    Sites are shuffled with ``seed`` (from their sorted order, so the result depends only on the
    sites, their chip counts and the seed) and dealt to test, then val, then train. Every split
    with a positive fraction gets at least one site while enough sites remain; train always
    keeps at least one.

    Args:
        sites: Site id -> number of chips.
        seed: Shuffle seed.
        val_fraction: Target share of chips for val.
        test_fraction: Target share of chips for test.

    Returns:
        Site id -> split.
    """
    _check_fractions(val_fraction, test_fraction)
    order = sorted(sites, key=_natural_key)
    random.Random(seed).shuffle(order)
    total = sum(sites.values())
    assignment: dict[str, str] = {}
    wanted = [(s, f) for s, f in (("test", test_fraction), ("val", val_fraction)) if f > 0]
    pos = 0
    for i, (split, frac) in enumerate(wanted):
        target = frac * total
        # leave at least one site for each later split and for train
        reserve = len(wanted) - i
        count = 0
        while pos < len(order) - reserve:
            size = sites[order[pos]]
            if count > 0 and count + size / 2 > target:
                break
            assignment[order[pos]] = split
            count += size
            pos += 1
    for site in order[pos:]:
        assignment[site] = "train"
    return assignment


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


def dir_writable(path: Path) -> bool:
    """True when ``path`` is a folder we may write to.

    A folder without any write permission bit counts as read-only even for root, so shared
    read-only data is never written into.
    """
    try:
        st = path.stat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or not (st.st_mode & 0o222):
        return False
    return os.access(path, os.W_OK | os.X_OK)


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


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(f, int | float) and math.isfinite(f) and 0 <= f < 1):
            raise ConfigError(f"{name} must be in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction:g}"
        )


def _assign_missing_splits(
    scan: LayoutScan, seed: int, val_fraction: float, test_fraction: float, save: bool
) -> None:
    """Give split-less records a site-grouped split (saved), or carve val out of train."""
    if not scan.records:
        return
    if scan.declared_splits:
        scan.split_source = "layout"
        if scan.layout == "brazil" and "val" not in scan.declared_splits and val_fraction > 0:
            _carve_val(scan, seed, val_fraction)
        return
    split_path = scan.root / SPLIT_FILE
    keys = sorted(r.key for r in scan.records)
    saved = _load_split_file(split_path, keys, seed, val_fraction, test_fraction)
    if saved is not None:
        scan.split_source = "saved"
        scan.split_file = split_path
        scan.records = [_with_split(r, saved[r.key]) for r in scan.records]
        return
    counts: dict[str, int] = defaultdict(int)
    for r in scan.records:
        counts[r.site] += 1
    by_site = site_split(counts, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    scan.records = [_with_split(r, by_site[r.site]) for r in scan.records]
    scan.split_source = "site"
    if save and _save_split_file(split_path, scan.records, seed, val_fraction, test_fraction):
        scan.split_file = split_path


def _carve_val(scan: LayoutScan, seed: int, val_fraction: float) -> None:
    train = [r for r in scan.records if r.split == "train"]
    counts: dict[str, int] = defaultdict(int)
    for r in train:
        counts[r.site] += 1
    if len(counts) < 2:
        return
    by_site = site_split(counts, seed=seed, val_fraction=val_fraction, test_fraction=0.0)
    moved = {s for s, sp in by_site.items() if sp == "val"}
    scan.records = [
        _with_split(r, "val") if r.split == "train" and r.site in moved else r for r in scan.records
    ]
    scan.warnings.append(
        f"{scan.root}: no val folder; {len(moved)} of {len(counts)} training site(s) "
        f"held out as val (seed {seed})"
    )


def _with_split(r: ChipRecord, split: str) -> ChipRecord:
    return ChipRecord(r.image, r.mask, split, r.site, r.key)


def _load_split_file(
    path: Path, keys: list[str], seed: int, val_fraction: float, test_fraction: float
) -> dict[str, str] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        splits = data["splits"]
        if (
            data.get("version") != _SPLIT_FILE_VERSION
            or data.get("seed") != seed
            or not math.isclose(float(data.get("val_fraction", -1)), val_fraction)
            or not math.isclose(float(data.get("test_fraction", -1)), test_fraction)
            or sorted(splits) != keys
            or any(v not in SPLITS for v in splits.values())
        ):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return {str(k): str(v) for k, v in splits.items()}


def _save_split_file(
    path: Path, records: list[ChipRecord], seed: int, val_fraction: float, test_fraction: float
) -> bool:
    if not dir_writable(path.parent):
        return False
    data = {
        "version": _SPLIT_FILE_VERSION,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "splits": {r.key: r.split for r in sorted(records, key=lambda r: _natural_key(r.key))},
        "sites": {r.key: r.site for r in sorted(records, key=lambda r: _natural_key(r.key))},
    }
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    except (OSError, OutputError):
        return False
    return True


def _site_leaks(scan: LayoutScan) -> None:
    splits_of: dict[str, set[str]] = defaultdict(set)
    for r in scan.records:
        splits_of[r.site].add(r.split)
    order = {s: i for i, s in enumerate(SPLITS)}
    for site in sorted(splits_of, key=_natural_key):
        splits = splits_of[site]
        if len(splits) > 1:
            names = ", ".join(sorted(splits, key=lambda s: order.get(s, 9)))
            scan.problems.append(f"{scan.root}: site {site} appears in several splits ({names})")


def _natural_key(text: str) -> tuple:
    """Sort key that orders ``img2`` before ``img10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))
