"""ONNX bundles: ``pvdetect export --onnx`` and onnxruntime give the torch bundle's results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from pvdetect import cli
from pvdetect.model.bundle import BundleMeta, load_bundle, save_bundle
from pvdetect.model.factory import build_model
from pvdetect.model.preprocessing import run_model

pytest.importorskip("onnxruntime")

STATS = {
    "mean": [900.0, 850.0, 700.0, 2500.0],
    "std": [500.0, 450.0, 400.0, 900.0],
    "p2": [100.0] * 4,
    "p98": [4000.0] * 4,
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pvdetect.synth.scene import generate_scene

    d = tmp_path_factory.mktemp("onnx")
    generate_scene(d / "scene.tif", d / "scene_truth.tif", 192, 3)
    return d / "scene.tif"


def _bundle(path: Path, arch: str) -> Path:
    torch.manual_seed(0)
    model = build_model(arch, "resnet18", in_channels=4)
    meta = BundleMeta(arch=arch, encoder="resnet18", band_stats=STATS, tile_size=128, overlap=32)
    return save_bundle(path, model, meta)


def _float32_probs(bundle, raw: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """The torch bundle's network in float32 (what the ONNX graph was exported from)."""
    with torch.inference_mode():
        x, _ = bundle.pre.model_input(raw, valid)
        probs = torch.sigmoid(run_model(bundle.model, x, bundle.multiple).float())[:, 0]
        return bundle.pre.output_probs(probs, valid)


@pytest.mark.parametrize("arch", ["unet", "fpn"])
def test_export_gives_the_torch_network(arch: str, tmp_path: Path, scene: Path) -> None:
    src = _bundle(tmp_path / "torch", arch)
    out = tmp_path / "onnx"
    assert cli.main(["export", str(src), "--onnx", str(out)]) == 0
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["runtime"] == "onnx" and meta["arch"] == arch and (out / "model.onnx").is_file()
    assert meta["onnx"]["max_abs_prob_diff_vs_torch"] < 1e-3
    torch_bundle, onnx_bundle = load_bundle(src), load_bundle(out)
    assert type(onnx_bundle).__name__ == "OnnxBundle"
    assert onnx_bundle.providers[-1] == "CPUExecutionProvider"
    # batch, height and width other than the traced example (128 x 128, batch 1)
    with rasterio.open(scene) as ds:
        raw = torch.from_numpy(ds.read(window=((0, 160), (0, 96))).astype(np.float32))
    raw = torch.stack([raw, raw.flip(-1)])
    valid = torch.ones(raw.shape[0], *raw.shape[-2:], dtype=torch.bool)
    valid[0, :10] = False
    want = _float32_probs(torch_bundle, raw, valid)
    got = onnx_bundle.predict_probs(raw, valid)
    assert got.shape == want.shape == (2, 160, 96)
    assert float((got - want).abs().max()) < 1e-3
    assert float(got[0, :10].abs().max()) == 0.0  # invalid pixels
    # with TTA too (the flips and rotations run through the graph)
    tta = onnx_bundle.predict_probs(raw[:, :, :96], valid[:, :96], tta=True)
    assert float((tta - _tta_ref(torch_bundle, raw[:, :, :96], valid[:, :96])).abs().max()) < 1e-3


def _tta_ref(bundle, raw: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    from pvdetect.model.preprocessing import tta_elements, tta_probs

    with torch.inference_mode():
        x, _ = bundle.pre.model_input(raw, valid)

        def fwd(t: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(run_model(bundle.model, t, bundle.multiple).float())[:, 0]

        return bundle.pre.output_probs(tta_probs(fwd, x, tta_elements(*x.shape[-2:])), valid)


def test_predict_and_evaluate_take_an_onnx_bundle(tmp_path: Path, scene: Path) -> None:
    from pvdetect.synth.dataset import generate_dataset

    src = _bundle(tmp_path / "torch", "unet")
    out = tmp_path / "onnx"
    assert cli.main(["export", str(src), "--onnx", str(out)]) == 0
    for name, bundle in (("torch", src), ("onnx", out)):
        code = cli.main(["predict", str(bundle), str(scene), "--out", str(tmp_path / name),
                         "--device", "cpu", "--no-overlay"])  # fmt: skip
        assert code == 0
    with rasterio.open(tmp_path / "torch" / "scene_prob.tif") as a:
        pa = a.read(1)
    with rasterio.open(tmp_path / "onnx" / "scene_prob.tif") as b:
        pb = b.read(1)
    ok = pa != -9999
    assert ok.any() and np.array_equal(ok, pb != -9999)
    # torch runs in bf16 autocast on the CPU, onnxruntime in float32: close, not equal
    assert np.median(np.abs(pa[ok] - pb[ok])) < 0.02
    data = tmp_path / "chips"
    generate_dataset(data, chips=14, scenes=0, seed=0, chip_size=64)
    code = cli.main(["evaluate", str(out), str(data), "--split", "val", "--out",
                     str(tmp_path / "eval"), "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["pixel"]["tp"] + metrics["pixel"]["fn"] + metrics["pixel"]["fp"] > 0


def test_export_refusals(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _bundle(tmp_path / "torch", "unet")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert cli.main(["export", str(src), "--onnx", str(tmp_path / "taken")]) == 2
    assert "is not a bundle folder" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert cli.main(["export", str(src), "--onnx", str(tmp_path / "o")]) == 0
    assert cli.main(["export", str(tmp_path / "o"), "--onnx", str(tmp_path / "o2")]) == 2
    assert "already an ONNX bundle" in capsys.readouterr().err
    assert not list(tmp_path.glob(".o*"))  # no staging folder left behind
