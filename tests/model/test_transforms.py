"""Tests of the batched tensor transforms and the super-resolution wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvdetect.errors import ConfigError
from pvdetect.model.transforms import (
    d4_augment,
    d4_index,
    d4_inverse,
    d4_transform,
    downscale_probs,
    mirror_windows,
    normalize,
    random_crop,
    upscale_batch,
    upscale_mask,
)

# The 8 D4 elements written with plain torch ops: flip rows (bit 0), flip cols (bit 1), then
# transpose (bit 2).
REFERENCE = {
    0: lambda t: t,
    1: lambda t: t.flip(-2),
    2: lambda t: t.flip(-1),
    3: lambda t: t.flip(-2).flip(-1),
    4: lambda t: t.transpose(-2, -1),
    5: lambda t: t.flip(-2).transpose(-2, -1),
    6: lambda t: t.flip(-1).transpose(-2, -1),
    7: lambda t: t.flip(-2).flip(-1).transpose(-2, -1),
}


def _batch(b: int = 8, c: int = 4, h: int = 6, w: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    mask = torch.randint(0, 2, (b, h, w), generator=g, dtype=torch.uint8)
    mask[:, 0, 0] = 255
    valid = torch.rand(b, h, w, generator=g) > 0.2
    return x, mask, valid


def test_normalize_stats_and_invalid_to_zero():
    x = torch.tensor([[[[100.0, 300.0]], [[10.0, -9999.0]]]])  # [1, 2, 1, 2]
    valid = torch.tensor([[[True, False]]])
    y = normalize(x, valid, mean=[200.0, 20.0], std=[100.0, 5.0])
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y[0, 0, 0, 0].item() == pytest.approx(-1.0)
    assert y[0, 1, 0, 0].item() == pytest.approx(-2.0)
    assert torch.all(y[0, :, 0, 1] == 0)


def test_normalize_nan_and_band_count():
    x = torch.full((1, 2, 2, 2), float("nan"))
    y = normalize(x, torch.ones(1, 2, 2, dtype=torch.bool), [0.0, 0.0], [1.0, 1.0])
    assert torch.all(y == 0)
    with pytest.raises(ConfigError, match="3 values"):
        normalize(x, torch.ones(1, 2, 2, dtype=torch.bool), [0.0, 0.0, 0.0], [1.0, 1.0])


@pytest.mark.parametrize("g", range(8))
def test_d4_each_element_consistent(g):
    x, mask, valid = _batch()
    el = torch.full((x.shape[0],), g)
    xo, mo, vo = d4_augment(x, mask, valid, elements=el)
    ref = REFERENCE[g]
    assert torch.equal(xo, ref(x))
    assert torch.equal(mo, ref(mask))
    assert torch.equal(vo, ref(valid))
    assert mo.dtype == torch.uint8 and vo.dtype == torch.bool


def test_d4_per_sample_and_all_elements_appear():
    x, mask, valid = _batch(b=400, c=1, h=4, w=4)
    # tag each sample with an asymmetric pattern so the applied element can be identified
    pattern = torch.arange(16.0).view(1, 1, 4, 4).expand(400, 1, 4, 4).clone()
    gen = torch.Generator().manual_seed(3)
    out, _, _ = d4_augment(pattern, mask, valid, generator=gen)
    seen = []
    for i in range(400):
        hits = [g for g, f in REFERENCE.items() if torch.equal(out[i], f(pattern[i]))]
        assert len(hits) == 1
        seen.append(hits[0])
    counts = torch.bincount(torch.tensor(seen), minlength=8)
    assert torch.all(counts > 20), counts


def test_d4_inverse_and_mass_preserving():
    x, mask, valid = _batch(b=16)
    el = torch.arange(16) % 8
    y = d4_transform(x, el)
    assert torch.allclose(y.sum(dim=(-2, -1)), x.sum(dim=(-2, -1)))
    assert torch.equal(d4_transform(y, d4_inverse(el)), x)
    assert torch.equal(d4_transform(d4_transform(mask, el), d4_inverse(el)), mask)


def test_d4_non_square_uses_flips_only():
    x, mask, valid = _batch(b=64, h=4, w=6)
    out, mo, vo = d4_augment(x, mask, valid, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and mo.shape == mask.shape
    for i in range(64):
        assert any(torch.equal(out[i], REFERENCE[g](x[i])) for g in range(4))
    with pytest.raises(ConfigError, match="square"):
        d4_index(torch.tensor([4]), 4, 6)


def test_random_crop_shapes_and_consistency():
    b, h, w, size = 32, 12, 10, 5
    x = torch.arange(b * h * w, dtype=torch.float32).view(b, 1, h, w).expand(b, 2, h, w)
    mask = (torch.arange(b * h * w).view(b, h, w) % 251).to(torch.uint8)
    valid = torch.arange(b * h * w).view(b, h, w) % 3 == 0
    gen = torch.Generator().manual_seed(1)
    xo, mo, vo = random_crop(x, mask, valid, size, generator=gen)
    assert xo.shape == (b, 2, size, size) and mo.shape == (b, size, size)
    offsets = set()
    for i in range(b):
        flat = int(xo[i, 0, 0, 0].item()) - i * h * w
        oy, ox = divmod(flat, w)
        offsets.add((oy, ox))
        assert torch.equal(xo[i], x[i, :, oy : oy + size, ox : ox + size])
        assert torch.equal(mo[i], mask[i, oy : oy + size, ox : ox + size])
        assert torch.equal(vo[i], valid[i, oy : oy + size, ox : ox + size])
    assert len(offsets) > 5  # offsets differ per sample
    with pytest.raises(ConfigError, match="does not fit"):
        random_crop(x, mask, valid, 11)


def test_random_crop_on_pv_keeps_small_plants_in_view():
    b, h, size = 800, 64, 16
    x = torch.zeros(b, 1, h, h)
    mask = torch.zeros(b, h, h, dtype=torch.uint8)
    valid = torch.ones(b, h, h, dtype=torch.bool)
    mask[: b // 2, 50:53, 5:8] = 1  # a 3 x 3 plant in the first half of the batch
    mask[: b // 2, 0, :] = 255  # nodata labels are not PV
    valid[b // 4 : b // 2, 50:53, 5:8] = False  # ... nor are invalid pixels
    x[:, 0] = mask.float()
    gen = torch.Generator().manual_seed(0)
    _, mo, _ = random_crop(x, mask, valid, size, generator=gen, pv_prob=1.0)
    hit = (mo == 1).flatten(1).any(1)
    assert hit[: b // 4].all()  # every crop of a chip with (valid) PV holds PV
    assert hit[b // 4 : b // 2].float().mean() < 0.3  # invalid PV pixels: uniform crops
    assert not hit[b // 2 :].any()
    # with 0.5, about half of them; uniform offsets reach it 14/49 x 8/49 = 4.7 % of the time
    _, mo, _ = random_crop(x, mask, valid, size, generator=gen, pv_prob=0.5)
    share = (mo[: b // 4] == 1).flatten(1).any(1).float().mean().item()
    assert 0.4 < share < 0.65  # expected 0.5 + 0.5 x 0.047
    _, mo, _ = random_crop(x, mask, valid, size, generator=gen)
    assert (mo[: b // 4] == 1).flatten(1).any(1).float().mean().item() < 0.3
    # the plant appears at varied positions inside the crops
    _, mo, _ = random_crop(x, mask, valid, size, generator=gen, pv_prob=1.0)
    first = (mo[: b // 4] == 1).flatten(1).float().argmax(1)
    assert len(set(first.tolist())) > 20


def test_upscale_bicubic_constant_and_invalid():
    x = torch.full((2, 4, 8, 8), 0.7)
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    valid[1, :, :3] = False
    up, vup = upscale_batch(x, valid, 2, "bicubic")
    assert up.shape == (2, 4, 16, 16) and vup.shape == (2, 16, 16)
    assert torch.allclose(up[0], torch.full_like(up[0], 0.7), atol=1e-6)
    assert not vup[1, :, :6].any() and vup[1, :, 6:].all()
    assert torch.all(up[1, :, :, :6] == 0)
    same, sv = upscale_batch(x, valid, 1, "bicubic")
    assert same is x and sv is valid
    with pytest.raises(ConfigError, match="needs a super-resolution"):
        upscale_batch(x, valid, 2, "sr")
    with pytest.raises(ConfigError, match="unknown upscale method"):
        upscale_batch(x, valid, 2, "lanczos")


def test_upscale_mask_nearest_and_downscale():
    mask = torch.tensor([[[0, 1], [255, 1]]], dtype=torch.uint8)
    up = upscale_mask(mask, 4)
    assert up.shape == (1, 8, 8) and up.dtype == torch.uint8
    assert set(up.unique().tolist()) == {0, 1, 255}
    assert torch.all(up[0, :4, 4:] == 1) and torch.all(up[0, 4:, :4] == 255)
    probs = torch.rand(2, 8, 8)
    down = downscale_probs(probs, 2)
    assert down.shape == (2, 4, 4)
    assert down[1, 2, 3].item() == pytest.approx(probs[1, 4:6, 6:8].mean().item())
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    valid[0, 0, 0] = False
    dv = downscale_probs(probs, 2, valid)
    assert dv[0, 0, 0].item() == pytest.approx(probs[0, :2, :2].flatten()[1:].mean().item())


# --------------------------------------------------------------------------- super-resolution


def test_mirror_windows_mirrors_a_window_and_leaves_other_chips() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 4, 20, 20, generator=g)
    mask = torch.randint(0, 2, (4, 20, 20), generator=g, dtype=torch.uint8)
    valid = torch.zeros(4, 20, 20, dtype=torch.bool)
    valid[0, 3:10, 6:17] = True  # a window of 7 x 11 px: mirrored
    valid[1] = True  # the whole chip: unchanged
    valid[2, 3:10, 6:17] = True
    valid[2, 3, 6] = False  # not one rectangle: unchanged
    valid[3, 8:10, 0:20] = True  # 2 rows, wider than the pad is deep on each side: mirrored
    mask[~valid] = 255
    x = torch.where(valid.unsqueeze(1), x, torch.zeros(()))
    out, m, v = mirror_windows(x, mask, valid)
    for j, (rows, cols) in ((0, (slice(3, 10), slice(6, 17))), (3, (slice(8, 10), slice(0, 20)))):
        pads = ((rows.start, 20 - rows.stop), (cols.start, 20 - cols.stop))
        want = np.pad(x[j][:, rows, cols].numpy(), ((0, 0), *pads), mode="symmetric")
        want_m = np.pad(mask[j][rows, cols].numpy(), pads, mode="symmetric")
        assert np.array_equal(out[j].numpy(), want) and np.array_equal(m[j].numpy(), want_m)
        assert bool(v[j].all()) and not bool((m[j] == 255).any())
        assert torch.equal(out[j][:, rows, cols], x[j][:, rows, cols])  # the window itself stays
    for j in (1, 2):
        assert (
            torch.equal(out[j], x[j]) and torch.equal(m[j], mask[j]) and torch.equal(v[j], valid[j])
        )
