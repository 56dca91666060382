"""Batched tensor transforms that run on the training device: normalisation, D4 augmentation,
random crops, upscaling (bicubic or super-resolution) and the way back to the native grid.

Shapes: images ``x`` are ``[B, C, H, W]`` float, masks ``[B, H, W]`` uint8 (0/1, 255 = ignore)
and ``valid`` ``[B, H, W]`` bool. Nothing here loops over the batch in Python.

Upscaling runs on **normalised** data: normalise first (invalid pixels become 0, the band mean),
then upscale, then set the pixels whose nearest source pixel was invalid back to 0. The raw
nodata value (-9999) therefore never enters the interpolation; next to a nodata edge a valid
pixel is pulled at most towards the band mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pvdetect.errors import ConfigError

UPSCALE_METHODS = ("bicubic", "sr")


def _band_vector(values: Sequence[float] | Tensor, like: Tensor, name: str) -> Tensor:
    vec = torch.as_tensor(values, dtype=torch.float32, device=like.device).flatten()
    if vec.numel() == 1:
        vec = vec.expand(like.shape[1])
    if vec.numel() != like.shape[1]:
        raise ConfigError(
            f"{name} has {vec.numel()} values but the image has {like.shape[1]} bands"
        )
    return vec.view(1, -1, 1, 1)


def normalize(
    x: Tensor, valid: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> Tensor:
    """``(x - mean) / std`` per band; invalid (and non-finite) pixels become 0.

    Args:
        x: raw reflectance ``[B, C, H, W]``.
        valid: ``[B, H, W]`` bool, True where every band is valid.
        mean: per-band mean of the training split (valid pixels only).
        std: per-band standard deviation; values <= 0 are treated as 1.
    """
    m = _band_vector(mean, x, "mean")
    s = _band_vector(std, x, "std")
    s = torch.where(s > 0, s, torch.ones_like(s))
    y = (x.float() - m) / s
    keep = valid.unsqueeze(1) & torch.isfinite(y)
    return torch.where(keep, y, torch.zeros((), dtype=y.dtype, device=y.device))


# ---------------------------------------------------------------------------------------------
# gathering helpers


def _gather_hw(t: Tensor, idx: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Per-sample gather of the flattened last two dims: ``idx`` is ``[B, h*w]`` into ``H*W``."""
    lead = t.shape[:-2]
    flat = t.reshape(t.shape[0], -1, t.shape[-2] * t.shape[-1])
    gathered = flat.gather(2, idx.unsqueeze(1).expand(-1, flat.shape[1], -1))
    return gathered.reshape(*lead, *out_hw)


