"""bundle.json validation: broken metadata is a one-line error naming the field, exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from pvdetect.cli import main
from pvdetect.errors import BundleError
from pvdetect.model.bundle import BundleMeta, UpscaleMeta, read_meta, save_bundle
from pvdetect.model.bundle_meta import FORMAT_VERSION, parse_meta
from pvdetect.model.factory import build_model

STATS = {
    "mean": [800.0, 700.0, 600.0, 2500.0],
    "std": [300.0, 250.0, 200.0, 900.0],
    "p2": [200.0, 200.0, 150.0, 800.0],
    "p98": [1800.0, 1500.0, 1300.0, 4500.0],
}

#: bundle.json exactly as pvdetect wrote it before the metadata became pydantic models
OLD_JSON = {
    "arch": "unet",
    "encoder": "resnet18",
    "band_stats": STATS,
    "in_channels": 4,
    "band_order": ["Red", "Green", "Blue", "NIR"],
    "input_scale": 1.0,
    "nodata": -9999.0,
    "threshold": 0.37,
    "threshold_metric": "f1",
    "upscale": {"factor": 1, "method": "bicubic", "sr_weights": None},
    "tile_size": 64,
    "overlap": 16,
    "data_fingerprint": "abc123",
    "val_metrics": {"iou": 0.5, "f1": 0.66, "loss": None, "checkpoint": "best.ckpt"},
    "created": "2026-01-01T00:00:00+00:00",
    "pvdetect_version": "0.1.0",
    "format_version": 1,
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle written by save_bundle from a tiny untrained model."""
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4, weights=None)
    meta = BundleMeta(
        arch="unet", encoder="resnet18", band_stats=STATS, threshold=0.5, tile_size=64, overlap=16
    )
    return save_bundle(tmp_path_factory.mktemp("meta") / "bundle", model, meta)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-band 64 x 64 reflectance GeoTIFF in UTM."""
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    rng = np.random.default_rng(0)
    profile = dict(
        driver="GTiff", width=64, height=64, count=4, dtype="float32", crs="EPSG:32633",
        transform=Affine(10, 0, 500000, 0, -10, 5300000), nodata=-9999.0,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(rng.uniform(0, 3000, (4, 64, 64)).astype(np.float32))
    return path


def _rewrite(bundle: Path, tmp_path: Path, edit: Any) -> Path:
    """Copy of ``bundle`` whose bundle.json is ``edit(data)`` (or ``edit`` itself, raw text)."""
    dst = tmp_path / "broken"
    dst.mkdir()
    (dst / "model.safetensors").write_bytes((bundle / "model.safetensors").read_bytes())
    data = json.loads((bundle / "bundle.json").read_text())
    text = edit if isinstance(edit, str) else json.dumps(edit(data))
    (dst / "bundle.json").write_text(text)
    return dst


def _set(path: str, value: Any):
    """Editor setting the dotted key ``path`` (``None`` value allowed)."""

    def edit(data: dict) -> dict:
        node = data
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
        return data

    return edit


def _drop(path: str):
    def edit(data: dict) -> dict:
        node = data
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        del node[last]
        return data

    return edit


def _predict(bundle: Path, scene: Path, out: Path, capsys) -> tuple[int, str]:
    code = main(["predict", str(bundle), str(scene), "--out", str(out), "--no-overlay"])
    return code, capsys.readouterr().err.strip()


def test_the_intact_bundle_predicts(bundle: Path, scene: Path, tmp_path: Path, capsys) -> None:
    code, err = _predict(bundle, scene, tmp_path / "out", capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "summary.csv").is_file()


BROKEN = [
    (_set("format_version", "1"), "format_version", "integer"),
    (_set("format_version", True), "format_version", "integer"),
    (_set("format_version", 0), "format_version", "must be 1"),
    (_set("band_stats", None), "band_stats", "mapping"),
    (lambda d: [d], "bundle.json", "JSON object"),
    (_set("band_order", None), "band_order", "list"),
    (_set("band_order", ["Red", "Green", "Blue"]), "band_order", "4"),
    (_set("band_order", ["Red", "", "Blue", "NIR"]), "band_order[1]", "empty"),
    (_set("threshold", "high"), "threshold", "number"),
    (_set("threshold", 2.0), "threshold", "must be in [0, 1], got 2.0"),
    (_set("threshold", float("nan")), "threshold", "finite"),
    (_set("tile_size", "big"), "tile_size", "integer"),
    (_set("tile_size", 64.0), "tile_size", "integer"),
    (_set("tile_size", 0), "tile_size", ">= 1"),
    (_set("overlap", 64), "overlap", "smaller than tile_size"),
    (_set("overlap", -1), "overlap", ">= 0"),
    (_set("upscale.factor", 3), "upscale.factor", "1, 2 or 4"),
    (_set("upscale.method", "lanczos"), "upscale.method", "bicubic or sr"),
    (_set("upscale", None), "upscale", "mapping"),
    (_set("in_channels", 0), "in_channels", ">= 1"),
    (_set("band_stats.std", [0.0, 0.0, 0.0, 0.0]), "band_stats.std", "> 0"),
    (_set("band_stats.std", [1.0, 1.0, 1.0]), "band_stats.std", "4"),
    (_set("band_stats.mean", [1.0, "x", 1.0, 1.0]), "band_stats.mean[1]", "number"),
    (_drop("band_stats.std"), "band_stats.std", "missing"),
    (_set("band_stats.p2", [0.0]), "band_stats.p2", "4"),
    (_set("nodata", None), "nodata", "number"),
    (_set("nodata", float("inf")), "nodata", "finite"),
    (_drop("arch"), "arch", "missing"),
    (_set("arch", 5), "arch", "string"),
    ('{"arch": "unet",', "bundle.json", "invalid JSON"),
]


@pytest.mark.parametrize(("edit", "field", "problem"), BROKEN)
def test_broken_bundle_json_is_a_one_line_error(
    bundle: Path, scene: Path, tmp_path: Path, capsys, edit: Any, field: str, problem: str
) -> None:
    broken = _rewrite(bundle, tmp_path, edit)
    out = tmp_path / "out"
    code, err = _predict(broken, scene, out, capsys)
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err
    prefix = f"pvdetect predict: error: {broken}: bundle.json: "
    assert err.startswith(prefix), err
    rest = err[len(prefix) :]
    if field != "bundle.json":
        assert rest.startswith(f"{field}: "), err
    assert problem in rest, err
    assert not out.exists()


def test_newer_format_asks_for_an_upgrade(bundle: Path, scene: Path, tmp_path: Path, capsys):
    broken = _rewrite(bundle, tmp_path, _set("format_version", FORMAT_VERSION + 1))
    code, err = _predict(broken, scene, tmp_path / "out", capsys)
    assert code == 2 and "\n" not in err
    assert "newer than this pvdetect supports" in err and "upgrade pvdetect" in err
    assert not (tmp_path / "out").exists()


def test_a_bundle_written_before_pydantic_loads_and_writes_the_same_json(tmp_path: Path) -> None:
    d = tmp_path / "old"
    d.mkdir()
    (d / "bundle.json").write_text(json.dumps({**OLD_JSON, "from_a_newer_version": [1, 2]}))
    meta = read_meta(d)
    assert meta.threshold == 0.37 and meta.upscale.factor == 1 and meta.tile_size == 64
    assert meta.to_dict() == OLD_JSON  # unknown keys are dropped, nothing else changes
    assert BundleMeta.from_dict(meta.to_dict()) == meta
    assert list(meta.to_dict()) == list(OLD_JSON)  # same key order on disk


def test_save_bundle_writes_the_documented_json(bundle: Path) -> None:
    data = json.loads((bundle / "bundle.json").read_text())
    assert list(data) == list(OLD_JSON)
    assert data["upscale"] == {"factor": 1, "method": "bicubic", "sr_weights": None}
    assert data["band_stats"] == STATS and data["format_version"] == FORMAT_VERSION


def test_optional_percentiles_and_integer_numbers_are_accepted() -> None:
    data = {**OLD_JSON, "band_stats": {"mean": [800, 700, 600, 2500], "std": [3, 2, 2, 9]}}
    data["threshold"] = 1
    meta = parse_meta(data, "b")
    assert meta.band_stats["mean"] == [800.0, 700.0, 600.0, 2500.0]
    assert meta.threshold == 1.0 and "p2" not in meta.band_stats


def test_parse_meta_names_the_source_and_field() -> None:
    with pytest.raises(BundleError) as err:
        parse_meta({**OLD_JSON, "upscale": {"factor": 2, "method": 4}}, "X")
    assert str(err.value) == "X: bundle.json: upscale.method: must be bicubic or sr, got 4"
    with pytest.raises(BundleError, match=r"^X: bundle\.json: expected a JSON object, got list$"):
        parse_meta([], "X")


def test_metadata_built_in_python_is_validated_too() -> None:
    with pytest.raises(ValueError, match="factor"):
        UpscaleMeta(factor=3)
    with pytest.raises(ValueError, match="std"):
        BundleMeta(arch="unet", encoder="resnet18", band_stats={**STATS, "std": [0.0] * 4})
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=STATS)
    meta.created = "now"  # stays mutable (save_bundle stamps it)
    meta.upscale.sr_weights = "sr_model.safetensors"
    assert meta.to_dict()["upscale"]["sr_weights"] == "sr_model.safetensors"
