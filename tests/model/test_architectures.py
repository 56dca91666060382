"""One test every segmentation-models-pytorch architecture passes, at its smallest input.

For each name in :data:`pvdetect.model.factory.ARCHITECTURES` (checked against the model classes
that smp itself defines): build it with a small encoder and 4 bands, run it on the smallest
input :func:`~pvdetect.model.factory.min_input_size` promises, take one training step with the
project's default loss, save it as a bundle, load the bundle and get the same logits back.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import SegmentationModel
from torch import nn

from pvdetect.model.bundle import BundleMeta, load_bundle, save_bundle
from pvdetect.model.factory import (
    ARCHITECTURES,
    build_model,
    min_input_size,
    required_multiple,
)
from pvdetect.model.losses import build_loss

#: the smallest encoder each architecture accepts: DPT takes only timm vision transformers
#: (``tu-test_vit``), every other one timm's MobileNetV3-small at half width (0.3-7.7 M
#: parameters with the decoders; 3x faster here than resnet18, which the bundle, predict and
#: training tests use)
ENCODERS = {"dpt": "tu-test_vit"}
DEFAULT_ENCODER = "tu-mobilenetv3_small_050"

STATS = {
    "mean": [800.0, 700.0, 600.0, 2500.0],
    "std": [300.0, 250.0, 200.0, 900.0],
    "p2": [200.0, 200.0, 150.0, 800.0],
    "p98": [1800.0, 1500.0, 1300.0, 4500.0],
}

#: architectures whose promised minimum input does not run (a bug in pvdetect, not in smp):
#: the reason, and a side that does run, for the rest of the checks
MIN_SIZE_BUGS: dict[str, tuple[str, int]] = {}  # none known (DPT fixed: multiple 32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: as fast for these tiny inputs, and several times faster when the
    cores are shared (two threads then wait for each other at every small operation)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _encoder(arch: str) -> str:
    return ENCODERS.get(arch, DEFAULT_ENCODER)


def _smp_model_classes() -> set[type]:
    """Every concrete segmentation model class in smp's decoder packages, found by walking them."""
    found: set[type] = set()
    prefix = smp.decoders.__name__ + "."
    for info in pkgutil.walk_packages(smp.decoders.__path__, prefix):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, SegmentationModel)
                and obj is not SegmentationModel
                and obj.__module__.startswith(prefix)
            ):
                found.add(obj)
    return found


def test_architectures_are_exactly_the_smp_model_classes() -> None:
    """A different route than ARCHITECTURES' own source (smp's name table): the classes."""
    classes = _smp_model_classes()
    assert len(classes) >= 12  # the 0.6 line: unet ... dpt
    with torch.device("meta"):  # no memory, no init: only the class matters
        built = {arch: type(build_model(arch, _encoder(arch))) for arch in ARCHITECTURES}
    assert set(built.values()) == classes  # every smp model class reachable, nothing else
    assert len(set(built.values())) == len(ARCHITECTURES)  # one name per class
    assert {"unet", "unetplusplus", "fpn", "deeplabv3plus", "segformer"} <= set(ARCHITECTURES)


def _first_layer(model: nn.Module) -> str:
    """Name of the convolution that takes the 4 input bands."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 4:
            return name
    raise AssertionError("no convolution with 4 input channels")


def _arch_params() -> list:
    return [
        pytest.param(a, marks=pytest.mark.xfail(strict=True, reason=MIN_SIZE_BUGS[a][0]))
        if a in MIN_SIZE_BUGS
        else a
        for a in ARCHITECTURES
    ]


@pytest.mark.parametrize("arch", _arch_params())
def test_runs_at_min_input_size(arch: str) -> None:
    encoder = _encoder(arch)
    size = min_input_size(arch, encoder)
    mult = required_multiple(arch, encoder)
    assert size % mult == 0
    torch.manual_seed(0)
    model = build_model(arch, encoder, in_channels=4).eval()
    with torch.no_grad():
        # the smallest square, and a side one multiple larger (the multiple is honest)
        for h, w in ((size, size), (size, size + mult)):
            assert model(torch.randn(1, 4, h, w)).shape == (1, 1, h, w)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_trains_saves_and_reloads_bit_equal(arch: str, tmp_path: Path) -> None:
    encoder = _encoder(arch)
    size = MIN_SIZE_BUGS[arch][1] if arch in MIN_SIZE_BUGS else min_input_size(arch, encoder)
    torch.manual_seed(0)
    model = build_model(arch, encoder, in_channels=4, weights=None)
    assert sum(p.numel() for p in model.parameters()) > 0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, size, size, generator=g)
    target = torch.zeros(2, size, size, dtype=torch.uint8)
    target[:, : size // 2] = 1
    valid = torch.ones(2, size, size, dtype=torch.bool)
    valid[:, :, -1] = False

    # one training step: logits [B, 1, H, W], finite loss, the update reaches both ends
    model.train()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    # Adam's first step moves every weight with a gradient by about lr, however large the
    # gradient (BatchNorm over 1 x 1 features of a batch of 2 gives huge ones)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logits = model(x)
    assert logits.shape == (2, 1, size, size)
    loss = build_loss()(logits, target, valid)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(gr).all() for gr in grads)
    optimizer.step()
    changed = {k for k, p in model.named_parameters() if not torch.equal(p, before[k])}
    assert f"{_first_layer(model)}.weight" in changed
    assert any(k.startswith("segmentation_head.") for k in changed)

    # bundle round trip: identical state (BatchNorm statistics of the step too), same logits
    model.eval()
    meta = BundleMeta(arch=arch, encoder=encoder, band_stats=STATS, tile_size=size, overlap=0)
    bundle = load_bundle(save_bundle(tmp_path / "bundle", model, meta))
    assert (bundle.meta.arch, bundle.meta.encoder) == (arch, encoder)
    reloaded = bundle.model.state_dict()
    assert reloaded.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded[k], v), k
    assert not bundle.model.training
    model.to(memory_format=torch.channels_last)  # the bundle holds its model channels_last
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = model(xc)
        assert torch.isfinite(want).all()
        assert torch.equal(bundle.model(xc), want)

    # and the bundle predicts probabilities on raw reflectance (bf16 autocast, invalid -> 0)
    mean = torch.tensor(STATS["mean"]).view(1, 4, 1, 1)
    std = torch.tensor(STATS["std"]).view(1, 4, 1, 1)
    raw = x * std + mean
    probs = bundle.predict_probs(raw, valid)
    assert probs.shape == (2, size, size) and probs.dtype == torch.float32
    assert torch.all(probs[~valid] == 0)
    with torch.no_grad():
        ref = torch.sigmoid(model(xc * valid[:, None]))[:, 0] * valid
    assert (probs - ref).abs().mean() < 0.02  # bf16 rounding only
