"""Tests of pvdetect.inference.predict and tiling: blending, outputs on the input grid, bad
input, CLI."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.shutil
import torch
from affine import Affine
from PIL import Image
from torch import nn

from pvdetect.cli import main
from pvdetect.errors import ConfigError
from pvdetect.inference.predict import PredictOptions, predict_scene
from pvdetect.inference.tiling import (
    MASK_NODATA,
    PROB_NODATA,
    blend_window,
    default_batch_size,
    plan_scene,
    tile_starts,
)
from pvdetect.model.bundle import Bundle, BundleMeta, UpscaleMeta, load_bundle, save_bundle
from pvdetect.model.factory import build_model
from tests.fixtures import nir_bundle, write_random_scene, write_scene

UTM = "EPSG:32633"
T_UTM = Affine(10, 0, 500010, 0, -10, 5300020)
STATS = {"mean": [1000.0] * 4, "std": [500.0] * 4, "p2": [0.0] * 4, "p98": [3000.0] * 4}
UTM_SCALE = 0.9996


def _meta(**kw) -> BundleMeta:
    base = dict(arch="unet", encoder="resnet18", band_stats=STATS, tile_size=64, overlap=16)
    base.update(kw)
    return BundleMeta(**base)


def _local_bundle(factor: int = 1) -> Bundle:
    """A small-receptive-field CNN: tiled and whole-scene predictions must agree."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1))
    meta = _meta(upscale=UpscaleMeta(factor=factor, method="bicubic"))
    return Bundle(meta, net).to("cpu")


def _nir_bundle() -> Bundle:
    """Pixel-wise model: PV where NIR is above the band mean (1000)."""
    return nir_bundle(_meta())


@pytest.fixture(scope="module")
def unet_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4)
    return save_bundle(tmp_path_factory.mktemp("b") / "bundle", model, _meta())


#: scenes (nodata -9999) on the 10 m UTM 33N grid of these tests, near 15.07 E, 47.85 N
utm_scene = functools.partial(write_scene, transform=T_UTM)
#: uniform reflectance in [0, 3000) on that grid: ``random_scene(path, h, w, seed=, bands=)``
random_scene = functools.partial(write_random_scene, transform=T_UTM)


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(1), dict(
            crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height, nodata=ds.nodata
        )


QUIET = dict(overlay=False, min_area_m2=0.0)


def test_tile_starts_cover_and_end_flush() -> None:
    assert tile_starts(40, 64, 48) == [0]
    assert tile_starts(64, 64, 48) == [0]
    s = tile_starts(150, 64, 48)
    assert s == [0, 43, 86]
    assert tile_starts(160, 64, 48) == [0, 48, 96]
    assert s[-1] + 64 == 150


def test_blend_window_positive_and_peaked() -> None:
    w = blend_window(64)
    assert w.shape == (64, 64)
    assert w.min() > 0
    assert w[0, 0] == pytest.approx(w.min())
    assert w[32, 32] == pytest.approx(w.max(), rel=1e-3)


def test_tiled_matches_whole_scene_away_from_border(tmp_path: Path) -> None:
    bundle = _local_bundle()
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 3000, (4, 150, 130)).astype(np.float32)
    scene = utm_scene(tmp_path / "s.tif", img)
    opts = PredictOptions(tile=64, overlap=32, **QUIET)
    res = predict_scene(bundle, scene, tmp_path / "out", opts)
    assert res.tiles == 16
    tiled, _ = _read(res.prob_path)
    whole = bundle.predict_probs(torch.from_numpy(img)[None], torch.ones(1, 150, 130, dtype=bool))
    whole = whole[0].numpy()
    m = 3  # the model sees 2 px around a pixel; scene borders are padded differently
    diff = np.abs(tiled[m:-m, m:-m] - whole[m:-m, m:-m])
    assert diff.max() < 0.01  # bf16 autocast noise only
    assert diff.mean() < 1e-3


def test_no_overlap_shows_tile_seams(tmp_path: Path) -> None:
    """Control: with touching tiles (128 = 2 x 64, overlap 0) seams differ from the whole scene."""
    bundle = _local_bundle()
    img = np.random.default_rng(1).uniform(0, 3000, (4, 128, 128)).astype(np.float32)
    scene = utm_scene(tmp_path / "s.tif", img)
    whole = bundle.predict_probs(torch.from_numpy(img)[None], torch.ones(1, 128, 128, dtype=bool))
    seams = predict_scene(
        bundle, scene, tmp_path / "a", PredictOptions(tile=64, overlap=0, **QUIET)
    )
    blended = predict_scene(
        bundle, scene, tmp_path / "b", PredictOptions(tile=64, overlap=16, **QUIET)
    )
    assert (seams.tiles, blended.tiles) == (4, 9)
    d_seams = np.abs(_read(seams.prob_path)[0] - whole[0].numpy())[3:-3, 3:-3]
    d_blend = np.abs(_read(blended.prob_path)[0] - whole[0].numpy())[3:-3, 3:-3]
    assert d_seams.max() > 0.05
    assert d_blend.max() < 0.01


