"""``pvdetect map`` end to end on a 2-worker cluster: the same plants as ``predict`` per scene,
each once; workers and the whole run killed half-way change nothing."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from shapely.geometry import box

from pvdetect import cli
from pvdetect.inference.options import PredictOptions
from pvdetect.inference.predict import predict_scenes
from pvdetect.mapping.grid import Tile, to_crs
from pvdetect.mapping.pieces import read_pieces
from pvdetect.mapping.run import MapConfig, map_region
from pvdetect.mapping.sources import LocalScenes
from tests.mapping.conftest import TILE_KM, map_args
from tests.mapping.helpers import EXPECTED, PLANTS, SCENES

REPO = Path(__file__).resolve().parents[2]


def _ll(geoms: np.ndarray, epsg: int | str) -> np.ndarray:
    tr = pyproj.Transformer.from_crs(epsg, "EPSG:4326", always_xy=True)
    return np.asarray(to_crs(geoms, tr), dtype=object)


def _painted(name: str) -> shapely.Geometry:
    """The painted box of a plant in EPSG:4326."""
    where, *bounds = PLANTS[name]
    epsg = next(s.epsg for s in SCENES if s.name == where[0])
    return _ll(np.array([box(*bounds)], dtype=object), epsg)[0]


def _iou(a: shapely.Geometry, b: shapely.Geometry) -> float:
    return shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b))


@pytest.fixture(scope="module")
def per_scene(region: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """``predict`` scene by scene: plants (EPSG:4326 geometries, columns) per scene stem."""
    out = tmp_path_factory.mktemp("predict")
    predict_scenes(region["bundle"], region["scenes"], out, PredictOptions(overlay=False))
    result = {}
    for s in SCENES:
        p = read_pieces(out / f"{s.name}_plants.gpkg")
        result[s.name] = {"geoms": _ll(p.geoms, s.epsg), "pieces": p}
    return result


def _match(geoms: np.ndarray, target: shapely.Geometry) -> np.ndarray:
    return np.flatnonzero(shapely.intersects(geoms, target))


def test_same_plants_as_predict_per_scene_each_once(reference: Path, per_scene: dict) -> None:
    plants = read_pieces(reference / "plants.gpkg")
    assert plants.names == [
        "id", "area_m2", "area_ha", "mean_prob", "max_prob", "lon", "lat", "tile", "threshold",
        "model",
    ]  # fmt: skip
    assert set(plants.column("threshold")) == {0.5} and len(set(plants.column("model"))) == 1
    for g, lon, lat in zip(plants.geoms, plants.column("lon"), plants.column("lat"), strict=True):
        c = shapely.centroid(g)  # of the merged plant, not of a piece
        assert abs(c.x - lon) < 1e-5 and abs(c.y - lat) < 1e-5
    assert len(plants) == len(EXPECTED)
    assert list(plants.column("id")) == list(range(1, len(EXPECTED) + 1))
    for name in ("P7", "P8"):  # below the minimum area; hidden under the newer scene B
        assert not _match(plants.geoms, _painted(name)).size, name
    for name in EXPECTED:
        hit = _match(plants.geoms, _painted(name))
        assert hit.size == 1, name  # one polygon, also where two scenes overlap
        i = int(hit[0])
        scene = PLANTS[name][0][0]
        ref = per_scene[scene]
        j = _match(ref["geoms"], _painted(name))
        assert j.size == 1, name
        j = int(j[0])
        geom, want = plants.geoms[i], ref["geoms"][j]
        area, want_area = plants.area_m2()[i], ref["pieces"].area_m2()[j]
        mean, want_mean = plants.column("mean_prob")[i], ref["pieces"].column("mean_prob")[j]
        peak, want_peak = plants.column("max_prob")[i], ref["pieces"].column("max_prob")[j]
        if name == "P4":  # across the zone meridian: zone 23's half warped from B's grid
            assert _iou(geom, want) > 0.95 and area == pytest.approx(want_area, rel=0.03)
            continue
        # pieces from tiles of one zone: the same pixels, so the same polygon and area
        assert _iou(geom, want) > 0.9999, name
        assert area == pytest.approx(want_area, rel=1e-6), name
        # statistics of cut pieces are measured on the uint8 probabilities (steps of 0.004)
        assert abs(mean - want_mean) < 0.003 and abs(peak - want_peak) < 0.003, name
    ps = per_scene
    assert sum(len(v["geoms"]) for v in ps.values()) == len(EXPECTED) + 3  # P3, P6 twice; P8


def test_layers_rasters_summary_quicklook(reference: Path, per_scene: dict) -> None:
    with rasterio.open(reference / "prob.vrt") as ds:
        assert ds.crs.to_epsg() == 4326  # two zones: warped into the output CRS
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.scales[0] == pytest.approx(0.004)
        p4 = _painted("P1").centroid
        row, col = ds.index(p4.x, p4.y)
        value = ds.read(1, window=((row, row + 1), (col, col + 1)))[0, 0]
        assert 0.85 < value * ds.scales[0] <= 1.0
    with rasterio.open(reference / "mask.vrt") as ds:
        assert ds.read(1, window=((row, row + 1), (col, col + 1)))[0, 0] == 1
    for zone in ("22", "23"):
        with rasterio.open(reference / "mosaic" / f"prob_{zone}.vrt") as ds:
            assert ds.crs.to_epsg() == int(f"327{zone}") and ds.res == (10.0, 10.0)
    import pyogrio.raw

    layers = [str(r[0]) for r in pyogrio.list_layers(reference / "plants.gpkg")]
    assert layers == ["plants", "layer_styles"]
    meta, _, _, cols = pyogrio.raw.read(reference / "plants.gpkg", layer="layer_styles")
    style = dict(zip(meta["fields"], cols, strict=True))
    assert list(style["f_table_name"]) == ["plants"] and "<qgis" in style["styleQML"][0]
    for kind in ("prob", "mask"):
        assert (reference / f"{kind}.qml").read_text().startswith("<!DOCTYPE qgis")
    png = (reference / "quicklook.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert 0 < max(w, h) <= 2048
    rows = list(csv.DictReader((reference / "summary.csv").open()))
    tiles = sorted(p.stem for p in (reference / "state" / "tiles").glob("*.json"))
    assert [r["tile"] for r in rows[:-1]] == tiles and rows[-1]["tile"] == "total"
    assert int(rows[-1]["plants"]) == len(EXPECTED)
    flagged = [r for r in rows[:-1] if r["input_check"].startswith("warning: ")]
    assert all(r["input_check"] == "ok" for r in rows[:-1] if r not in flagged)
    assert rows[-1]["input_check"] == (f"{len(flagged)} tiles flagged" if flagged else "ok")
    assert {t[:3] for t in tiles} == {"22S", "23S"}
    assert all(0 <= float(r["valid_share"]) <= 1 for r in rows)
    # P2 lies on the corner of 4 tiles: a piece in each
    p2_tiles = [r for r in rows[:-1] if r["tile"] in
                ("22S_0638_1341", "22S_0639_1341", "22S_0638_1342", "22S_0639_1342")]  # fmt: skip
    assert [int(r["plants"]) for r in p2_tiles] == [1, 1, 1, 1]
    total = float(rows[-1]["hectares"])
    assert total == pytest.approx(sum(float(r["hectares"]) for r in rows[:-1]), rel=1e-6)


def _same_layers(a: Path, b: Path) -> None:
    pa, pb = read_pieces(a / "plants.gpkg"), read_pieces(b / "plants.gpkg")
    assert pa.names == pb.names and len(pa) == len(pb)
    assert all(shapely.equals_exact(pa.geoms, pb.geoms, tolerance=1e-12))
    for ca, cb in zip(pa.columns, pb.columns, strict=True):
        np.testing.assert_array_equal(ca, cb)
    assert (a / "summary.csv").read_text().splitlines()[-1].split(",")[:4] == (
        b / "summary.csv"
    ).read_text().splitlines()[-1].split(",")[:4]


@dataclass(frozen=True)
class CrashingSource:
    """Local scenes whose reading of one tile kills the worker the first time."""

    inner: LocalScenes
    flag: str
    tile_id: str

    def footprint(self):  # noqa: ANN201
        return self.inner.footprint()

    def for_tile(self, tile: Tile):  # noqa: ANN201
        sub = self.inner.for_tile(tile)
        return None if sub is None else CrashingSource(sub, self.flag, self.tile_id)

    def describe(self) -> dict:
        return self.inner.describe()

    def read(self, tile: Tile, work_dir: Path) -> Path:
        if tile.id == self.tile_id and not os.path.exists(self.flag):
            Path(self.flag).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-task
        return self.inner.read(tile, work_dir)


def test_worker_killed_mid_task_changes_nothing(
    region: dict, cluster: str, reference: Path, tmp_path: Path
) -> None:
    from distributed import Client

    flag = tmp_path / "crashed"
    scenes = LocalScenes.from_paths(region["scenes"], ["Red", "Green", "Blue", "NIR"], 4)
    source = CrashingSource(scenes, str(flag), "22S_0639_1341")  # holds a piece of P2
    cfg = MapConfig(bundle=region["bundle"], out=tmp_path / "map", tile_km=float(TILE_KM))
    with Client(cluster) as client:
        result = map_region(cfg, source, client)
        assert flag.is_file()  # a worker really died
        client.wait_for_workers(2, timeout=60)  # the nanny replaced it
    assert result.tiles == len(list((reference / "state" / "tiles").glob("*.json")))
    _same_layers(tmp_path / "map", reference)


def _settle(out: Path, quiet: float = 3.0) -> None:
    """Wait until the tasks the killed driver left on the shared cluster have finished."""
    last, since = None, time.monotonic()
    while time.monotonic() - since < quiet:
        now = (len(list((out / "state" / "tiles").glob("*.json"))),
               len(list((out / "tiles").glob(".*.work-*"))))  # fmt: skip
        if now != last or now[1]:
            last, since = now, time.monotonic()
        time.sleep(0.1)


def test_killed_run_resumes_to_the_same_layers(
    region: dict, cluster: str, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "map"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "pvdetect", *map_args(region, out, "--cluster", cluster)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = out / "state" / "tiles"
    deadline = time.monotonic() + 240
    try:
        while len(list(records.glob("*.json"))) < 5:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no tile finished in time"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL of the driver, as a machine that dies
        proc.wait(timeout=30)
        proc.stderr.close()
    _settle(out)
    total = len(list((reference / "state" / "tiles").glob("*.json")))
    before = {p.stem: p for p in records.glob("*.json")}
    assert 5 <= len(before) < total and not (out / "plants.gpkg").exists()
    stamps = {t: (out / "tiles" / t / f"{t}_prob.tif").stat().st_mtime_ns for t in before}
    # the same command without --resume is refused, with it only the missing tiles run
    assert cli.main(map_args(region, out, "--cluster", cluster)) == 2
    assert "holds a map run" in capsys.readouterr().err
    assert cli.main(map_args(region, out, "--cluster", cluster, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"({len(before)} done before)" in err
    assert len(list(records.glob("*.json"))) == total
    for t, stamp in stamps.items():
        assert (out / "tiles" / t / f"{t}_prob.tif").stat().st_mtime_ns == stamp, t
    _same_layers(out, reference)


def test_refusals_and_overwrite(region: dict, cluster: str, reference: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    # resuming with other arguments
    code = cli.main(
        map_args(region, reference, "--cluster", cluster, "--resume", "--min-area", "5")
    )
    assert code == 2 and "--resume: min_area_m2 differs" in capsys.readouterr().err
    # outputs that no map run wrote are never replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "plants.gpkg").write_text("mine")
    assert cli.main(map_args(region, foreign, "--cluster", cluster, "--overwrite")) == 2
    assert "no map run wrote it" in capsys.readouterr().err
    assert (foreign / "plants.gpkg").read_text() == "mine"
    # --bbox restricts the map; --overwrite replaces only the map's files
    out = tmp_path / "small"
    p1 = _painted("P1").bounds
    bbox = f"{p1[0] - 0.002},{p1[1] - 0.002},{p1[2] + 0.002},{p1[3] + 0.002}"
    assert cli.main(map_args(region, out, "--cluster", cluster, f"--bbox={bbox}")) == 0
    (out / "notes.txt").write_text("keep")
    (out / "tiles" / "stray.txt").write_text("the map's folder: goes")
    assert cli.main(map_args(region, out, "--cluster", cluster, f"--bbox={bbox}",
                             "--overwrite")) == 0  # fmt: skip
    assert (out / "notes.txt").read_text() == "keep" and not (out / "tiles" / "stray.txt").exists()
    plants = read_pieces(out / "plants.gpkg")
    assert len(plants) == 1 and shapely.intersects(plants.geoms[0], _painted("P1"))
    assert len(list((out / "state" / "tiles").glob("*.json"))) < 4
    with rasterio.open(out / "prob.vrt") as ds:  # one zone: the zone's own grid
        assert ds.crs.to_epsg() == 32722


def test_catalog_refusals(region: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bbox = "--bbox=-48.1,-15.6,-48.0,-15.5"
    base = ["map", str(region["bundle"]), "--out", str(tmp_path / "m")]
    cases = [
        ([bbox, "--catalog", "https://example.invalid/stac", "--collection", "S2"],
         "--catalog needs a date window: give --start and --end"),
        (["--catalog", "bdc", "--start", "2023-01-01", "--end", "2023-02-01"],
         "--catalog needs an area: give --bbox or --aoi"),
        ([bbox, "--catalog", "https://example.invalid/stac", "--start", "2023-01-01",
          "--end", "2023-02-01"], "--collection: needed with a catalog URL"),
        ([bbox, "--catalog", "bdc", "--start", "2023-02-30", "--end", "2023-03-01"],
         "--start: expected a date YYYY-MM-DD, got '2023-02-30'"),
        ([bbox, "--catalog", "bdc", "--start", "2023-03-01", "--end", "2023-02-01"],
         "--start: 2023-03-01 is after --end 2023-02-01"),
        ([*(str(p) for p in region["scenes"]), "--start", "2023-01-01"],
         "--start, --end and --collection go with --catalog"),
    ]  # fmt: skip
    for extra, message in cases:
        if extra[0] != bbox and extra[0] != "--catalog":
            extra = ["--scenes", *extra]
        assert cli.main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("pvdetect map: error: " + message), (extra, err)
        assert "\n" not in err
        assert not (tmp_path / "m").exists()


def test_torch_bundle_on_the_workers(region: dict, cluster: str, tmp_path: Path) -> None:
    """A torch bundle (random unet/resnet18) runs on the workers like the ONNX stand-in."""
    import torch

    from pvdetect.model.bundle import BundleMeta, save_bundle
    from pvdetect.model.factory import build_model
    from tests.mapping.helpers import STATS

    torch.manual_seed(0)
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=STATS, tile_size=128,
                      overlap=16, threshold=0.5)  # fmt: skip
    bundle = save_bundle(tmp_path / "bundle", build_model("unet", "resnet18"), meta)
    p1 = _painted("P1").bounds
    bbox = f"--bbox={p1[0] - 0.002},{p1[1] - 0.002},{p1[2] + 0.002},{p1[3] + 0.002}"
    args = map_args(region, tmp_path / "map", "--cluster", cluster, bbox)
    args[1] = str(bundle)
    assert cli.main(args) == 0
    rows = list(csv.DictReader((tmp_path / "map" / "summary.csv").open()))
    assert len(rows) >= 2 and all(float(r["valid_share"]) > 0 for r in rows[:-1])
    plants = read_pieces(tmp_path / "map" / "plants.gpkg")
    assert all(shapely.is_valid(plants.geoms))
    assert int(rows[-1]["plants"]) == len(plants)
    with rasterio.open(tmp_path / "map" / "prob.vrt") as ds:
        prob = ds.read(1)
        assert (prob != 255).any() and prob[prob != 255].max() <= 250


def test_values_unlike_training_warn_once_for_the_run(
    region: dict, cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Scenes unlike the bundle's training data: one warning for the run, each tile flagged."""
    import json
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(region["bundle"], bundle)
    meta = json.loads((bundle / "bundle.json").read_text())
    stats = meta["band_stats"]
    stats["mean"] = [m - 1000.0 for m in stats["mean"]]  # the scenes look 1000 too bright
    (bundle / "bundle.json").write_text(json.dumps(meta))
    args = map_args(region, tmp_path / "map", "--cluster", cluster)
    args[1] = str(bundle)
    capsys.readouterr()
    assert cli.main(args) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, warnings
    rows = list(csv.DictReader((tmp_path / "map" / "summary.csv").open()))
    tiles = rows[:-1]
    assert len(tiles) > 1 and all(r["input_check"].startswith("warning: ") for r in tiles)
    assert warnings[0].startswith(f"warning: {len(tiles)} of {len(tiles)} tiles: tile ")
    assert "unlike the training data" in warnings[0]
    assert rows[-1]["input_check"] == f"{len(tiles)} tiles flagged"
