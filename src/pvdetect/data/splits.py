"""Splits of a dataset: declared by the layout, saved in the split file, or computed by site.

Without declared splits the chips are split by site (no site in two splits), deterministically
for a seed, and the split is saved as ``ROOT/.pvdetect_split.json`` when the folder is
writable; a Solar-Plants-Brazil layout without a val folder gets val carved out of train.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path

from pvdetect.data.records import SPLITS, ChipRecord, LayoutScan, dir_writable, natural_key
from pvdetect.errors import ConfigError, OutputError
from pvdetect.io import atomic_output

__all__ = ["SPLIT_FILE", "assign_missing_splits", "check_fractions", "site_leaks", "site_split"]

SPLIT_FILE = ".pvdetect_split.json"


_SPLIT_FILE_VERSION = 1


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
    check_fractions(val_fraction, test_fraction)
    order = sorted(sites, key=natural_key)
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


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(f, int | float) and math.isfinite(f) and 0 <= f < 1):
            raise ConfigError(f"{name} must be in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction:g}"
        )


def assign_missing_splits(
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
        "splits": {r.key: r.split for r in sorted(records, key=lambda r: natural_key(r.key))},
        "sites": {r.key: r.site for r in sorted(records, key=lambda r: natural_key(r.key))},
    }
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    except (OSError, OutputError):
        return False
    return True


def site_leaks(scan: LayoutScan) -> None:
    splits_of: dict[str, set[str]] = defaultdict(set)
    for r in scan.records:
        splits_of[r.site].add(r.split)
    order = {s: i for i, s in enumerate(SPLITS)}
    for site in sorted(splits_of, key=natural_key):
        splits = splits_of[site]
        if len(splits) > 1:
            names = ", ".join(sorted(splits, key=lambda s: order.get(s, 9)))
            scan.problems.append(f"{scan.root}: site {site} appears in several splits ({names})")
