"""The layers ``predict`` writes, read back as GIS software reads them (GDAL, OGR, SQLite)."""

from __future__ import annotations

import csv
import json
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from pvdetect.cli import main
from pvdetect.data.raster import write_raster
from pvdetect.inference.predict import PredictOptions, predict_scene
from pvdetect.model.bundle import Bundle, BundleMeta, save_bundle
from pvdetect.model.factory import build_model
from tests.fixtures import nir_bundle

UTM = "EPSG:32633"
T = Affine(10, 0, 500010, 0, -10, 5300020)

STATS = {"mean": [1000.0] * 4, "std": [500.0] * 4, "p2": [0.0] * 4, "p98": [3000.0] * 4}
NAME = "S2B_MSIL2A_20230412T100031_T33UXP.tif"


def _nir_bundle() -> Bundle:
    """Pixel-wise model: PV where NIR is above the band mean (1000)."""
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=STATS, tile_size=64, overlap=16)
    return nir_bundle(meta)


def _scene(path: Path, h: int = 600, w: int = 600) -> Path:
    rng = np.random.default_rng(2)
    img = rng.uniform(200, 900, (4, h, w)).astype(np.float32)
    img[3] = 500.0
    img[3, 50:80, 40:70] = 3000.0  # a 9 ha plant
    img[3, 100, 100] = 3000.0  # a one-pixel plant at even coordinates
    img[3, 300:340, 280:330] = 3000.0  # a plant the AOI border crosses
    img[3, 500:520, 500:520] = 3000.0  # a plant outside the AOI
    return write_raster(path, img, crs=UTM, transform=T, nodata=-9999)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("layers")
    scene = _scene(tmp / NAME)
    opts = PredictOptions(tile=64, overlap=16, min_area_m2=0, geojson=True)
    return scene, predict_scene(_nir_bundle(), scene, tmp / "out", opts, model="unet/resnet18 t")


def test_rasters_are_cogs_whose_mask_overviews_keep_every_plant(predicted) -> None:
    _, res = predicted
    for path in (res.prob_path, res.mask_path):
        with rasterio.open(path) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert ds.overviews(1) == [2, 4] and ds.block_shapes[0] == (256, 256)
    with rasterio.open(res.mask_path, overview_level=1) as ov:  # the coarsest: 150 x 150
        coarse = ov.read(1)
    assert coarse.shape == (150, 150)
    assert coarse[25, 25] == 1  # the one-pixel plant at (100, 100)
    assert coarse[12:20, 10:18].all() and coarse[126:130, 126:130].all()
    assert (coarse == 1).sum() == 1 + 8 * 8 + 10 * 13 + 5 * 5  # nothing else


def test_mask_has_a_colour_table_and_both_rasters_a_qgis_style(predicted) -> None:
    _, res = predicted
    with rasterio.open(res.mask_path) as ds:
        assert ds.colorinterp[0] == rasterio.enums.ColorInterp.palette
        assert ds.colormap(1)[1] == (255, 0, 255, 255)
        assert ds.nodata == 255
    prob_qml = ET.parse(res.prob_path.with_suffix(".qml")).getroot()
    r = prob_qml.find("pipe/rasterrenderer")
    assert prob_qml.tag == "qgis" and r.get("type") == "singlebandpseudocolor"
    items = r.findall("rastershader/colorrampshader/item")
    assert [float(i.get("value")) for i in items][0::4] == [0.0, 1.0]
    assert items[0].get("alpha") == "0" and items[-1].get("alpha") == "255"
    mask_qml = ET.parse(res.mask_path.with_suffix(".qml")).getroot()
    entries = {e.get("value"): e for e in mask_qml.iter("paletteEntry")}
    assert mask_qml.find("pipe/rasterrenderer").get("type") == "paletted"
    assert entries["0"].get("alpha") == "0"
    assert entries["1"].get("color") == "#ff00ff" and entries["1"].get("alpha") == "255"


def test_geopackage_holds_its_default_style(predicted) -> None:
    _, res = predicted
    con = sqlite3.connect(res.plants_path)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(layer_styles)")]
        rows = con.execute(
            "SELECT f_table_name, f_geometry_column, styleName, styleQML, useAsDefault "
            "FROM layer_styles"
        ).fetchall()
        geom_col = con.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = 'plants'"
        ).fetchone()[0]
        kind = con.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()[0]
    finally:
        con.close()
    assert cols[1:] == ["f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column",
                        "styleName", "styleQML", "styleSLD", "useAsDefault", "description",
                        "owner", "ui", "update_time"]  # fmt: skip
    assert kind == "attributes"
    assert len(rows) == 1
    table, geom, _, qml, default = rows[0]
    assert (table, geom, default) == ("plants", geom_col, 1)
    root = ET.fromstring(qml.split("\n", 1)[1])  # after the DOCTYPE line
    layer = root.find("renderer-v2/symbols/symbol/layer")
    props = {p.get("k"): p.get("v") for p in layer.findall("prop")}
    assert props["outline_color"].startswith("255,0,255")


