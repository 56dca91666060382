"""Tests of pvdetect.synth.dataset: chips, sites.csv, georeferencing, reproducibility."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from rasterio.crs import CRS

from pvdetect import __version__
from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA, raster_info, read_raster
from pvdetect.staging import MARKER
from pvdetect.synth.dataset import SPLITS, SynthSummary, generate_dataset
from tests.synth.chips import chip_pairs, read_sites


def test_layout_sites_and_splits(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    pairs = chip_pairs(out)
    assert len(pairs) == 12
    assert summary.chips == {s: sum(p[0] == s for p in pairs) for s in SPLITS}
    assert all(summary.chips[s] >= 1 for s in SPLITS)
    assert summary.chips["train"] > summary.chips["val"]
    for split in SPLITS:  # numbering 1..n per split, every image has its label
        ns = sorted(n for s, n, _, _ in pairs if s == split)
        assert ns == list(range(1, len(ns) + 1))
    assert all(lab.exists() for *_, lab in pairs)
    rows = read_sites(out)
    assert list(rows[0].keys()) == ["split", "n", "site", "date"]
    assert {(r["split"], int(r["n"])) for r in rows} == {(s, n) for s, n, _, _ in pairs}
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r["site"], set()).add(r["split"])
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["date"])
    assert all(len(s) == 1 for s in split_of.values()), "a site crosses splits"
    assert {next(iter(s)) for s in split_of.values()} == set(SPLITS)
    scene = out / "scenes" / "scene01_brazil.tif"
    assert scene.exists() and (out / "scenes" / "scene01_brazil_mask.tif").exists()
    assert [s.image for s in summary.scenes] == [scene]
    assert not list(out.rglob(".*.part*")), "temporary files left behind"
    text = summary.format()
    assert "train" in text and "PV pixels" in text and str(scene) in text


def test_chip_files_dtypes_nodata_and_labels(small: tuple[Path, SynthSummary]) -> None:
    out, _ = small
    nodata_chips = 0
    for _, _, img_path, lab_path in chip_pairs(out):
        info = raster_info(img_path)
        assert (info.count, info.height, info.width) == (4, 96, 96)
        assert info.dtype == "float32" and info.nodata == DEFAULT_NODATA
        assert info.descriptions == BAND_NAMES
        img, _ = read_raster(img_path)
        lab, linfo = read_raster(lab_path)
        assert linfo.dtype == "float32" and linfo.nodata == DEFAULT_NODATA
        invalid = (img == DEFAULT_NODATA).any(axis=0)
        assert ((img == DEFAULT_NODATA).all(axis=0) == invalid).all(), "partial nodata pixel"
        assert set(np.unique(lab)) <= {0.0, 1.0, DEFAULT_NODATA}
        assert ((lab[0] == DEFAULT_NODATA) == invalid).all()
        nodata_chips += bool(invalid.any())
        valid = img[:, ~invalid]
        assert valid.size == 0 or (valid.min() >= 0 and valid.max() <= 10000)
    assert nodata_chips < 12


def test_georeferencing(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    origins = set()
    for _, _, img_path, lab_path in chip_pairs(out):
        info, linfo = raster_info(img_path), raster_info(lab_path)
        assert info.crs is not None and info.crs.is_projected
        assert info.crs in (CRS.from_epsg(31983), CRS.from_epsg(32633))
        assert info.res == (10.0, 10.0)
        assert info.transform.e < 0
        assert (linfo.crs, linfo.transform, linfo.height, linfo.width) == (
            info.crs,
            info.transform,
            info.height,
            info.width,
        )
        origins.add((info.crs.to_epsg(), info.transform.c, info.transform.f))
    assert len(origins) == 12, "two chips at the same place"
    scene = summary.scenes[0]
    si, mi = raster_info(scene.image), raster_info(scene.mask)
    assert si.crs == CRS.from_epsg(31983) and si.res == (10.0, 10.0)
    assert (mi.crs, mi.transform, mi.height, mi.width) == (si.crs, si.transform, 150, 150)


def test_same_seed_identical_other_seed_differs(tmp_path: Path) -> None:
    kw = {"chips": 4, "scenes": 1, "scene_size": 70, "chip_size": 64}
    a = generate_dataset(tmp_path / "a", seed=5, **kw)
    b = generate_dataset(tmp_path / "b", seed=5, **kw)
    c = generate_dataset(tmp_path / "c", seed=6, **kw)
    assert a.chips == b.chips
    files = [p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.tif")]
    assert len(files) == 4 * 2 + 2
    differs = 0
    for rel in files:
        xa, ia = read_raster(tmp_path / "a" / rel)
        xb, ib = read_raster(tmp_path / "b" / rel)
        assert xa.tobytes() == xb.tobytes(), rel
        assert ia.transform == ib.transform and ia.crs == ib.crs
        if (tmp_path / "c" / rel).exists():
            xc, _ = read_raster(tmp_path / "c" / rel)
            differs += xc.shape != xa.shape or not np.array_equal(xc, xa)
    assert (tmp_path / "a" / "sites.csv").read_text() == (tmp_path / "b" / "sites.csv").read_text()
    assert differs >= len(files) // 2
    assert (c.pv_fraction, c.chips_without_pv) != (a.pv_fraction, a.chips_without_pv)


def test_marker_records_version_arguments_and_seed(small: tuple[Path, SynthSummary]) -> None:
    out, _ = small
    record = json.loads((out / MARKER).read_text())
    assert record["tool"] == "pvdetect synth" and record["version"] == __version__
    assert record["seed"] == 3
    assert record["arguments"] == {"chips": 12, "scenes": 1, "scene_size": 150, "chip_size": 96}
    assert not list(out.parent.glob(f".{out.name}.*")), "temporary folder left beside OUT"


def test_package_does_not_import_torch() -> None:
    code = (
        "import sys, pvdetect.synth.dataset, pvdetect.commands.synth; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
