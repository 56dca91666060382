"""Tests of pvdetect.model.sr: loading, band handling, tiling, and the weights training and
bundles use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from spandrel.architectures.ESRGAN import ESRGAN

from pvdetect.config import config_from_dict
from pvdetect.errors import ConfigError
from pvdetect.model.bundle import BundleMeta, UpscaleMeta, load_bundle, save_bundle
from pvdetect.model.sr import load_sr_model
from pvdetect.model.transforms import normalize, upscale_batch
from pvdetect.training.task import SegmentationTask


@pytest.fixture(scope="module")
def sr_files(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sr")
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    pth = folder / "tiny_x2.pth"
    torch.save(state, pth)
    st = folder / "tiny_x2.safetensors"
    save_file(state, str(st))
    return {"pth": pth, "safetensors": st}


def _reflectance(b: int = 1, h: int = 48, w: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.rand(b, 4, h, w, generator=g) * 4000.0


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_sr_load_and_shape(sr_files, kind):
    sr = load_sr_model(sr_files[kind], 2)
    assert sr.scale == 2
    x = _reflectance(2, 20, 24)
    y = sr(x)
    assert y.shape == (2, 4, 40, 48) and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 10000.0
    assert not any(p.requires_grad for p in sr.parameters())


def test_sr_scale_mismatch(sr_files, tmp_path):
    with pytest.raises(ConfigError, match="x2, but the factor is 4"):
        load_sr_model(sr_files["pth"], 4)
    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(ConfigError, match="bad.pth"):
        load_sr_model(bad, 2)
    with pytest.raises(ConfigError, match="not found"):
        load_sr_model(tmp_path / "missing.pth", 2)


def test_sr_nir_handling(sr_files):
    x = _reflectance(1, 16, 16)
    sr = load_sr_model(sr_files["pth"], 2, nir="sr")
    y = sr(x)
    # NIR through the network: the mean of the outputs for NIR replicated to three channels
    unit = (x[:, 3:4] / 10000.0).clamp(0, 1).expand(-1, 3, -1, -1)
    expected = sr.run_net(unit).mean(dim=1) * 10000.0
    assert torch.allclose(y[:, 3], expected, atol=1e-2)
    # the RGB bands do not depend on the NIR band
    x2 = x.clone()
    x2[:, 3] = 0.0
    assert torch.allclose(sr(x2)[:, :3], y[:, :3], atol=1e-3)
    bic = load_sr_model(sr_files["pth"], 2, nir="bicubic")(x)
    ref = torch.nn.functional.interpolate(
        x[:, 3:4] / 10000.0, scale_factor=2, mode="bicubic", align_corners=False
    )
    assert torch.allclose(bic[:, 3:4], ref * 10000.0, atol=1e-2)
    assert torch.allclose(bic[:, :3], y[:, :3], atol=1e-3)


def test_sr_tiled_equals_untiled(sr_files):
    x = _reflectance(1, 48, 40)
    whole = load_sr_model(sr_files["pth"], 2, tile=256, overlap=0)(x)
    tiled = load_sr_model(sr_files["pth"], 2, tile=16, overlap=24)(x)
    assert torch.allclose(tiled, whole, atol=1e-2)
    # without enough context the tile seams differ: the test can fail
    seams = load_sr_model(sr_files["pth"], 2, tile=16, overlap=0)(x)
    assert not torch.allclose(seams, whole, atol=1e-2)


def test_sr_normalised_input_via_upscale_batch(sr_files):
    x = _reflectance(2, 16, 16)
    mean, std = [1000.0, 1100.0, 1200.0, 2000.0], [500.0, 400.0, 300.0, 800.0]
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    valid[0, :4] = False
    xn = normalize(x, valid, mean, std)
    raw_sr = load_sr_model(sr_files["pth"], 2)
    norm_sr = load_sr_model(sr_files["pth"], 2, mean=mean, std=std)
    up, vup = upscale_batch(xn, valid, 2, "sr", norm_sr)
    assert up.shape == (2, 4, 32, 32)
    assert torch.all(up[0, :, :8] == 0) and not vup[0, :8].any()
    m = torch.tensor(mean).view(1, 4, 1, 1)
    s = torch.tensor(std).view(1, 4, 1, 1)
    expected = (raw_sr(x[1:]) - m) / s
    assert torch.allclose(up[1:], expected, atol=1e-3)
    with pytest.raises(ConfigError, match="x2, not x4"):
        upscale_batch(xn, valid, 4, "sr", norm_sr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = upscale_batch(xn, valid, 2, "sr", norm_sr)[0]
    assert torch.allclose(low.float(), up, atol=0.2)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().cpu() for p in module.parameters()]


def test_training_and_bundle_use_the_same_sr_weights(tmp_path: Path) -> None:
    """A BasicSR checkpoint holds ``params`` and ``params_ema``: the network training runs is
    the one the bundle ships (before the fix, training took ``params`` and the bundle
    ``params_ema``)."""
    torch.manual_seed(1)
    raw = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2).state_dict()
    torch.manual_seed(2)
    ema = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2).state_dict()
    ckpt = tmp_path / "basicsr_x2.pth"
    torch.save({"params": raw, "params_ema": ema}, ckpt)
    stats = {"mean": [500.0] * 4, "std": [100.0] * 4, "p2": [0.0] * 4, "p98": [1000.0] * 4}
    cfg = config_from_dict(
        {
            "model": {"weights": None},
            "upscale": {"factor": 2, "method": "sr", "sr_weights": str(ckpt)},
        }
    )
    task = SegmentationTask(cfg, stats, in_channels=4, chip_size=(32, 32))
    trained_with = _params(task.pre.sr)
    meta = BundleMeta(
        arch="unet",
        encoder="resnet18",
        band_stats=stats,
        upscale=UpscaleMeta(factor=2, method="sr", sr_weights=str(ckpt)),
    )
    bundle = load_bundle(save_bundle(tmp_path / "bundle", task.model, meta))
    shipped = _params(bundle.sr)
    assert len(trained_with) == len(shipped)
    assert all(torch.equal(a, b) for a, b in zip(trained_with, shipped, strict=True))
    ema_first = next(iter(ema.values()))
    assert torch.equal(shipped[0], ema_first.cpu())  # the EMA weights, as BasicSR intends
    x = torch.rand(1, 4, 32, 32) * 1000
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    task.eval()
    with torch.no_grad():
        a = task.pre.model_input(x, valid)[0]
    b = bundle.pre.model_input(x, valid)[0]
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
