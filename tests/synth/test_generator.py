"""Tests of the synthetic Sentinel-2-like PV dataset generator (``pvdetect synth``)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rasterio.crs import CRS

from pvdetect.cli import main
from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA, raster_info, read_raster
from pvdetect.synth.generator import (
    MASK_NODATA,
    SynthSummary,
    generate_dataset,
    generate_scene,
)

SPLITS = ("train", "val", "test")


def _chip_pairs(root: Path) -> list[tuple[str, int, Path, Path]]:
    pairs = []
    for split in SPLITS:
        for img in sorted((root / split / "input").glob("img(*).tif")):
            n = int(re.fullmatch(r"img\((\d+)\)\.tif", img.name).group(1))
            pairs.append((split, n, img, root / split / "labels" / f"target({n}).tif"))
    return pairs


def _sites(root: Path) -> list[dict[str, str]]:
    with open(root / "sites.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    """12 chips of 96 px and one odd-sized scene."""
    out = tmp_path_factory.mktemp("synth_small")
    summary = generate_dataset(out, chips=12, scenes=1, scene_size=150, seed=3, chip_size=96)
    return out, summary


@pytest.fixture(scope="module")
def moderate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample large enough for pixel statistics: 60 chips of 128 px, no scenes."""
    out = tmp_path_factory.mktemp("synth_moderate")
    generate_dataset(out, chips=60, scenes=0, seed=11, chip_size=128)
    return out