def _plants_image(h: int = 200, w: int = 180) -> np.ndarray:
    """Three bright-NIR plants (PV for the NIR bundle) on a dark-NIR background."""
    rng = np.random.default_rng(2)
    img = rng.uniform(200, 900, (4, h, w)).astype(np.float32)
    img[3] = 500.0
    img[3, 50:80, 40:70] = 3000.0  # 30 x 30 px = 9 ha, crosses tile borders (stride 48)
    img[3, 150:155, 150:155] = 3000.0  # 5 x 5 px = 0.25 ha
    img[3, 20:22, 150:152] = 3000.0  # 2 x 2 px = 400 m2
    return img


def test_plant_across_tile_borders_is_one_polygon(tmp_path: Path) -> None:
    scene = utm_scene(tmp_path / "p.tif", _plants_image())
    opts = PredictOptions(tile=64, overlap=16, overlay=False, min_area_m2=1000, geojson=True)
    res = predict_scene(_nir_bundle(), scene, tmp_path / "out", opts)
    assert res.plants == 2
    mask, _ = _read(res.mask_path)
    expected = np.zeros_like(mask)
    expected[50:80, 40:70] = 1
    expected[150:155, 150:155] = 1
    expected[20:22, 150:152] = 1
    np.testing.assert_array_equal(mask, expected)
    _, _, geoms, fields = pyogrio.raw.read(res.plants_path, layer="plants")
    areas = sorted(fields[1])
    assert areas[0] == pytest.approx(2500 / UTM_SCALE**2, rel=1e-3)
    assert areas[1] == pytest.approx(90000 / UTM_SCALE**2, rel=1e-3)
    assert res.total_ha == pytest.approx(9.25 / UTM_SCALE**2, rel=1e-3)
    assert all(f > 0.99 for f in fields[3])  # mean_prob
    # GeoJSON: the same plants in longitude/latitude
    doc = json.loads(res.geojson_path.read_text())
    assert len(doc["features"]) == 2
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert 15.0 < lon < 15.1 and 47.8 < lat < 47.9
    # min-area filter
    res2 = predict_scene(
        _nir_bundle(), scene, tmp_path / "out2", PredictOptions(overlay=False, min_area_m2=5000)
    )
    assert res2.plants == 1


def test_nodata_stays_nodata(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 3000, (4, 90, 70)).astype(np.float32)
    img[:, 10:30, 5:25] = -9999.0  # nodata block
    img[2, 50, 50] = -9999.0  # nodata in one band only
    img[0, 60, 10] = np.nan
    invalid = np.zeros((90, 70), bool)
    invalid[10:30, 5:25] = True
    invalid[50, 50] = invalid[60, 10] = True
    scene = utm_scene(tmp_path / "n.tif", img)
    res = predict_scene(_local_bundle(), scene, tmp_path / "out", PredictOptions(**QUIET))
    prob, pinfo = _read(res.prob_path)
    mask, minfo = _read(res.mask_path)
    assert pinfo["nodata"] == PROB_NODATA and minfo["nodata"] == MASK_NODATA
    np.testing.assert_array_equal(prob == PROB_NODATA, invalid)
    np.testing.assert_array_equal(mask == MASK_NODATA, invalid)
    assert ((prob[~invalid] >= 0) & (prob[~invalid] <= 1)).all()
    assert set(np.unique(mask[~invalid])) <= {0, 1}


def _halves(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0] // 2, 2, -1, 2).mean(axis=(1, 3))


def _max_halves(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0] // 2, 2, -1, 2).max(axis=(1, 3))