def test_plants_know_where_when_and_with_what(predicted) -> None:
    scene, res = predicted
    meta, _, wkb, fields = pyogrio.raw.read(res.plants_path, layer="plants")
    cols = dict(zip(meta["fields"], fields, strict=True))
    assert list(meta["fields"]) == ["id", "area_m2", "area_ha", "mean_prob", "max_prob", "lon",
                                    "lat", "scene", "date", "threshold", "model"]  # fmt: skip
    assert res.plants == 4
    assert set(cols["scene"]) == {NAME} and set(cols["date"]) == {"2023-04-12"}
    assert set(cols["threshold"]) == {0.5} and set(cols["model"]) == {"unet/resnet18 t"}
    for col in ("mean_prob", "max_prob"):
        assert np.array_equal(cols[col], np.round(cols[col], 3))
    geoms = shapely.from_wkb(wkb)
    tr = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(*shapely.get_coordinates(shapely.centroid(geoms)).T)
    np.testing.assert_allclose(cols["lon"], lon, atol=1e-6)
    np.testing.assert_allclose(cols["lat"], lat, atol=1e-6)
    props = json.loads(res.geojson_path.read_text())["features"][0]["properties"]
    assert props["scene"] == NAME and props["date"] == "2023-04-12" and "lon" in props
    style = res.geojson_path.with_suffix(".qml")
    assert ET.fromstring(style.read_text().split("\n", 1)[1]).find("renderer-v2") is not None


def test_overlay_is_georeferenced_on_the_scene(predicted) -> None:
    scene, res = predicted
    assert res.overlay_path.with_suffix(".pgw").is_file()
    assert Path(f"{res.overlay_path}.aux.xml").is_file()
    with rasterio.open(scene) as src, rasterio.open(res.overlay_path) as ov:
        assert ov.crs == src.crs
        assert ov.bounds == pytest.approx(src.bounds)
        assert ov.count == 3


# ------------------------------------------------------------------ summary and AOI


@pytest.fixture(scope="module")
def unet_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4)
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=STATS, tile_size=64, overlap=16)
    return save_bundle(tmp_path_factory.mktemp("b") / "bundle", model, meta)


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def test_summary_keeps_the_rows_of_earlier_runs(tmp_path: Path, unet_bundle: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_raster(tmp_path / f"{name}.tif", rng.uniform(0, 3000, (4, 40, 50)).astype(np.float32),
                     crs=UTM, transform=T)  # fmt: skip
    out = tmp_path / "out"
    base = ["predict", str(unet_bundle), "--out", str(out), "--device", "cpu", "--no-overlay"]
    assert main([*base[:2], str(tmp_path / "a.tif"), *base[2:]]) == 0
    first = _rows(out)
    with (out / "summary.csv").open("w", newline="") as f:  # a column added by hand stays
        w = csv.DictWriter(f, fieldnames=[*first[0], "note"])
        w.writeheader()
        w.writerow({**first[0], "note": "checked"})
    assert main([*base[:2], str(tmp_path / "b.tif"), *base[2:]]) == 0
    rows = _rows(out)
    assert [r["scene"] for r in rows] == ["a.tif", "b.tif"]
    assert rows[0] == {**first[0], "note": "checked"} and rows[1]["note"] == ""
    assert rows[1]["input_check"] == "ok" and rows[1]["model"].startswith("unet/resnet18 ")
    # a scene predicted again replaces its row, in place
    assert main([*base[:2], str(tmp_path / "a.tif"), "--threshold", "0.9", *base[2:]]) == 0
    rows = _rows(out)
    assert [r["scene"] for r in rows] == ["a.tif", "b.tif"] and rows[0]["threshold"] == "0.9"
    log = (out / "pvdetect.log").read_text()
    assert log.count("pvdetect predict") == 3  # appended by every run, with time stamps
    assert log[:4].isdigit()


def test_aoi_clips_rasters_and_plants(tmp_path: Path) -> None:
    """An AOI in longitude/latitude: pixels outside are nodata, plants dropped or cut."""
    scene = _scene(tmp_path / "s.tif")
    to_ll = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    # scene columns 0..300 and rows 0..400 (x = 500010 + 10 col, y = 5300020 - 10 row)
    corners = [(500010, 5300020), (503010, 5300020), (503010, 5296020), (500010, 5296020)]
    ring = [list(to_ll.transform(x, y)) for x, y in corners]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}}]}))  # fmt: skip
    bundle = _nir_bundle()
    full = predict_scene(bundle, scene, tmp_path / "full", PredictOptions(min_area_m2=0))
    opts = PredictOptions(min_area_m2=0, aoi=aoi)
    clipped = predict_scene(bundle, scene, tmp_path / "aoi", opts)
    with rasterio.open(full.prob_path) as a, rasterio.open(clipped.prob_path) as b:
        pa, pb = a.read(1), b.read(1)
    inside = np.zeros(pa.shape, bool)
    inside[:400, :300] = True
    edge = np.zeros(pa.shape, bool)  # pixels the reprojected border may cut
    edge[395:405, :] = edge[:, 295:305] = True
    assert (pb[~inside & ~edge] == -9999.0).all()
    np.testing.assert_array_equal(pb[inside & ~edge], pa[inside & ~edge])
    _, _, wkb, fields = pyogrio.raw.read(clipped.plants_path, layer="plants")
    geoms = shapely.from_wkb(wkb)
    assert clipped.plants == 3  # the plant at rows 500..520 is gone
    xmax = max(g.bounds[2] for g in geoms)
    assert xmax == pytest.approx(503010, abs=1.0)  # the crossing plant is cut at the border
    assert sorted(fields[1])[-2] == pytest.approx(20 * 40 * 100 / 0.9996**2, rel=0.01)
    from pvdetect.inference.tiling import plan_scene

    plan = plan_scene(bundle, scene, opts)
    assert 0 < plan.n_active < plan.n_tiles  # tiles outside are never predicted
