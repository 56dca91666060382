"""Tests of the spectral augmentation: ranges, nodata, seeding."""

from __future__ import annotations

import pytest
import torch

from pvdetect.model.spectral import HAZE_SHAPE, SpectralJitter, spectral_augment


def _batch(b: int = 16, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = 200 + 4000 * torch.rand(b, 4, size, size, generator=g)
    valid = torch.rand(b, size, size, generator=g) > 0.3
    x = torch.where(valid.unsqueeze(1), x, torch.full_like(x, -9999.0))
    return x, valid


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_nodata_pixels_are_never_touched() -> None:
    x, valid = _batch()
    y = spectral_augment(x, valid, SpectralJitter(p=1.0), _gen(1))
    inv = ~valid.unsqueeze(1).expand_as(x)
    assert torch.equal(y[inv], x[inv])  # still -9999 exactly
    assert (y[~inv] != x[~inv]).float().mean() > 0.99  # every valid pixel is changed
    assert (y[~inv] >= 0).all()
    assert not x.requires_grad and torch.equal(x, _batch()[0])  # the input is left as it was


def test_each_jitter_stays_in_its_range() -> None:
    x, valid = _batch(64)
    v = valid.unsqueeze(1).expand_as(x)
    only = {"gain": 0.0, "offset": 0.0, "brightness": 0.0, "haze": 0.0}
    y = spectral_augment(x, valid, SpectralJitter(p=1.0, **{**only, "gain": 0.1}), _gen(2))
    ratio = (y / x)[v]
    assert ratio.min() >= 0.9 - 1e-5 and ratio.max() <= 1.1 + 1e-5
    assert ratio.min() < 0.92 and ratio.max() > 1.08  # the range is used
    # per band: one factor per sample and band (constant over the pixels)
    r = torch.where(v, y / x, torch.nan)
    spread = (r.nanquantile(0.99, dim=-1) - r.nanquantile(0.01, dim=-1)).nan_to_num(0)
    assert spread.max() < 1e-4
    y = spectral_augment(x, valid, SpectralJitter(p=1.0, **{**only, "offset": 150.0}), _gen(3))
    diff = (y - x)[v]
    assert diff.abs().max() <= 150.0 + 1e-2 and diff.abs().max() > 140
    y = spectral_augment(x, valid, SpectralJitter(p=1.0, **{**only, "haze": 500.0}), _gen(4))
    # haze: y = x (1 - h / 10000) + h * shape_b with one h per sample in [0, 500]
    hazes = []
    for i in range(x.shape[0]):
        for band, weight in enumerate(HAZE_SHAPE):
            xs = x[i, band][valid[i]].double()
            ys = y[i, band][valid[i]].double()
            slope = ((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum()
            intercept = ys.mean() - slope * xs.mean()
            h = (1.0 - slope) * 10000.0
            assert float(intercept) == pytest.approx(float(h) * weight, abs=0.5)
            if band == 2:
                hazes.append(float(h))
    assert min(hazes) >= -0.5 and max(hazes) <= 500.5 and max(hazes) > 400


def test_share_p_and_seeding() -> None:
    x, valid = _batch(200)
    y = spectral_augment(x, valid, SpectralJitter(p=0.3), _gen(5))
    changed = (y != x).flatten(1).any(dim=1).float().mean()
    assert 0.15 < changed < 0.45  # 30 % of 200 samples, within 3.5 sd
    assert torch.equal(y, spectral_augment(x, valid, SpectralJitter(p=0.3), _gen(5)))
    assert not torch.equal(y, spectral_augment(x, valid, SpectralJitter(p=0.3), _gen(6)))
    assert torch.equal(spectral_augment(x, valid, SpectralJitter(p=0.0), _gen(5)), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_with_a_cpu_generator() -> None:
    x, valid = _batch()
    y = spectral_augment(x.cuda(), valid.cuda(), SpectralJitter(p=1.0), _gen(1))
    assert y.device.type == "cuda"
    assert torch.equal(y.cpu(), spectral_augment(x, valid, SpectralJitter(p=1.0), _gen(1)))