@pytest.mark.parametrize("hw", [(20, 33), (41, 97), (64, 64), (130, 40), (300, 520)])
def test_outputs_on_exact_input_grid(
    tmp_path: Path, unet_bundle: Path, hw: tuple[int, int]
) -> None:
    h, w = hw
    t = Affine(10, 0, 612345.0, 0, -10, 5123455.0)
    scene = write_random_scene(tmp_path / "g.tif", h, w, seed=4, transform=t)
    res = predict_scene(load_bundle(unet_bundle), scene, tmp_path / "out", PredictOptions())
    for path in (res.prob_path, res.mask_path):
        arr, info = _read(path)
        assert arr.shape == (h, w)
        assert (info["width"], info["height"]) == (w, h)
        assert info["transform"] == t
        assert info["crs"] == rasterio.crs.CRS.from_user_input(UTM)
        with rasterio.open(path) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert ds.overviews(1) == ([2, 4] if w > 256 else [])
            if w > 256:  # overviews built while predicting: 2x2 means (prob), maxima (mask)
                half = ds.read(1, out_shape=(h // 2, w // 2))
                if path == res.prob_path:
                    np.testing.assert_allclose(half, _halves(arr), atol=1e-6)
                else:
                    np.testing.assert_array_equal(half, _max_halves(arr))
    with Image.open(res.overlay_path) as overlay:  # the whole scene, below the 2048 px cap
        assert overlay.size == (w, h) and overlay.mode == "RGB"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["g_prob.tif", "g_prob.qml", "g_mask.tif", "g_mask.qml", "g_plants.gpkg",
         "g_overlay.png", "g_overlay.pgw", "g_overlay.png.aux.xml"]
    )  # fmt: skip


def test_upscaled_output_grid(tmp_path: Path) -> None:
    scene = random_scene(tmp_path / "u.tif", 50, 70)
    bundle = _local_bundle(factor=2)
    native = predict_scene(bundle, scene, tmp_path / "a", PredictOptions(**QUIET))
    up = predict_scene(bundle, scene, tmp_path / "b", PredictOptions(upscaled_output=True, **QUIET))
    _, ninfo = _read(native.prob_path)
    uarr, uinfo = _read(up.prob_path)
    assert (ninfo["width"], ninfo["height"], ninfo["transform"]) == (70, 50, T_UTM)
    assert (uinfo["width"], uinfo["height"]) == (140, 100)
    assert uinfo["transform"] == T_UTM @ Affine.scale(0.5)
    assert (uarr >= 0).all()


def test_tta_of_pixelwise_model_changes_nothing(tmp_path: Path) -> None:
    scene = utm_scene(tmp_path / "p.tif", _plants_image(70, 90))
    a = predict_scene(_nir_bundle(), scene, tmp_path / "a", PredictOptions(**QUIET))
    b = predict_scene(_nir_bundle(), scene, tmp_path / "b", PredictOptions(tta=True, **QUIET))
    np.testing.assert_allclose(_read(a.prob_path)[0], _read(b.prob_path)[0], atol=1e-3)


def test_bad_tile_options(tmp_path: Path) -> None:
    scene = random_scene(tmp_path / "s.tif", 40, 40)
    bundle = _local_bundle()
    with pytest.raises(ConfigError, match="multiple of 32"):
        plan_scene(bundle, scene, PredictOptions(tile=50))
    with pytest.raises(ConfigError, match="overlap"):
        plan_scene(bundle, scene, PredictOptions(tile=64, overlap=64))


def test_accumulator_covers_one_tile_row(tmp_path: Path) -> None:
    """Memory bound: blending state is tile x width, whatever the scene height."""
    from pvdetect.inference.tiling import Blender

    scene = random_scene(tmp_path / "tall.tif", 400, 70)
    plan = plan_scene(_local_bundle(), scene, PredictOptions(tile=64, overlap=16))
    blender = Blender(plan, torch.device("cpu"))
    assert tuple(blender.acc.shape) == (2, 64, 70)  # weighted sums and weights
    assert tuple(blender._spare.shape) == (2, 64, 70)


def test_failing_writes_are_output_errors(tmp_path: Path) -> None:
    """A write that fails mid-scene (disk full) is a one-line OutputError, not a traceback."""
    import rasterio.errors

    from pvdetect.errors import OutputError
    from pvdetect.inference.cog import Pyramid
    from pvdetect.inference.tiling import run_tiles

    class Full:
        name = str(tmp_path / "work" / "prob.tif")

        def write(self, *args: object, **kwargs: object) -> None:
            raise rasterio.errors.RasterioIOError("No space left on device")

        def close(self) -> None:
            pass

    scene = random_scene(tmp_path / "s.tif", 70, 50)
    bundle = _local_bundle()
    plan = plan_scene(bundle, scene, PredictOptions(tile=32, overlap=8))
    with pytest.raises(OutputError, match="work: cannot write output .*No space left"):
        run_tiles(bundle, plan, Full(), Full(), 0.5, 4)

    prof = rasterio.profiles.DefaultGTiffProfile(
        width=600, height=600, count=1, dtype="float32", nodata=-9999.0, transform=T_UTM
    )
    with Pyramid(tmp_path, "p", dict(prof), "average") as pyr:
        pyr.levels[0].ds.close()
        pyr.levels[0].ds = Full()
        with pytest.raises(OutputError, match="cannot write output"):
            pyr.add_rows(0, np.zeros((10, 600), np.float32))


# ------------------------------------------------------------------ command line


def test_cli_folder_summary_and_geojson(tmp_path: Path, unet_bundle: Path, capsys) -> None:
    src = tmp_path / "scenes"
    src.mkdir()
    random_scene(src / "a.tif", 60, 80, seed=1)
    random_scene(src / "b.tif", 45, 33, seed=2)
    random_scene(src / "a_mask.tif", 60, 80)  # must be skipped
    out = tmp_path / "out"
    rc = main(["predict", str(unet_bundle), str(src), "--out", str(out), "--geojson",
               "--min-area", "0", "--batch-size", "3", "--device", "cpu"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    for stem in ("a", "b"):
        for suffix in ("_prob.tif", "_mask.tif", "_plants.gpkg", "_plants.geojson", "_overlay.png"):
            assert stem + suffix in names
    assert "a_mask_prob.tif" not in names
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["scene"] for r in rows] == ["a.tif", "b.tif"]
    assert [(int(r["width"]), int(r["height"])) for r in rows] == [(80, 60), (33, 45)]
    for r, stem in zip(rows, ("a", "b"), strict=True):
        plants = pyogrio.read_info(out / f"{stem}_plants.gpkg", layer="plants")["features"]
        assert int(r["plants"]) == plants
        assert float(r["seconds"]) > 0
        _, _, _, fields = pyogrio.raw.read(out / f"{stem}_plants.gpkg", columns=["area_ha"])
        assert float(r["total_ha"]) == pytest.approx(float(np.sum(fields[0])), abs=1e-4)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _bad_case(kind: str, tmp: Path, bundle: Path) -> tuple[list[str], Path, str]:
    out = tmp / "out"
    scene = tmp / "s.tif"
    if kind == "bands":
        random_scene(scene, 40, 40, bands=3)
        return [str(bundle), str(scene)], out, "3 bands"
    if kind == "nocrs":
        write_scene(scene, np.ones((4, 40, 40), np.float32), crs=None, transform=Affine.identity())
        return [str(bundle), str(scene)], out, "no CRS"
    if kind == "unreadable":
        scene.write_text("not a tiff")
        return [str(bundle), str(scene)], out, "not a readable raster"
    if kind == "outdir":
        random_scene(scene, 40, 40)
        (tmp / "file").write_text("x")
        return [str(bundle), str(scene)], tmp / "file" / "out", "file"
    assert kind == "bundle"
    random_scene(scene, 40, 40)
    return [str(tmp / "missing_bundle"), str(scene)], out, "bundle not found"


@pytest.mark.parametrize("kind", ["bands", "nocrs", "unreadable", "outdir", "bundle"])
def test_cli_bad_input(tmp_path: Path, unet_bundle: Path, kind: str, capsys) -> None:
    args, out, needle = _bad_case(kind, tmp_path, unet_bundle)
    rc = main(["predict", *args, "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("pvdetect predict: error:")
    assert needle in err
    assert not out.exists() or not any(out.iterdir())


def test_failed_scene_leaves_no_files(tmp_path: Path, unet_bundle: Path, capsys) -> None:
    good = random_scene(tmp_path / "good.tif", 40, 40)
    big = random_scene(tmp_path / "big.tif", 256, 256)
    broken = tmp_path / "broken.tif"
    rasterio.shutil.copy(str(big), str(broken), driver="COG", compress="DEFLATE", blocksize=64)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # header intact, pixels truncated
    out = tmp_path / "out"
    rc = main(["predict", str(unet_bundle), str(good), str(broken), "--out", str(out),
               "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2
    *progress, error = err.splitlines()  # a line per finished scene, then the error
    assert progress == [p for p in progress if p.startswith("good.tif: 40x40 px")]
    assert error.startswith("pvdetect predict: error:") and "broken.tif" in error
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["good_prob.tif", "good_prob.qml", "good_mask.tif", "good_mask.qml", "good_plants.gpkg",
         "good_overlay.png", "good_overlay.pgw", "good_overlay.png.aux.xml", "summary.csv",
         "pvdetect.log"]
    )  # fmt: skip
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["scene"] for r in rows] == ["good.tif"]


def test_default_batch_size_follows_the_device() -> None:
    assert default_batch_size("cpu") == 4  # fastest per tile on CPUs, and the least memory
    assert default_batch_size(torch.device("cuda", 0)) == 16
    assert PredictOptions().batch_size is None
