"""``pvdetect predict`` on real Sentinel-2 conventions: band selection, offsets, input check."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from pvdetect.cli import main
from pvdetect.data.raster import write_raster
from pvdetect.model.bundle import BundleMeta, save_bundle
from pvdetect.model.factory import build_model

T = Affine(10, 0, 500010, 0, -10, 5300020)
LOW = np.array([100, 300, 80, 1200])[:, None, None]
HIGH = np.array([1800, 1500, 1200, 4500])[:, None, None]
S2 = ["B04", "B03", "B02", "B08"]


def _dn(h: int = 90, w: int = 100, seed: int = 0) -> np.ndarray:
    """uint16 digital numbers of R, G, B, NIR as a pre-2022 L2A product stores them."""
    rng = np.random.default_rng(seed)
    return rng.uniform(LOW, HIGH, (4, h, w)).round().astype(np.uint16)


def _stats() -> dict[str, list[float]]:
    x = _dn(200, 200, seed=9).reshape(4, -1).astype(np.float64)
    p2, p98 = np.percentile(x, [2, 98], axis=1)
    return {"mean": x.mean(1).tolist(), "std": x.std(1).tolist(), "p2": p2.tolist(),
            "p98": p98.tolist()}  # fmt: skip


def _write(path: Path, arr: np.ndarray, descriptions=None, tags=None) -> Path:
    write_raster(path, arr, crs="EPSG:32633", transform=T, nodata=0)
    with rasterio.open(path, "r+") as ds:
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
        if tags:
            ds.update_tags(**tags)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A U-Net with random weights: every band and its value matter to its output."""
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4)
    meta = BundleMeta(
        arch="unet", encoder="resnet18", band_stats=_stats(), tile_size=64, overlap=16, nodata=0
    )
    return save_bundle(tmp_path_factory.mktemp("b") / "bundle", model, meta)


def _predict(bundle: Path, scene: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(bundle), str(scene), "--out", str(out), "--device", "cpu",
                 "--min-area", "0", "--no-overlay", *extra])  # fmt: skip


def _prob(out: Path, stem: str) -> np.ndarray:
    with rasterio.open(out / f"{stem}_prob.tif") as ds:
        return ds.read(1)


def _input_check(out: Path) -> dict[str, str]:
    with (out / "summary.csv").open() as f:
        return {r["scene"]: r["input_check"] for r in csv.DictReader(f)}


def test_post_2022_scene_with_offset_metadata_gives_the_same(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture
) -> None:
    dn = _dn()
    old = _write(tmp_path / "old.tif", dn, S2)
    tags = {f"BOA_ADD_OFFSET_B{b}": "-1000" for b in (1, 2, 3, 4, 5, 6, 7, 8, 11, 12)}
    new = _write(tmp_path / "new.tif", dn + 1000, S2, {**tags, "BOA_QUANTIFICATION_VALUE": "10000"})
    assert _predict(bundle, old, tmp_path / "a") == 0
    assert _predict(bundle, new, tmp_path / "b") == 0
    err = capsys.readouterr().err
    assert "warning" not in err
    assert "new.tif: values x1 -1000 (BOA_ADD_OFFSET metadata)" in err
    np.testing.assert_array_equal(_prob(tmp_path / "a", "old"), _prob(tmp_path / "b", "new"))
    assert _input_check(tmp_path / "b") == {"new.tif": "ok"}
    # the same with --offset on a product that lost its metadata
    bare = _write(tmp_path / "bare.tif", dn + 1000, S2)
    assert _predict(bundle, bare, tmp_path / "c", "--offset", "-1000") == 0
    np.testing.assert_array_equal(_prob(tmp_path / "a", "old"), _prob(tmp_path / "c", "bare"))


def test_shifted_scene_warns_and_strict_refuses(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture
) -> None:
    shifted = _write(tmp_path / "shifted.tif", _dn() + 1000, S2)
    out = tmp_path / "out"
    assert _predict(bundle, shifted, out) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1
    assert "shifted.tif" in warnings[0] and "Red, Green, Blue" in warnings[0]
    assert "offset of about +1000" in warnings[0]
    assert _input_check(out)["shifted.tif"].startswith("warning: an offset of about +1000")
    assert "offset of about +1000" in (out / "pvdetect.log").read_text()

    strict = tmp_path / "strict"
    assert _predict(bundle, shifted, strict, "--strict") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("pvdetect predict: error:") and "shifted.tif" in err
    assert "offset of about +1000" in err and "--strict" in err
    assert not strict.exists()  # nothing written


def test_band_selection_on_a_six_band_file(tmp_path: Path, bundle: Path) -> None:
    """By descriptions alone, by names and by indices: the same as the 4-band file."""
    dn = _dn()
    four = _write(tmp_path / "four.tif", dn)  # no names: R, G, B, NIR in order
    extra = _dn(seed=5)[:2]
    six = np.stack([dn[3], extra[0], dn[2], dn[1], extra[1], dn[0]])  # B08 B11 B02 B03 B05 B04
    named = _write(tmp_path / "named.tif", six, ["B08", "B11", "B02", "B03", "B05", "B04"])
    unnamed = _write(tmp_path / "unnamed.tif", six)
    assert _predict(bundle, four, tmp_path / "ref") == 0
    ref = _prob(tmp_path / "ref", "four")
    assert _predict(bundle, named, tmp_path / "names") == 0
    assert _predict(bundle, named, tmp_path / "byname", "--bands", "B04,B03,B02,B08") == 0
    assert _predict(bundle, unnamed, tmp_path / "index", "--bands", "6,4,3,1") == 0
    for out, stem in (("names", "named"), ("byname", "named"), ("index", "unnamed")):
        np.testing.assert_array_equal(_prob(tmp_path / out, stem), ref)
    # control: another order gives other probabilities
    assert _predict(bundle, unnamed, tmp_path / "wrong", "--bands", "1,4,3,6") == 0
    assert np.abs(_prob(tmp_path / "wrong", "unnamed") - ref).max() > 0.01


def test_bad_band_options_are_one_line_errors(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture
) -> None:
    six = _write(tmp_path / "six.tif", np.concatenate([_dn(), _dn()[:2]]))
    for args, needle in (
        ([], "six.tif: has 6 bands"),
        (["--bands", "1,2,3"], "gives 3 bands"),
        (["--bands", "1,2,3,9"], "band 9 does not exist"),
        (["--offset", "abc"], "--offset abc"),
    ):
        assert _predict(bundle, six, tmp_path / "out", *args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()
