"""Super-resolution networks (ESRGAN / Real-ESRGAN family, loaded with spandrel) for multispectral
chips: RGB through the network, NIR as a grey image or bicubic, tiled with cropped overlap.

spandrel is an optional dependency (``pip install 'pvdetect[sr]'``); without it, asking for a
super-resolution model is a one-line :class:`~pvdetect.errors.ConfigError` naming the extra.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pvdetect.errors import ConfigError
from pvdetect.extras import require
from pvdetect.model.factory import read_state_dict

__all__ = ["SRModel", "load_sr_model"]


def _spandrel() -> ModuleType:
    """The spandrel package, or a ConfigError saying which extra installs it."""
    return require("spandrel", "sr", "super-resolution upscaling")


class SRModel(nn.Module):
    """A frozen 3-channel RGB super-resolution network applied to multispectral chips.

    Input space: raw reflectance by default, or normalised values when ``mean``/``std`` are given
    (then the input is first mapped back to reflectance). Reflectance is mapped to [0, 1] per band
    with ``(r - lo) / (hi - lo)`` (clipped; default lo=0, hi=10000, i.e. reflectance / 10000),
    the network runs on the R, G, B bands, and its [0, 1] output is mapped back. Values beyond
    ``hi`` are clipped to ``hi``.

    Other bands (NIR): ``nir="sr"`` replicates the band to three channels, runs the network and
    takes the mean of its three output channels (the network sees a grey image);
    ``nir="bicubic"`` interpolates it bicubically instead.

    The network runs tile by tile (``tile`` px cores with ``overlap`` px of context on every side
    that is cropped from the output), so memory stays bounded whatever the input size; with an
    overlap at least the network's receptive radius the result equals an untiled run. It runs in
    whatever autocast precision is active (disabled when the network does not support it), without
    gradients.
    """

    def __init__(
        self,
        net: nn.Module,
        scale: int,
        *,
        multiple_of: int = 1,
        supports_half: bool = True,
        supports_bfloat16: bool = True,
        lo: float | Sequence[float] = 0.0,
        hi: float | Sequence[float] = 10000.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        nir: str = "sr",
        rgb: Sequence[int] = (0, 1, 2),
        tile: int = 128,
        overlap: int = 16,
    ) -> None:
        super().__init__()
        if nir not in ("sr", "bicubic"):
            raise ConfigError(f"unknown NIR handling {nir!r}; use 'sr' or 'bicubic'")
        if tile < 8 or overlap < 0:
            raise ConfigError(f"SR tile must be >= 8 px and overlap >= 0, got {tile}, {overlap}")
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.scale = int(scale)
        self.multiple_of = max(int(multiple_of), 1)
        self.supports_half = supports_half
        self.supports_bfloat16 = supports_bfloat16
        self.nir = nir
        self.rgb = tuple(int(c) for c in rgb)
        self.tile = int(tile)
        self.overlap = int(overlap)
        self.register_buffer("lo", torch.as_tensor(lo, dtype=torch.float32).flatten(), False)
        self.register_buffer("hi", torch.as_tensor(hi, dtype=torch.float32).flatten(), False)
        self.normalized = mean is not None
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std for normalised input, or neither")
        self.register_buffer(
            "mean", torch.as_tensor(mean if mean is not None else [0.0], dtype=torch.float32), False
        )
        self.register_buffer(
            "std", torch.as_tensor(std if std is not None else [1.0], dtype=torch.float32), False
        )

    def train(self, mode: bool = True) -> SRModel:
        """The network stays in eval mode (it is frozen)."""
        super().train(mode)
        self.net.eval()
        return self

    def _vec(self, t: Tensor, channels: int) -> Tensor:
        v = t if t.numel() != 1 else t.expand(channels)
        if v.numel() != channels:
            raise ConfigError(f"SR band range has {v.numel()} values for {channels} bands")
        return v.view(1, -1, 1, 1)

    def _autocast_ok(self, device_type: str) -> bool:
        if not torch.is_autocast_enabled(device_type):
            return True
        dtype = torch.get_autocast_dtype(device_type)
        if dtype == torch.bfloat16:
            return self.supports_bfloat16
        if dtype == torch.float16:
            return self.supports_half
        return True

    def run_net(self, rgb01: Tensor) -> Tensor:
        """Run the network on ``[N, 3, H, W]`` in [0, 1], tiled; returns ``[N, 3, sH, sW]``."""
        n, _, h, w = rgb01.shape
        s = self.scale
        out = rgb01.new_zeros((n, 3, h * s, w * s), dtype=torch.float32)
        dev = rgb01.device.type
        with torch.no_grad(), torch.autocast(dev, enabled=self._autocast_ok(dev)):
            for y0 in range(0, h, self.tile):
                for x0 in range(0, w, self.tile):
                    y1, x1 = min(y0 + self.tile, h), min(x0 + self.tile, w)
                    ya, xa = max(y0 - self.overlap, 0), max(x0 - self.overlap, 0)
                    yb, xb = min(y1 + self.overlap, h), min(x1 + self.overlap, w)
                    patch = rgb01[:, :, ya:yb, xa:xb]
                    ph, pw = patch.shape[-2:]
                    m = self.multiple_of
                    pad_h, pad_w = (-ph) % m, (-pw) % m
                    if pad_h or pad_w:
                        patch = F.pad(patch, (0, pad_w, 0, pad_h), mode="replicate")
                    res = self.net(patch).float().clamp(0, 1)
                    res = res[:, :, (y0 - ya) * s : (y1 - ya) * s, (x0 - xa) * s : (x1 - xa) * s]
                    out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = res
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Upscale ``[B, C, H, W]`` (C >= 3, bands ``rgb`` first three used as R, G, B)."""
        bsz, c, h, w = x.shape
        if c < 3:
            raise ConfigError(f"super-resolution needs at least the 3 RGB bands, got {c} bands")
        xf = x.float()
        if self.normalized:
            xf = xf * self._vec(self.std, c) + self._vec(self.mean, c)
        lo, hi = self._vec(self.lo, c), self._vec(self.hi, c)
        span = (hi - lo).clamp_min(1e-6)
        unit = ((xf - lo) / span).clamp(0, 1)
        others = [i for i in range(c) if i not in self.rgb]
        rgb_in = unit[:, list(self.rgb)]
        if others and self.nir == "sr":
            grey = unit[:, others].reshape(bsz * len(others), 1, h, w).expand(-1, 3, -1, -1)
            res = self.run_net(torch.cat([rgb_in, grey], dim=0))
            rgb_out = res[:bsz]
            extra = res[bsz:].mean(dim=1).reshape(bsz, len(others), h * self.scale, -1)
        else:
            rgb_out = self.run_net(rgb_in)
            extra = None
            if others:
                extra = F.interpolate(
                    unit[:, others], scale_factor=self.scale, mode="bicubic", align_corners=False
                )
        out = torch.empty((bsz, c, h * self.scale, w * self.scale), device=x.device)
        out[:, list(self.rgb)] = rgb_out
        if extra is not None:
            out[:, others] = extra.float()
        refl = out * span + lo
        if self.normalized:
            refl = (refl - self._vec(self.mean, c)) / self._vec(self.std, c)
        return refl.to(x.dtype)


