"""Bundles written before a refactor still load and predict the same.

``tests/data/bundles/v1/`` was written by pvdetect 0.1.0's ``save_bundle`` and committed, together
with a scene and the probabilities ``pvdetect predict`` wrote for it then
(``tests/data/bundles/make_legacy_bundle.py`` made them all). These tests read them with the
current code. The expectation was recorded in float32 (``expected.json``: ``autocast``); where
inference runs in float32 too (CPUs without native bf16) the probabilities must agree to 1e-5,
where it runs under bf16 autocast to bf16 rounding.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pvdetect.cli import main
from pvdetect.data.raster import read_raster
from pvdetect.model.bundle import load_bundle, read_meta

DATA = Path(__file__).resolve().parents[1] / "data" / "bundles"
BUNDLE = DATA / "v1"

#: bundle.json of v1, as written (format 1)
V1_META = {
    "arch": "linknet",
    "encoder": "tu-test_efficientnet",
    "band_stats": {
        "mean": [746.475, 749.107, 754.862, 3087.641],
        "std": [258.938, 261.381, 259.251, 1158.492],
        "p2": [316.589, 320.541, 318.082, 721.702],
        "p98": [1182.258, 1183.039, 1183.037, 4910.53],
    },
    "in_channels": 4,
    "band_order": ["Red", "Green", "Blue", "NIR"],
    "input_scale": 1.0,
    "nodata": -9999.0,
    "threshold": 0.45,
    "threshold_metric": "f1",
    "upscale": {"factor": 1, "method": "bicubic", "sr_weights": None},
    "tile_size": 32,
    "overlap": 8,
    "data_fingerprint": "legacy-fixture-v1",
    "val_metrics": {"iou": 0.8109, "f1": 0.8956, "threshold": 0.45},
    "created": "2025-01-01T00:00:00+00:00",
    "pvdetect_version": "0.1.0",
    "format_version": 1,
}


def _tolerance() -> float:
    from pvdetect.device import autocast_dtype

    recorded = json.loads((DATA / "expected.json").read_text())["autocast"]
    same = str(autocast_dtype("cpu")).removeprefix("torch.") == recorded
    return 1e-5 if same else 2e-2


def test_v1_bundle_loads_with_its_metadata_and_weights() -> None:
    bundle = load_bundle(BUNDLE)
    assert bundle.meta.to_dict() == V1_META
    assert read_meta(BUNDLE).to_dict() == V1_META
    assert type(bundle.model).__name__ == "Linknet"
    assert sum(p.numel() for p in bundle.model.parameters()) == 94_971
    stored = load_file(str(BUNDLE / "model.safetensors"))
    state = bundle.model.state_dict()
    assert state.keys() == stored.keys()
    for k, v in stored.items():
        assert torch.equal(state[k], v), k
    # trained, not freshly initialised: BatchNorm statistics moved off their initial values
    running = [v for k, v in stored.items() if k.endswith("running_var")]
    assert running and not all(torch.all(v == 1) for v in running)


def test_v1_bundle_as_pvb_loads_the_same(tmp_path: Path) -> None:
    pvb = tmp_path / "v1.pvb"
    with zipfile.ZipFile(pvb, "w") as zf:
        for f in sorted(BUNDLE.iterdir()):
            zf.write(f, f.name)
    a, b = load_bundle(BUNDLE), load_bundle(pvb)
    assert b.meta.to_dict() == V1_META
    for k, v in a.model.state_dict().items():
        assert torch.equal(b.model.state_dict()[k], v), k


def test_v1_bundle_predicts_the_recorded_probabilities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "v1"  # a copy: nothing may be written beside the committed files
    shutil.copytree(BUNDLE, bundle)
    out = tmp_path / "out"
    args = ["predict", str(bundle), str(DATA / "scene.tif"), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--no-overlay", "--min-area", "0"]) == 0, (
        capsys.readouterr().err
    )
    expected = np.load(DATA / "expected_prob.npy")
    prob, info = read_raster(out / "scene_prob.tif")
    scene, scene_info = read_raster(DATA / "scene.tif")
    assert prob.shape == (1, 64, 64) and expected.shape == (64, 64)
    assert (info.crs, info.transform) == (scene_info.crs, scene_info.transform)
    nodata = (scene == -9999).any(axis=0)
    assert nodata.sum() == 61  # the 6 x 10 corner and one pixel with one band missing
    np.testing.assert_array_equal(prob[0] == info.nodata, nodata)
    np.testing.assert_array_equal(expected == -9999, nodata)
    tol = _tolerance()
    np.testing.assert_allclose(prob[0], expected, rtol=0, atol=tol)
    assert np.abs(prob[0] - expected).mean() <= tol / 10
    # the mask is the probability at the bundle's threshold (where it is not within tolerance)
    mask, _ = read_raster(out / "scene_mask.tif")
    clear = ~nodata & (np.abs(expected - 0.45) > tol)
    np.testing.assert_array_equal(mask[0][clear] == 1, expected[clear] >= 0.45)
    assert 0.05 < (mask[0][~nodata] == 1).mean() < 0.3  # the plants, not everything or nothing
