"""Tests of ``pvdetect upscale`` on small Brazil-layout datasets written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from spandrel.architectures.ESRGAN import ESRGAN

from pvdetect.cli import main
from pvdetect.data.raster import read_raster
from tests.fixtures import brazil_paths, grid, random_chip, write_brazil_dataset

NODATA = -9999.0


def _chip(seed: int) -> tuple[np.ndarray, np.ndarray]:
    img, mask = random_chip(seed, 32, low=200, high=3000, pv_fraction=0.3)
    img[:, :, :4] = NODATA  # a nodata strip on the left
    img[2, 10, 10] = NODATA  # one band invalid -> pixel invalid
    mask[:, :2] = NODATA  # unlabelled rows at the top
    return img, mask


@pytest.fixture()
def brazil(tmp_path: Path) -> Path:
    """train 1, 2 (site a) and val 1 (site b), from seeds 1, 2, 3, each on its own grid."""
    return write_brazil_dataset(
        tmp_path / "chips",
        {"train": 2, "val": 1},
        lambda split, n: _chip(n + (2 if split == "val" else 0)),
        sites=lambda split, n: "a" if split == "train" else "b",
        transform=lambda n: grid(500_000 + 1000 * n, 5_300_000),
    )


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    return [brazil_paths(root, s, n) for s, n in (("train", 1), ("train", 2), ("val", 1))]


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_copy(brazil, tmp_path, factor, capsys):
    out = tmp_path / "up"
    assert main(["upscale", str(brazil), str(out), "--factor", str(factor)]) == 0
    assert "wrote 3 chips" in capsys.readouterr().out
    assert (out / "sites.csv").read_text() == (brazil / "sites.csv").read_text()
    for (src_img, src_mask), (dst_img, dst_mask) in zip(_pairs(brazil), _pairs(out), strict=True):
        a, ai = read_raster(src_img)
        b, bi = read_raster(dst_img)
        assert b.shape == (4, 32 * factor, 32 * factor)
        assert bi.crs == ai.crs and bi.nodata == NODATA and bi.dtype == "float32"
        assert bi.transform.a == pytest.approx(ai.transform.a / factor)
        assert bi.transform.e == pytest.approx(ai.transform.e / factor)
        with rasterio.open(src_img) as s, rasterio.open(dst_img) as d:
            assert tuple(d.bounds) == pytest.approx(tuple(s.bounds))
        # nodata kept exactly where the nearest source pixel was invalid
        invalid = (a == NODATA).any(axis=0)
        up_invalid = invalid.repeat(factor, 0).repeat(factor, 1)
        assert np.array_equal((b == NODATA).all(axis=0), up_invalid)
        assert not (b == NODATA).any(axis=0)[~up_invalid].any()
        # no nodata bleed and no ringing: valid values stay within each band's source range
        vals = b[:, ~up_invalid]
        src_vals = a[:, ~invalid]
        assert np.all(vals.min(axis=1) >= src_vals.min(axis=1))
        assert np.all(vals.max(axis=1) <= src_vals.max(axis=1))
        # block means of the interior follow the source
        core = b[0, 16 * factor : 24 * factor, 16 * factor : 24 * factor]
        blocks = core.reshape(8, factor, 8, factor).mean(axis=(1, 3))
        assert np.corrcoef(blocks.ravel(), a[0, 16:24, 16:24].ravel())[0, 1] > 0.8
        m, mi = read_raster(src_mask)
        mm, mmi = read_raster(dst_mask)
        assert mmi.transform.a == pytest.approx(mi.transform.a / factor)
        assert set(np.unique(mm).tolist()) == {NODATA, 0.0, 1.0}
        assert np.array_equal(mm, m.repeat(factor, 1).repeat(factor, 2))


def test_cli_errors(brazil, tmp_path, capsys):
    out = tmp_path / "up"
    assert main(["upscale", str(brazil), str(out), "--factor", "3"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["upscale", str(brazil), str(out), "--method", "sr"]) == 2
    assert "--sr-weights" in capsys.readouterr().err
    assert main(["upscale", str(brazil), str(brazil / "inside")]) == 2
    assert "inside" in capsys.readouterr().err
    assert main(["upscale", str(tmp_path / "missing"), str(out)]) == 2
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["upscale", str(brazil), str(out)]) == 2
    assert "not written by pvdetect upscale" in capsys.readouterr().err
    # --overwrite replaces only what pvdetect upscale wrote: a foreign folder stays as it is
    assert main(["upscale", str(brazil), str(out), "--overwrite"]) == 2
    assert "left untouched" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    assert main(["upscale", str(brazil), str(out)]) == 0
    assert main(["upscale", str(brazil), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["upscale", str(brazil), str(out), "--overwrite", "--factor", "4"]) == 0
    assert (out / "val" / "input" / "img(1).tif").is_file()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".up.")]
    assert leftovers == []


def test_output_holding_the_input_is_refused(brazil, tmp_path, capsys):
    """``upscale DATA PARENT --overwrite`` where PARENT holds DATA used to delete DATA."""
    parent = brazil.parent
    (parent / "other.txt").write_text("keep me")
    before = sorted(p.relative_to(parent) for p in parent.rglob("*"))
    assert main(["upscale", str(brazil), str(parent), "--factor", "2", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "must not be the input" in err and "\n" not in err
    assert sorted(p.relative_to(parent) for p in parent.rglob("*")) == before


def test_killed_upscale_leaves_nothing_the_next_run_keeps(brazil, tmp_path):
    """A partial folder of a killed run (owner gone) is removed by the next run into OUT."""
    import json
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    out = tmp_path / "up"
    stale = tmp_path / f".up.partial-{pid}"
    (stale / "train").mkdir(parents=True)
    (stale / ".pvdetect.json").write_text(json.dumps({"tool": "pvdetect upscale"}))
    (stale / "train" / "big.tif").write_bytes(b"x" * 1000)
    foreign = tmp_path / f".up.partial-{pid + 1}"  # not ours (no marker): kept
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["upscale", str(brazil), str(out)]) == 0
    assert not stale.exists() and foreign.exists()
    assert (out / "val" / "input" / "img(1).tif").is_file()


def test_bad_chip_leaves_nothing(brazil, tmp_path, capsys):
    (brazil / "val" / "input" / "img(1).tif").write_bytes(b"II*\x00broken")
    out = tmp_path / "up"
    assert main(["upscale", str(brazil), str(out)]) == 2
    err = capsys.readouterr().err
    assert "img(1).tif" in err and "\n" not in err.strip()
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".up")] == []


def test_super_resolution(brazil, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "tiny_x2.pth"
    torch.save(
        ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2).state_dict(), weights
    )
    out = tmp_path / "sr"
    args = ["upscale", str(brazil), str(out), "--method", "sr", "--sr-weights", str(weights)]
    assert main([*args, "--factor", "4"]) == 2  # the model is x2
    assert main([*args, "--factor", "2", "--device", "cpu"]) == 0
    b, bi = read_raster(out / "train" / "input" / "img(1).tif")
    a, _ = read_raster(brazil / "train" / "input" / "img(1).tif")
    assert b.shape == (4, 64, 64)
    invalid = (a == NODATA).any(axis=0).repeat(2, 0).repeat(2, 1)
    assert np.array_equal((b == NODATA).all(axis=0), invalid)
    vals = b[:, ~invalid]
    assert vals.min() >= 0 and np.isfinite(vals).all()


def test_real_austria_chips(tmp_path, austria_root):
    out = tmp_path / "austria_x2"
    assert main(["upscale", str(austria_root), str(out), "--factor", "2"]) == 0
    src = sorted((austria_root / "val" / "input").glob("*.tif"))
    assert src and (out / "sites.csv").is_file()
    for path in src[:3]:
        a, ai = read_raster(path)
        b, bi = read_raster(out / "val" / "input" / path.name)
        assert b.shape == (4, a.shape[1] * 2, a.shape[2] * 2)
        assert bi.crs == ai.crs
        assert bi.transform.a == pytest.approx(ai.transform.a / 2)
        assert (bi.transform.c, bi.transform.f) == (ai.transform.c, ai.transform.f)
        assert (b == NODATA).all(axis=0).sum() == 4 * (a == NODATA).any(axis=0).sum()
        m, _ = read_raster(austria_root / "val" / "labels" / path.name.replace("img", "target"))
        mm, _ = read_raster(out / "val" / "labels" / path.name.replace("img", "target"))
        assert np.array_equal(mm[0, ::2, ::2], m[0])