def load_sr_model(
    path: str | os.PathLike,
    factor: int | None = None,
    *,
    lo: float | Sequence[float] = 0.0,
    hi: float | Sequence[float] = 10000.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    nir: str = "sr",
    tile: int = 128,
    overlap: int = 16,
) -> SRModel:
    """Load an ESRGAN / Real-ESRGAN family network (``.pth`` or ``.safetensors``) with spandrel.

    The file is read without unpickling code (``torch.load(weights_only=True)`` or
    safetensors) and the architecture is detected by spandrel. Any spandrel RGB-to-RGB
    super-resolution model works; see :class:`SRModel` for the band handling.

    Args:
        path: weights file.
        factor: expected scale; a different model scale is a :class:`ConfigError`.
        lo, hi: reflectance mapped to 0 and 1 (scalars or per band).
        mean, std: give them when the input is normalised (as in :func:`upscale_batch`).
        nir: ``"sr"`` or ``"bicubic"``, see :class:`SRModel`.
        tile, overlap: tiling of the network input in px.
    """
    spandrel = _spandrel()

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: super-resolution weights file not found")
    state = read_state_dict(p)
    state = spandrel.canonicalize_state_dict(state)
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise ConfigError(f"{p}: not a super-resolution model spandrel recognises") from None
    except Exception as exc:  # noqa: BLE001 - architecture detection raises many types
        raise ConfigError(f"{p}: cannot load super-resolution model ({exc})") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise ConfigError(f"{p}: not an image-to-image model ({type(desc).__name__})")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise ConfigError(
            f"{p}: needs an RGB model (3 channels in and out), this one has "
            f"{desc.input_channels} in, {desc.output_channels} out"
        )
    if factor is not None and desc.scale != factor:
        raise ConfigError(f"{p}: the model upscales x{desc.scale}, but the factor is {factor}")
    if desc.scale < 1:
        raise ConfigError(f"{p}: unsupported model scale {desc.scale}")
    req = desc.size_requirements
    multiple = max(getattr(req, "multiple_of", 1) or 1, 1)
    minimum = getattr(req, "minimum", 0) or 0
    tile = max(tile, minimum, 8)
    tile = math.ceil(tile / multiple) * multiple
    return SRModel(
        desc.model,
        desc.scale,
        multiple_of=multiple,
        supports_half=bool(desc.supports_half),
        supports_bfloat16=bool(desc.supports_bfloat16),
        lo=lo,
        hi=hi,
        mean=mean,
        std=std,
        nir=nir,
        tile=tile,
        overlap=overlap,
    )
