"""A synthetic Sentinel-2-like PV dataset: labelled chips, ``sites.csv`` and large scenes.

Layout written (Solar-Plants-Brazil): ``OUT/{train,val,test}/input/img(N).tif``,
``OUT/{train,val,test}/labels/target(N).tif`` (float32 1/0, -9999 where the image is nodata),
``OUT/sites.csv`` (``split,n,site,date``) and ``OUT/scenes/<name>.tif`` + ``<name>_mask.tif``
(uint8 0/1, nodata 255), plus the marker ``OUT/.pvdetect.json``. Chips are grouped in
sites (about 6 chips of one landscape each) that never cross splits. The whole dataset is
written beside ``OUT`` and renamed when complete (:mod:`pvdetect.staging`). The same
arguments give byte-identical pixels. This package does not import torch.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from affine import Affine

from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA, write_raster
from pvdetect.errors import ConfigError
from pvdetect.io import write_text
from pvdetect.staging import staged_folder
from pvdetect.synth.landscape import (
    PIXEL_SIZE,
    REGION_CRS,
    REGIONS,
    Landscape,
    new_landscape,
    render_window,
)
from pvdetect.synth.noise import stable_key
from pvdetect.synth.populate import PV_TARGET, corner_cut, mean_plant_area, populate
from pvdetect.synth.scene import SceneSummary, generate_scene

__all__ = ["SPLITS", "SynthChip", "SynthSummary", "generate_dataset", "synthetic_chips"]

SPLITS = ("train", "val", "test")


@dataclass
class SynthSummary:
    """What :func:`generate_dataset` wrote."""

    out: Path
    chips: dict[str, int]
    sites: dict[str, int]
    chip_size: int
    pv_fraction: float  # PV share of labelled (valid) chip pixels
    chips_without_pv: int
    nodata_fraction: float
    scenes: list[SceneSummary]
    seconds: float

    def format(self) -> str:
        """Human-readable multi-line summary."""
        total = sum(self.chips.values())
        lines = [f"synthetic dataset written to {self.out}"]
        if total:
            per = ", ".join(f"{s} {self.chips[s]} ({self.sites[s]} sites)" for s in SPLITS)
            lines.append(f"  chips: {total} of {self.chip_size} px: {per}")
            lines.append(
                f"  PV pixels {100 * self.pv_fraction:.2f}% of labelled pixels; "
                f"{self.chips_without_pv} chips without PV; "
                f"nodata {100 * self.nodata_fraction:.2f}% of pixels"
            )
            lines.append(f"  sites: {self.out / 'sites.csv'}")
        for s in self.scenes:
            lines.append(
                f"  scene {s.image} ({s.size} x {s.size} px, {s.region}, {s.crs}, "
                f"{s.plants} plants, PV {100 * s.pv_fraction:.2f}%), mask {s.mask.name}"
            )
        lines.append(f"  done in {self.seconds:.1f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------------------- chip planning
@dataclass(frozen=True)
class _ChipPlan:
    split: str
    n: int
    site: int
    index_in_site: int


def _plan_chips(chips: int, rng: np.random.Generator) -> tuple[list[_ChipPlan], dict[int, str]]:
    """Assign chips to splits (~70/15/15) and sites (about 6 chips each, never across splits)."""
    n_val = max(1, round(0.15 * chips))
    n_test = max(1, round(0.15 * chips))
    counts = {"train": chips - n_val - n_test, "val": n_val, "test": n_test}
    plans: list[_ChipPlan] = []
    site_split: dict[int, str] = {}
    site = 0
    for split in SPLITS:
        n_chips = counts[split]
        n_sites = max(1, math.ceil(n_chips / 6))
        order = rng.permutation(n_chips)
        per_site = [0] * n_sites
        for i in range(n_chips):
            s = int(order[i]) % n_sites
            plans.append(_ChipPlan(split, i + 1, site + s, per_site[s]))
            per_site[s] += 1
        for s in range(n_sites):
            site_split[site + s] = split
        site += n_sites
    return plans, site_split


def _site_meta(seed: int, site: int) -> tuple[str, str, int, int, list[str]]:
    """Region, CRS, origin easting/northing (m) and candidate dates of a synthetic site."""
    rng = np.random.default_rng([seed, 3, site])
    region = REGIONS[int(rng.integers(2))] if site >= 2 else REGIONS[(site + seed) % 2]
    if region == "brazil":
        east = 170_000 + 20_000 * int(rng.integers(0, 32)) + 10 * int(rng.integers(0, 500))
        north = 8_350_000 - 25_000 * int(rng.integers(0, 28)) - 10 * int(rng.integers(0, 500))
        start = date(2023, 6, 1)
        span = 110
    else:
        east = 300_000 + 20_000 * int(rng.integers(0, 30)) + 10 * int(rng.integers(0, 500))
        north = 5_420_000 - 25_000 * int(rng.integers(0, 12)) - 10 * int(rng.integers(0, 500))
        start = date(2022, 5, 1)
        span = 120
    offsets = sorted(int(x) for x in rng.choice(span, size=3, replace=False))
    dates = [(start + timedelta(days=o)).isoformat() for o in offsets]
    return region, REGION_CRS[region], east, north, dates


def _site_name(seed: int, site: int) -> str:
    region = _site_meta(seed, site)[0]
    return f"{'br' if region == 'brazil' else 'te'}{site + 1:03d}"


# ------------------------------------------------------------------------------------- chips
def _chip_cut(land: Landscape, rng: np.random.Generator, x0: int, y0: int, size: int) -> None:
    """Nodata of 25 % of chips: a corner cut off (20 %) or a straight tile edge (5 %)."""
    u = rng.random()
    if u < 0.2:
        land.cuts.append(corner_cut(rng, x0, y0, size, size, rng.uniform(0.03, 0.3)))
    elif u < 0.25:  # straight tile edge along one side
        depth = size * rng.uniform(0.05, 0.3)
        side = int(rng.integers(4))
        cut = [
            (-1.0, 0.0, -(x0 + depth)),
            (1.0, 0.0, x0 + size - depth),
            (0.0, -1.0, -(y0 + depth)),
            (0.0, 1.0, y0 + size - depth),
        ][side]
        land.cuts.append(cut)


def _chip_arrays(
    seed: int, plan: _ChipPlan, chip_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Affine, str, str, str]:
    """Image, label, valid, transform, CRS, region and date of one chip.

    Chips of a site are windows side by side of one site landscape (same background), each
    with its own objects, plants, date (radiometric gain) and nodata.
    """
    region, crs, east, north, dates = _site_meta(seed, plan.site)
    site_rng = np.random.default_rng([seed, 5, plan.site])
    base = new_landscape(region, site_rng, stable_key("site", seed, plan.site))
    rng = np.random.default_rng([seed, 9, plan.site, plan.index_in_site])
    date_i = int(rng.integers(len(dates)))
    land = replace(
        base,
        gain=base.gain * rng.uniform(0.96, 1.04, size=4) * (1.0 + 0.03 * (date_i - 1)),
        objects=[],
        plants=[],
        shadows=[],
        cuts=[],
    )
    step = int(chip_size * 1.25) + 8
    x0 = plan.index_in_site * step
    y0 = (plan.index_in_site % 3) * step // 2
    area = float(chip_size * chip_size)
    max_area = 0.12 * area
    if rng.random() < 0.15:
        n_plants = 0
    else:
        lam = PV_TARGET * area / mean_plant_area(max_area) / 0.85
        n_plants = 1 + int(rng.poisson(lam - 1.0)) if lam >= 1.0 else int(rng.random() < lam)
    size = float(chip_size)
    populate(land, rng, float(x0), float(y0), size, size, n_plants, max_area)
    _chip_cut(land, rng, x0, y0, chip_size)
    img, label, valid = render_window(land, y0, x0, chip_size, chip_size)
    transform = Affine(
        PIXEL_SIZE,
        0.0,
        float(east + PIXEL_SIZE * x0),
        0.0,
        -PIXEL_SIZE,
        float(north - PIXEL_SIZE * y0),
    )
    return img, label, valid, transform, crs, region, dates[date_i]


@dataclass(frozen=True)
class SynthChip:
    """One chip of :func:`synthetic_chips`: what :func:`generate_dataset` writes for it."""

    split: str
    n: int  # the N of img(N).tif
    site: str  # the site name of sites.csv (br001, te002, ...)
    date: str
    region: str
    image: np.ndarray  # float32 [4, H, W], reflectance x 10000, nodata -9999
    label: np.ndarray  # bool [H, W], PV (False where invalid)
    valid: np.ndarray  # bool [H, W]
    transform: Affine
    crs: str


def synthetic_chips(
    chips: int, seed: int = 0, chip_size: int = 256, region: str | None = None
) -> Iterator[SynthChip]:
    """The chips :func:`generate_dataset` writes for ``chips``, ``seed`` and ``chip_size``,
    generated one by one without writing anything.

    Args:
        chips: number of chips (at least 3).
        seed: the generator seed.
        chip_size: chip side in pixels.
        region: None for the dataset's mix of regions; ``"brazil"`` or ``"temperate"`` keeps
            the plan (splits, numbers, chips per site) but gives the k-th planned site the k-th
            site id of that region, so every chip equals the one :func:`generate_dataset`
            writes for that site id and position (in a dataset large enough to hold it).
    """
    _check_args(chips, 0, 32, seed, chip_size)
    if region is not None and region not in REGIONS:
        raise ConfigError(f"unknown region {region!r} (choose from {', '.join(REGIONS)})")
    plans, _ = _plan_chips(chips, np.random.default_rng([seed, 1]))
    site_ids: dict[int, int] = {}
    if region is not None:
        candidate = 0
        for planned in sorted({p.site for p in plans}):
            while _site_meta(seed, candidate)[0] != region:
                candidate += 1
            site_ids[planned] = candidate
            candidate += 1
    for plan in plans:
        plan = replace(plan, site=site_ids.get(plan.site, plan.site))
        img, label, valid, transform, crs, reg, day = _chip_arrays(seed, plan, chip_size)
        yield SynthChip(
            plan.split, plan.n, _site_name(seed, plan.site), day, reg, img, label, valid,
            transform, crs,
        )  # fmt: skip


@dataclass
class _ChipTally:
    """Counts over the chips written."""

    counts: dict[str, int]
    pv: int = 0
    valid: int = 0
    total: int = 0
    without_pv: int = 0


def _write_chips(
    root: Path, plans: list[_ChipPlan], seed: int, chip_size: int, verbose: bool
) -> tuple[_ChipTally, list[tuple[str, int, str, str]]]:
    """Write every planned chip under ``root``; returns the tally and the ``sites.csv`` rows."""
    tally = _ChipTally(counts=dict.fromkeys(SPLITS, 0))
    rows: list[tuple[str, int, str, str]] = []
    for i, plan in enumerate(plans):
        img, label, valid, transform, crs, _, day = _chip_arrays(seed, plan, chip_size)
        target = np.where(valid, label.astype(np.float32), np.float32(DEFAULT_NODATA))
        base = root / plan.split
        grid = {"crs": crs, "transform": transform, "nodata": DEFAULT_NODATA}
        write_raster(base / "input" / f"img({plan.n}).tif", img, descriptions=BAND_NAMES, **grid)
        write_raster(
            base / "labels" / f"target({plan.n}).tif", target[None], descriptions=("PV",), **grid
        )
        tally.counts[plan.split] += 1
        n_pv = int(label.sum())
        tally.pv += n_pv
        tally.without_pv += n_pv == 0
        tally.valid += int(valid.sum())
        tally.total += valid.size
        rows.append((plan.split, plan.n, _site_name(seed, plan.site), day))
        if verbose and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(plans)} chips", flush=True)
    return tally, rows


def _write_sites(path: Path, rows: list[tuple[str, int, str, str]]) -> None:
    """``sites.csv``: ``split,n,site,date`` per chip, by split then number."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["split", "n", "site", "date"])
    writer.writerows(sorted(rows, key=lambda r: (SPLITS.index(r[0]), r[1])))
    write_text(path, buf.getvalue())


