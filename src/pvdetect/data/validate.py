"""``pvdetect check``: validate a chip dataset against the chip contract and summarise it.

Every file is read once. Every violation becomes one ``path: problem`` line; the command exits
2 when there is any, 0 otherwise. This module must not import torch.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pvdetect.data.chips import IMAGE_BANDS, crs_text, read_chip
from pvdetect.data.layouts import scan_layout
from pvdetect.data.raster import (
    BAND_NAMES,
    RasterInfo,
)
from pvdetect.data.records import SPLITS, ChipRecord, LayoutScan
from pvdetect.data.stats import RunningBandStats
from pvdetect.errors import DataError


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    Attributes:
        root: Dataset folder (or manifest path) that was checked.
        layout: Recognised layout, empty when none.
        split_source: Where splits came from: ``layout``, ``saved`` or ``site``.
        problems: ``path: problem`` lines, one per contract violation.
        warnings: Remarks that do not fail the check.
        chips: Chips per split.
        sites: Distinct sites per split.
        pv_fraction: Per split, PV share of labelled valid pixels.
        nodata_fraction: Per split, share of pixels invalid in the image.
        unlabelled_fraction: Per split, share of image-valid pixels with mask nodata.
        band_stats: Per split, per band dicts with band, mean, std, min, max (valid pixels).
        sizes: ``"HxW"`` -> number of chips.
        crs: CRS text -> number of chips.
        pixel_sizes: ``"X x Y"`` pixel size -> number of chips.
    """

    root: str
    layout: str = ""
    split_source: str = ""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chips: dict[str, int] = field(default_factory=dict)
    sites: dict[str, int] = field(default_factory=dict)
    pv_fraction: dict[str, float] = field(default_factory=dict)
    nodata_fraction: dict[str, float] = field(default_factory=dict)
    unlabelled_fraction: dict[str, float] = field(default_factory=dict)
    band_stats: dict[str, list[dict]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    crs: dict[str, int] = field(default_factory=dict)
    pixel_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-ready dictionary (NaN becomes None)."""
        d = asdict(self)
        d["ok"] = self.ok
        return _json_clean(d)

    def format(self, problems: bool = True) -> str:
        """Human-readable summary; with ``problems`` the problem lines follow it."""
        lines = [f"dataset: {self.root}"]
        if self.layout:
            source = {
                "layout": "splits from the layout",
                "saved": "splits from the saved .pvdetect_split.json",
                "site": "splits computed by site",
            }.get(self.split_source, self.split_source)
            lines.append(f"layout: {self.layout} ({source})")
        if self.chips:
            parts = [
                f"{s} {self.chips[s]} chips / {self.sites.get(s, 0)} sites" for s in self.chips
            ]
            lines.append("splits: " + " | ".join(parts))
            lines.append(f"chips: {sum(self.chips.values())}")
        if self.sizes:
            lines.append("chip sizes: " + _counter_text(self.sizes))
        if self.crs:
            lines.append("CRS: " + _counter_text(self.crs))
        if self.pixel_sizes:
            lines.append("pixel size: " + _counter_text(self.pixel_sizes))
        if self.pv_fraction:
            lines.append("PV share of labelled pixels: " + _split_pct(self.pv_fraction))
        if self.nodata_fraction:
            lines.append("image nodata share: " + _split_pct(self.nodata_fraction))
        if self.unlabelled_fraction:
            lines.append(
                "unlabelled share of valid pixels: " + _split_pct(self.unlabelled_fraction)
            )
        if self.band_stats:
            lines.append("band statistics over valid pixels:")
            lines.append(
                f"  {'split':<6} {'band':<6} {'mean':>10} {'std':>10} {'min':>10} {'max':>10}"
            )
            for split, rows in self.band_stats.items():
                for row in rows:
                    lines.append(
                        f"  {split:<6} {row['band']:<6} {_num(row['mean'])} {_num(row['std'])} "
                        f"{_num(row['min'])} {_num(row['max'])}"
                    )
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if problems:
            lines.extend(self.problems)
        lines.append("result: ok" if self.ok else f"result: {len(self.problems)} problem(s) found")
        return "\n".join(lines)


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return f"{'-':>10}"
    return f"{x:>10.2f}"


def _counter_text(c: dict[str, int]) -> str:
    return ", ".join(f"{k} ({v})" for k, v in c.items())


def _split_pct(d: dict[str, float]) -> str:
    return " | ".join(f"{s} {v * 100:.2f}%" if v == v else f"{s} -" for s, v in d.items())


def _json_clean(x):
    if isinstance(x, dict):
        return {str(k): _json_clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_clean(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


@dataclass
class _SplitAcc:
    """Per-split accumulators."""

    stats: RunningBandStats = field(default_factory=lambda: RunningBandStats(IMAGE_BANDS))
    pixels: int = 0
    invalid: int = 0
    labelled: int = 0
    pv: int = 0
    unlabelled: int = 0
    sites: set[str] = field(default_factory=set)
    chips: int = 0


def check_dataset(
    root: Path | str,
    seed: int = 0,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> CheckReport:
    """Validate every rule of the chip contract on a dataset and summarise it.

    Bad data never raises: every violation is a line in ``report.problems``.

    Args:
        root: Dataset folder or CSV manifest.
        seed: Seed of the site-grouped split where the layout gives none.
        val_fraction: Val share for a computed split.
        test_fraction: Test share for a computed split.
    """
    report = CheckReport(root=str(root))
    try:
        # a check only reads: a computed split is not saved (training computes the same one)
        scan = scan_layout(
            root,
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            save_split=False,
        )
    except DataError as exc:
        report.problems.append(str(exc))
        return report
    report.root = str(scan.root) if Path(root).is_dir() else str(root)
    report.layout = scan.layout
    report.split_source = scan.split_source
    report.problems.extend(scan.problems)
    report.warnings.extend(scan.warnings)

    accs: dict[str, _SplitAcc] = defaultdict(_SplitAcc)
    sizes: Counter[str] = Counter()
    crs: Counter[str] = Counter()
    pixel_sizes: Counter[str] = Counter()
    for rec in scan.records:
        acc = accs[rec.split]
        acc.chips += 1
        acc.sites.add(rec.site)
        info = _check_chip(rec, acc, report)
        if info is not None:
            sizes[f"{info.height}x{info.width}"] += 1
            crs[crs_text(info)] += 1
            pixel_sizes[f"{info.res[0]:g} x {info.res[1]:g}"] += 1

    _check_splits(scan, accs, report)
    present = [s for s in SPLITS if s in accs] + sorted(s for s in accs if s not in SPLITS)
    for s in present:
        acc = accs[s]
        report.chips[s] = acc.chips
        report.sites[s] = len(acc.sites)
        report.pv_fraction[s] = acc.pv / acc.labelled if acc.labelled else float("nan")
        report.nodata_fraction[s] = acc.invalid / acc.pixels if acc.pixels else float("nan")
        valid = acc.pixels - acc.invalid
        report.unlabelled_fraction[s] = acc.unlabelled / valid if valid else float("nan")
        st = acc.stats
        if st.count:
            report.band_stats[s] = [
                {
                    "band": BAND_NAMES[b] if b < len(BAND_NAMES) else f"b{b + 1}",
                    "mean": float(st.mean[b]),
                    "std": float(st.std[b]),
                    "min": float(st.min[b]),
                    "max": float(st.max[b]),
                    "pixels": int(st.count),
                }
                for b in range(IMAGE_BANDS)
            ]
    report.sizes = dict(sizes.most_common())
    report.crs = dict(crs.most_common())
    report.pixel_sizes = dict(pixel_sizes.most_common())
    return report


def _check_chip(rec: ChipRecord, acc: _SplitAcc, report: CheckReport) -> RasterInfo | None:
    """Judge one pair by :func:`~pvdetect.data.chips.read_chip`, accumulating statistics;
    returns the image info when the image could be read."""
    chip = read_chip(rec)
    report.problems.extend(chip.problems)
    report.warnings.extend(chip.warnings)
    if chip.image is None or chip.valid is None:
        return None
    valid = chip.valid
    acc.pixels += valid.size
    acc.invalid += valid.size - int(valid.sum())
    acc.stats.update(chip.image[:, valid])
    if chip.ok:
        assert chip.mask is not None and chip.labelled is not None
        labelled = valid & chip.labelled
        n_lab = int(labelled.sum())
        acc.labelled += n_lab
        acc.pv += int((labelled & (chip.mask == 1)).sum())
        acc.unlabelled += int(valid.sum()) - n_lab
    return chip.image_info


def _check_splits(scan: LayoutScan, accs: dict[str, _SplitAcc], report: CheckReport) -> None:
    required = list(dict.fromkeys([*scan.declared_splits, "train", "val"]))
    for split in required:
        if split in accs and accs[split].chips:
            continue
        if split in scan.declared_splits:
            where = scan.root / split if scan.layout in ("brazil", "folders") else scan.root
            report.problems.append(f"{where}: split {split} is declared but has no chip pair")
        else:
            n_sites = len({r.site for r in scan.records})
            report.problems.append(
                f"{scan.root}: split {split} is empty ({len(scan.records)} chip pair(s) "
                f"from {n_sites} site(s))"
            )


# --------------------------------------------------------------------------- CLI