def _gather_all(
    x: Tensor, mask: Tensor | None, valid: Tensor | None, idx: Tensor, out_hw: tuple[int, int]
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    return (
        _gather_hw(x, idx, out_hw),
        _gather_hw(mask, idx, out_hw) if mask is not None else None,
        _gather_hw(valid, idx, out_hw) if valid is not None else None,
    )


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


# ---------------------------------------------------------------------------------------------
# D4


def d4_index(elements: Tensor, height: int, width: int) -> Tensor:
    """Source index ``[B, H*W]`` of each output pixel for D4 elements ``[B]`` in 0..7.

    Element ``g`` = flip rows if bit 0, flip columns if bit 1, then transpose if bit 2 (so
    0 = identity, 3 = rotation by 180 degrees, 5 and 6 = rotations by 90 degrees). Transposing
    needs a square image.
    """
    g = elements.long().view(-1, 1, 1)
    if height != width and bool((g >= 4).any()):
        raise ConfigError(f"D4 transposition needs square images, got {height}x{width}")
    dev = elements.device
    i = torch.arange(height, device=dev).view(1, -1, 1)
    j = torch.arange(width, device=dev).view(1, 1, -1)
    transpose = (g & 4) != 0
    a = torch.where(transpose, j, i)  # row read before the transposition
    b = torch.where(transpose, i, j)
    src_i = torch.where((g & 1) != 0, height - 1 - a, a)
    src_j = torch.where((g & 2) != 0, width - 1 - b, b)
    return (src_i * width + src_j).reshape(elements.shape[0], -1)


def d4_inverse(elements: Tensor) -> Tensor:
    """The inverse D4 elements: flips commute with themselves; with a transposition the row
    and column flips swap."""
    g = elements.long()
    swapped = (g & 4) | ((g & 1) << 1) | ((g & 2) >> 1)
    return torch.where((g & 4) != 0, swapped, g)


def d4_transform(t: Tensor, elements: Tensor) -> Tensor:
    """Apply per-sample D4 elements to ``t`` of shape ``[B, ..., H, W]``."""
    h, w = t.shape[-2:]
    return _gather_hw(t, d4_index(elements.to(t.device), h, w), (h, w))


def d4_augment(
    x: Tensor,
    mask: Tensor,
    valid: Tensor,
    generator: torch.Generator | None = None,
    elements: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """A random element of the dihedral group D4 per sample, the same for image, mask and valid.

    Square inputs draw from all 8 elements; non-square inputs only from the 4 flips (a
    transposition would change the shape). ``elements`` ([B] ints in 0..7) fixes the choice;
    see :func:`d4_index` for the numbering.
    """
    bsz, _, h, w = x.shape
    if elements is None:
        elements = _randint(8 if h == w else 4, bsz, generator, x.device)
    idx = d4_index(elements.to(x.device), h, w)
    out, m, v = _gather_all(x, mask, valid, idx, (h, w))
    assert m is not None and v is not None
    return out, m, v


# ---------------------------------------------------------------------------------------------
# imaged windows


def _mirror_index(n: int, start: Tensor, length: Tensor) -> Tensor:
    """``[B, n]`` source positions: the span ``[start, start + length)`` mirrored outward
    (edge pixels repeated, as numpy's ``symmetric`` padding) over ``0 .. n-1``."""
    offset = torch.arange(n, device=start.device).view(1, -1) - start.view(-1, 1)
    period = 2 * length.view(-1, 1)
    folded = torch.remainder(offset, period)
    return start.view(-1, 1) + torch.where(folded < length.view(-1, 1), folded, period - 1 - folded)


def mirror_windows(x: Tensor, mask: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Chips whose valid pixels form a rectangle smaller than the chip (an imaged window in
    nodata) get the window mirrored outward over the whole chip, image, mask and valid alike.

    Chip sets cut to their labels (a window around each plant) tell a model where the plant is
    by the window's shape; mirrored, only the pixels do. Other chips are returned unchanged.
    """
    bsz, _, h, w = x.shape
    rows, cols = valid.any(dim=2), valid.any(dim=1)
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    area = (y1 - y0).clamp(min=0) * (x1 - x0).clamp(min=0)
    window = (area > 0) & (area < h * w) & (valid.sum(dim=(1, 2)) == area)
    y0, x0 = torch.where(window, y0, 0), torch.where(window, x0, 0)
    y1, x1 = torch.where(window, y1, h), torch.where(window, x1, w)
    ys = _mirror_index(h, y0, y1 - y0)
    xs = _mirror_index(w, x0, x1 - x0)
    idx = (ys.view(bsz, h, 1) * w + xs.view(bsz, 1, w)).reshape(bsz, -1)
    out, m, v = _gather_all(x, mask, valid, idx, (h, w))
    assert m is not None and v is not None
    return out, m, v


# ---------------------------------------------------------------------------------------------
# crops


def random_crop(
    x: Tensor,
    mask: Tensor,
    valid: Tensor,
    size: int,
    generator: torch.Generator | None = None,
    pv_prob: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """A ``size`` x ``size`` crop at a random offset per sample, the same for image/mask/valid.

    With ``pv_prob`` > 0, each sample that holds PV gets, with that probability, a crop placed
    around one of its PV pixels (drawn uniformly among them, at a uniform position inside the
    crop); the others get a uniform offset. All on the device, no host synchronisation.

    Raises:
        ConfigError: the crop is larger than the images.
    """
    bsz, _, h, w = x.shape
    if size > h or size > w or size < 1:
        raise ConfigError(f"crop size {size} does not fit images of {h}x{w} px")
    if size == h and size == w:
        return x, mask, valid
    oy = _randint(h - size + 1, bsz, generator, x.device)
    ox = _randint(w - size + 1, bsz, generator, x.device)
    if pv_prob > 0:
        oy, ox = _pv_offsets(mask, valid, size, oy, ox, pv_prob, generator)
    ar = torch.arange(size, device=x.device)
    rows = (oy.view(-1, 1) + ar).view(bsz, size, 1)
    cols = (ox.view(-1, 1) + ar).view(bsz, 1, size)
    idx = (rows * w + cols).reshape(bsz, -1)
    out, m, v = _gather_all(x, mask, valid, idx, (size, size))
    assert m is not None and v is not None
    return out, m, v


def _pv_offsets(
    mask: Tensor,
    valid: Tensor,
    size: int,
    oy: Tensor,
    ox: Tensor,
    pv_prob: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Crop offsets around a random PV pixel, for a ``pv_prob`` share of the samples with PV."""
    bsz, h, w = mask.shape
    gen_device = generator.device if generator is not None else mask.device
    u = torch.rand(4, bsz, generator=generator, device=gen_device).to(mask.device)
    pv = ((mask == 1) & valid).reshape(bsz, -1)
    cum = pv.to(torch.int32).cumsum(1)
    count = cum[:, -1]
    # the k-th PV pixel (0-based) is the first position where the running count exceeds k
    k = (u[0] * count).floor().to(torch.int32).clamp(max=(count - 1).clamp(min=0))
    pix = torch.searchsorted(cum, k.unsqueeze(1), right=True).squeeze(1).clamp(max=h * w - 1)
    py, px = pix // w, pix % w
    cy = (py - (u[1] * size).floor().long()).clamp(0, h - size)
    cx = (px - (u[2] * size).floor().long()).clamp(0, w - size)
    use = (u[3] < pv_prob) & (count > 0)
    return torch.where(use, cy, oy), torch.where(use, cx, ox)


# ---------------------------------------------------------------------------------------------
# resolution changes


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad ``[B, C, H, W]`` at the bottom/right so H and W divide by ``multiple``.

    Reflect padding where the input is large enough, else replicate; crop the model's
    output back with ``[..., :H, :W]``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)


def _check_factor(factor: int) -> int:
    if int(factor) != factor or factor < 1:
        raise ConfigError(f"upscale factor must be a positive integer, got {factor}")
    return int(factor)


def upscale_valid(valid: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour upscale of a ``[B, H, W]`` bool mask."""
    f = _check_factor(factor)
    if f == 1:
        return valid
    return valid.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


def upscale_mask(mask: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour upscale of a label mask ``[B, H, W]`` (any dtype, values kept)."""
    return upscale_valid(mask, factor)


def upscale_batch(
    x: Tensor,
    valid: Tensor,
    factor: int,
    method: str = "bicubic",
    sr: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """Upscale normalised images ``[B, C, H, W]`` and their valid mask by ``factor``.

    Invalid input pixels are set to 0 (the band mean in normalised space) before interpolating;
    ``valid`` is upscaled by nearest neighbour and invalid output pixels are set to 0.

    Args:
        x: normalised images (see :func:`normalize`).
        valid: ``[B, H, W]`` bool.
        factor: integer scale factor (1 returns the inputs).
        method: ``"bicubic"`` or ``"sr"`` (super-resolution with ``sr``, e.g. from
            :func:`load_sr_model` configured with the same normalisation statistics).
        sr: the super-resolution module for ``method="sr"``.
    """
    f = _check_factor(factor)
    if method not in UPSCALE_METHODS:
        raise ConfigError(f"unknown upscale method {method!r}; use one of {UPSCALE_METHODS}")
    if f == 1:
        return x, valid
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    x = torch.where(valid.unsqueeze(1), x, zero)
    if method == "bicubic":
        up = F.interpolate(x, scale_factor=f, mode="bicubic", align_corners=False)
    else:
        if sr is None:
            raise ConfigError("upscale method 'sr' needs a super-resolution model (--sr-weights)")
        model_scale = getattr(sr, "scale", f)
        if model_scale != f:
            raise ConfigError(f"the super-resolution model upscales x{model_scale}, not x{f}")
        up = sr(x)
    v = upscale_valid(valid, f)
    up = torch.where(v.unsqueeze(1), up.to(x.dtype), zero)
    return up, v


def downscale_probs(probs: Tensor, factor: int, valid: Tensor | None = None) -> Tensor:
    """Average ``factor`` x ``factor`` blocks back to the native grid.

    Args:
        probs: ``[B, H, W]`` or ``[B, 1, H, W]`` at the upscaled resolution (H, W multiples of
            ``factor``).
        factor: the upscale factor.
        valid: optional ``[B, H, W]`` upscaled valid mask: only valid sub-pixels are averaged
            (blocks with none give 0).
    """
    f = _check_factor(factor)
    squeeze = probs.ndim == 3
    p = probs.unsqueeze(1) if squeeze else probs
    if f == 1:
        out = p
    elif valid is None:
        out = F.avg_pool2d(p.float(), f)
    else:
        w = valid.unsqueeze(1).float() if valid.ndim == 3 else valid.float()
        num = F.avg_pool2d(p.float() * w, f)
        den = F.avg_pool2d(w, f)
        out = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    return out.squeeze(1) if squeeze else out


# ---------------------------------------------------------------------------------------------
# super-resolution