def _write_scenes(
    root: Path, out: Path, scenes: int, scene_size: int, seed: int, verbose: bool
) -> list[SceneSummary]:
    """Write the scenes under ``root/scenes`` (alternately Brazil, temperate).

    The summaries name the files under ``out``, where they are once the dataset is complete.
    """
    summaries: list[SceneSummary] = []
    for k in range(scenes):
        region = REGIONS[k % 2]
        name = f"scene{k + 1:02d}_{region}"
        s = generate_scene(
            root / "scenes" / f"{name}.tif",
            root / "scenes" / f"{name}_mask.tif",
            scene_size,
            seed * 1000 + k,
            region=region,
        )
        s = replace(s, image=out / "scenes" / s.image.name, mask=out / "scenes" / s.mask.name)
        summaries.append(s)
        if verbose:
            print(f"  scene {k + 1}/{scenes} rendered: {name}", flush=True)
    return summaries


def _check_args(chips: int, scenes: int, scene_size: int, seed: int, chip_size: int) -> None:
    if chips < 0 or 0 < chips < 3:
        raise ConfigError(f"--chips must be 0 or at least 3 (one per split), got {chips}")
    if scenes < 0:
        raise ConfigError(f"--scenes must be >= 0, got {scenes}")
    if chip_size < 32:
        raise ConfigError(f"--chip-size must be at least 32 px, got {chip_size}")
    if scenes and scene_size < 32:
        raise ConfigError(f"--scene-size must be at least 32 px, got {scene_size}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")


