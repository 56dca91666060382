"""Tests of model construction, pretrained-weight loading and first-conv adaptation.

Every architecture is built, trained a step and round-tripped in ``test_architectures.py``.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file
from torch import nn

from pvdetect.errors import ConfigError
from pvdetect.model.factory import (
    adapt_conv_weight,
    adapt_first_conv,
    build_model,
    min_input_size,
    read_state_dict,
    required_multiple,
)


def test_size_constraints():
    assert required_multiple("unet", "resnet18") == 32
    assert required_multiple("pspnet", "resnet18") == 8
    assert required_multiple("deeplabv3plus", "resnet18") == 16
    assert min_input_size("pan", "resnet18") == 128
    model = build_model("fpn", "resnet18").eval()
    with pytest.raises(RuntimeError, match="divisible by 32"):
        model(torch.randn(1, 4, 48, 48))


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown architecture 'unet3'.*deeplabv3plus"):
        build_model("unet3", "resnet18")
    with pytest.raises(ConfigError, match="get_encoder_names"):
        build_model("unet", "resnet19")
    with pytest.raises(ConfigError, match="not a timm model"):
        build_model("unet", "tu-no_such_net")
    with pytest.raises(ConfigError, match="Only Timm encoders"):
        build_model("dpt", "resnet18")
    with pytest.raises(ConfigError, match="no pretrained weights 'bogus'.*imagenet"):
        build_model("unet", "resnet18", weights="bogus")


def test_adapt_conv_weight_keeps_rgb_and_inits_nir():
    w = torch.randn(8, 3, 7, 7)
    a = adapt_conv_weight(w, 4)
    assert a.shape == (8, 4, 7, 7)
    assert torch.equal(a[:, :3], w)
    assert torch.allclose(a[:, 3], w.mean(dim=1))
    assert torch.equal(adapt_conv_weight(w, 4, init="red")[:, 3], w[:, 0])
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    before = conv[0].weight.detach().clone()
    adapt_first_conv(conv, 4)
    assert conv[0].in_channels == 4 and conv[0].weight.shape == (8, 4, 3, 3)
    assert torch.equal(conv[0].weight[:, :3], before)
    assert conv(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    state = adapt_first_conv({"stem.weight": w, "other.weight": torch.randn(8, 8, 3, 3)}, 4)
    assert state["stem.weight"].shape == (8, 4, 7, 7)


@pytest.fixture(scope="module")
def rgb_encoder(tmp_path_factory) -> dict:
    """A randomly initialised 3-band resnet18 encoder saved as users would save weights."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("weights")
    model3 = smp.create_model("unet", encoder_name="resnet18", encoder_weights=None, in_channels=3)
    state = {k: v.detach().clone().contiguous() for k, v in model3.encoder.state_dict().items()}
    pth = folder / "resnet18-rgb.pth"
    torch.save(state, pth)
    st = folder / "resnet18-rgb.safetensors"
    save_file(state, str(st))
    return {"state": state, "pth": pth, "safetensors": st, "folder": folder}


def _check_adapted(model: nn.Module, state: dict) -> None:
    conv1 = model.encoder.conv1.weight.detach()
    rgb = state["conv1.weight"]
    assert conv1.shape == (64, 4, 7, 7)
    assert torch.equal(conv1[:, :3], rgb)  # pretrained RGB kernels exactly
    assert torch.allclose(conv1[:, 3], rgb.mean(dim=1))  # NIR: mean of RGB, not random
    for key in ("layer4.1.conv2.weight", "bn1.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(model.encoder.state_dict()[key], state[key])


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_encoder_weights_from_file(rgb_encoder, kind):
    model = build_model("unet", "resnet18", in_channels=4, weights=str(rgb_encoder[kind]))
    _check_adapted(model, rgb_encoder["state"])
    assert model.eval()(torch.randn(1, 4, 32, 32)).shape == (1, 1, 32, 32)


def test_full_model_and_lightning_checkpoint(tmp_path):
    torch.manual_seed(2)
    src = build_model("fpn", "resnet18")
    full = tmp_path / "full.pth"
    torch.save(src.state_dict(), full)
    ckpt = tmp_path / "run.ckpt"
    torch.save(
        {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, ckpt
    )
    for path in (full, ckpt):
        loaded = build_model("fpn", "resnet18", weights=path)
        for k, v in src.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k


def test_wrong_or_unsafe_weights(rgb_encoder, tmp_path):
    with pytest.raises(ConfigError, match="missing"):
        build_model("unet", "resnet34", weights=rgb_encoder["pth"])
    with pytest.raises(ConfigError, match="not found"):
        build_model("unet", "resnet18", weights=str(tmp_path / "nope.pth"))
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "obj": functools.partial(print, "x")}, evil)
    with pytest.raises(ConfigError, match="weights_only"):
        read_state_dict(evil)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file at all")
    with pytest.raises(ConfigError, match="junk.safetensors"):
        build_model("unet", "resnet18", weights=junk)


def test_named_weights_from_local_cache(rgb_encoder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "resnet18-imagenet.safetensors").write_bytes(rgb_encoder["safetensors"].read_bytes())
    monkeypatch.setenv("PVDETECT_WEIGHTS_DIR", str(cache))
    model = build_model("unet", "resnet18", weights="imagenet")
    _check_adapted(model, rgb_encoder["state"])


def test_named_weights_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("PVDETECT_WEIGHTS_DIR", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", offline)
    with pytest.raises(ConfigError) as err:
        build_model("unet", "resnet18", weights="imagenet")
    msg = str(err.value)
    assert "network is unreachable" in msg
    assert str(tmp_path / "empty" / "resnet18-imagenet.safetensors") in msg
    assert "PVDETECT_WEIGHTS_DIR" in msg


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


def test_weights_from_url(rgb_encoder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PVDETECT_WEIGHTS_DIR", str(cache))
    handler = functools.partial(_QuietHandler, directory=str(rgb_encoder["folder"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        model = build_model("unet", "resnet18", weights=f"{base}/resnet18-rgb.safetensors")
        _check_adapted(model, rgb_encoder["state"])
        with pytest.raises(ConfigError, match="HTTP 404"):
            build_model("unet", "resnet18", weights=f"{base}/missing.pth")
    finally:
        server.shutdown()
        server.server_close()
    files = sorted(Path(cache / "downloads").iterdir())
    assert len(files) == 1 and files[0].name.endswith("resnet18-rgb.safetensors")
    # the server is gone: the cached copy is used
    again = build_model("unet", "resnet18", weights=f"{base}/resnet18-rgb.safetensors")
    _check_adapted(again, rgb_encoder["state"])
    with pytest.raises(ConfigError, match="cannot download"):
        build_model("unet", "resnet18", weights=f"{base}/other.pth")