def _load(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images [N,4,H,W], labels [N,H,W] and region prefixes ('br'/'te') of all chips."""
    site_of = {(r["split"], int(r["n"])): r["site"] for r in _sites(root)}
    imgs, labs, regions = [], [], []
    for split, n, img, lab in _chip_pairs(root):
        imgs.append(read_raster(img)[0])
        labs.append(read_raster(lab)[0][0])
        regions.append(site_of[(split, n)][:2])
    return np.stack(imgs), np.stack(labs), regions


def test_layout_sites_and_splits(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    pairs = _chip_pairs(out)
    assert len(pairs) == 12
    assert summary.chips == {s: sum(p[0] == s for p in pairs) for s in SPLITS}
    assert all(summary.chips[s] >= 1 for s in SPLITS)
    assert summary.chips["train"] > summary.chips["val"]
    for split in SPLITS:  # numbering 1..n per split, every image has its label
        ns = sorted(n for s, n, _, _ in pairs if s == split)
        assert ns == list(range(1, len(ns) + 1))
    assert all(lab.exists() for *_, lab in pairs)
    rows = _sites(out)
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
    for _, _, img_path, lab_path in _chip_pairs(out):
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
    for _, _, img_path, lab_path in _chip_pairs(out):
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


def test_scene_odd_size_and_no_seams(tmp_path: Path) -> None:
    """Block-wise rendering must not depend on the block size (no seams at block borders)."""
    arrays = []
    for bs in (512, 128, 77):
        s = generate_scene(
            tmp_path / f"s{bs}.tif",
            tmp_path / f"s{bs}_mask.tif",
            300,
            seed=2,
            region="temperate",
            block_size=bs,
        )
        img, info = read_raster(s.image)
        mask, minfo = read_raster(s.mask)
        assert img.shape == (4, 300, 300) and mask.shape == (1, 300, 300)
        assert minfo.dtype == "uint8" and minfo.nodata == MASK_NODATA
        assert info.crs == CRS.from_epsg(32633)
        arrays.append((img, mask))
    for img, mask in arrays[1:]:
        assert img.tobytes() == arrays[0][0].tobytes()
        assert mask.tobytes() == arrays[0][1].tobytes()
    img, mask = arrays[0]
    invalid = (img == DEFAULT_NODATA).any(axis=0)
    assert invalid.any() and not invalid.all()
    assert ((mask[0] == MASK_NODATA) == invalid).all()
    assert set(np.unique(mask)) <= {0, 1, MASK_NODATA}
    assert 0 < s.pv_fraction < 0.3 and s.plants >= 1
    # no seam: the step across a block border is like any other step between neighbours
    band = img[3]
    valid_rows = ~invalid[:, :-1] & ~invalid[:, 1:]
    steps = np.abs(np.diff(band, axis=1))
    assert steps[:, 76][valid_rows[:, 76]].mean() < 3 * steps[valid_rows].mean()


def test_pixel_statistics(moderate: Path) -> None:
    imgs, labs, regions = _load(moderate)
    valid = labs != DEFAULT_NODATA
    pv = labs == 1
    frac = pv.sum() / valid.sum()
    assert 0.01 <= frac <= 0.06, frac
    assert (~valid).any(), "no nodata at all"
    per_chip = pv.sum(axis=(1, 2))
    assert (per_chip == 0).any() and (per_chip > 0).sum() >= len(per_chip) // 2
    v = imgs.transpose(1, 0, 2, 3)[:, valid]  # [4, P]
    assert v.min() >= 0 and v.max() <= 10000 and np.percentile(v, 50) > 200
    red, nir = imgs[:, 0], imgs[:, 3]
    ndvi = np.where(valid, (nir - red) / np.maximum(nir + red, 1), 0)
    veg = valid & ~pv & (ndvi > 0.5)
    assert veg.sum() > 0.1 * valid.sum()
    assert np.median(nir[veg]) > 2500 and np.median(red[veg]) < 800
    br = np.array([r == "br" for r in regions])
    te = ~br
    assert br.any() and te.any()
    pv_br, pv_te = pv & br[:, None, None], pv & te[:, None, None]
    assert pv_br.sum() > 100 and pv_te.sum() > 100  # enough PV of both regions to judge
    # Brazilian dry-season PV: grey, red about 1000, NDVI about 0.02-0.10 (REFLECTANCE.md)
    assert 700 < np.median(red[pv_br]) < 1400
    assert -0.05 < np.median(ndvi[pv_br]) < 0.2
    # temperate PV mixes grass between rows: NDVI well above Brazil's, NIR below pasture
    assert 0.2 < np.median(ndvi[pv_te]) < 0.8
    assert np.median(nir[pv_te]) < np.median(nir[valid & te[:, None, None] & ~pv])


def test_nir_threshold_does_not_separate_pv(moderate: Path) -> None:
    """Guard that the data stays hard: no single NIR threshold finds PV (best F1 < 0.6)."""
    imgs, labs, _ = _load(moderate)
    valid = labs != DEFAULT_NODATA
    nir = imgs[:, 3][valid].astype(np.float64)
    y = labs[valid] == 1
    best = 0.0
    for score in (nir, -nir):  # PV if NIR below, or above, a threshold
        order = np.argsort(-score, kind="stable")
        tp = np.cumsum(y[order])
        k = np.arange(1, len(order) + 1)
        best = max(best, float((2 * tp / (k + y.sum())).max()))
    assert 0.0 < best < 0.6, best


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["synth", str(out), "--chips", "5", "--scenes", "1", "--scene-size", "64",
            "--chip-size", "64", "--seed", "1"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "chips: 5" in text and "scene01_brazil.tif" in text
    assert len(_chip_pairs(out)) == 5 and (out / "sites.csv").exists()
    assert main(argv) == 2  # refuses to mix with an existing dataset
    err = capsys.readouterr().err
    assert err.startswith("pvdetect synth: error: ") and "--overwrite" in err
    assert main([*argv[:3], "4", *argv[4:], "--overwrite"]) == 0
    assert len(_chip_pairs(out)) == 4
    assert len(_sites(out)) == 4
    assert main(["synth", str(tmp_path / "x"), "--chips", "2"]) == 2
    assert "at least 3" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    assert main(["synth", str(a_file), "--chips", "3"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_module_does_not_import_torch() -> None:
    code = "import sys, pvdetect.synth.generator; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