def generate_dataset(
    out: Path,
    chips: int = 300,
    scenes: int = 2,
    scene_size: int = 1024,
    seed: int = 0,
    chip_size: int = 256,
    *,
    overwrite: bool = False,
    verbose: bool = False,
) -> SynthSummary:
    """Write a synthetic chip dataset (Solar-Plants-Brazil layout) and large scenes.

    Args:
        out: output folder; it must not exist, be empty, or (with ``overwrite``) hold a
            dataset that this function wrote (it carries the marker file).
        chips: number of labelled chips (0, or at least 3: one per split).
        scenes: number of large scenes under ``out/scenes`` (alternately Brazil, temperate).
        scene_size: scene width and height in pixels.
        seed: random seed; the same arguments give byte-identical pixels.
        chip_size: chip width and height in pixels.
        overwrite: replace a dataset written earlier by pvdetect synth in ``out``.
        verbose: print progress.

    Returns:
        A :class:`SynthSummary`.

    Raises:
        ConfigError: a bad argument.
        OutputError: ``out`` holds something else, or cannot be written.
    """
    out = Path(out)
    _check_args(chips, scenes, scene_size, seed, chip_size)
    t0 = time.perf_counter()
    plans, site_split = _plan_chips(chips, np.random.default_rng([seed, 1])) if chips else ([], {})
    record = {
        "arguments": {
            "chips": chips,
            "scenes": scenes,
            "scene_size": scene_size,
            "chip_size": chip_size,
        },
        "seed": seed,
    }
    with staged_folder(out, record, overwrite=overwrite, tool="pvdetect synth") as root:
        tally, rows = _write_chips(root, plans, seed, chip_size, verbose)
        if rows:
            _write_sites(root / "sites.csv", rows)
        scene_summaries = _write_scenes(root, out, scenes, scene_size, seed, verbose)
    sites = {s: sum(1 for v in site_split.values() if v == s) for s in SPLITS}
    return SynthSummary(
        out=out,
        chips=tally.counts,
        sites=sites,
        chip_size=chip_size,
        pv_fraction=tally.pv / max(1, tally.valid),
        chips_without_pv=tally.without_pv,
        nodata_fraction=1.0 - tally.valid / max(1, tally.total),
        scenes=scene_summaries,
        seconds=time.perf_counter() - t0,
    )
