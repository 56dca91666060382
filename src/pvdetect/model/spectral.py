"""Spectral augmentation of raw reflectance batches, on the device and vectorised.

A model trained in one region meets other soils, vegetation states, sensors' calibrations and
atmospheres elsewhere. :func:`spectral_augment` perturbs each training sample's spectrum the way
those differ, in reflectance units (x 10000), before normalisation:

    y = (x * gain_b * brightness + offset_b) * (1 - h / 10000) + h * haze_b

with ``gain_b ~ U(1 - G, 1 + G)`` and ``offset_b ~ U(-O, O)`` per band, ``brightness ~ U(1 - B,
1 + B)`` and ``h ~ U(0, H)`` per sample, and ``haze_b`` the band shape of a hazy path
reflectance (strongest in blue: Red 0.7, Green 0.85, Blue 1.0, NIR 0.5 for the 4-band order
Red, Green, Blue, NIR; flat for other band counts). Results are clipped at 0. A share ``p`` of
the samples is augmented, the others pass unchanged; invalid (nodata) pixels are never
touched. All random numbers come from the given generator, so a seeded run repeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["HAZE_SHAPE", "SpectralJitter", "spectral_augment"]

#: relative haze reflectance of Red, Green, Blue, NIR (Rayleigh-like: strongest in blue)
HAZE_SHAPE = (0.7, 0.85, 1.0, 0.5)


@dataclass(frozen=True)
class SpectralJitter:
    """Ranges of :func:`spectral_augment` (see the module docstring).

    Attributes:
        p: Share of the samples augmented.
        gain: Per-band gain half-range G (relative).
        offset: Per-band offset half-range O (reflectance x 10000).
        brightness: Common gain half-range B (relative).
        haze: Largest haze reflectance H (x 10000).
    """

    p: float = 0.8
    gain: float = 0.08
    offset: float = 100.0
    brightness: float = 0.15
    haze: float = 300.0


def _uniform(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator | None,
             device: torch.device) -> Tensor:  # fmt: skip
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float32)
    return (lo + (hi - lo) * u).to(device)


def spectral_augment(
    x: Tensor,
    valid: Tensor,
    jitter: SpectralJitter,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Jitter the spectra of a batch of raw reflectance (a new tensor; ``x`` is unchanged).

    Args:
        x: Raw reflectance ``[B, C, H, W]`` (x 10000).
        valid: ``[B, H, W]`` bool; pixels that are False keep their value.
        jitter: The ranges.
        generator: Source of the random numbers (CPU or the device's).

    Returns:
        float32 ``[B, C, H, W]``.
    """
    b, c = x.shape[:2]
    dev = x.device
    gain = _uniform((b, c), 1.0 - jitter.gain, 1.0 + jitter.gain, generator, dev)
    offset = _uniform((b, c), -jitter.offset, jitter.offset, generator, dev)
    bright = _uniform((b, 1), 1.0 - jitter.brightness, 1.0 + jitter.brightness, generator, dev)
    haze = _uniform((b, 1), 0.0, jitter.haze, generator, dev)
    pick = _uniform((b,), 0.0, 1.0, generator, dev) < jitter.p
    shape = torch.tensor(HAZE_SHAPE if c == len(HAZE_SHAPE) else (1.0,) * c, device=dev)
    scale = gain * bright * (1.0 - haze / 10000.0)
    shift = offset * (1.0 - haze / 10000.0) + haze * shape.view(1, c)
    xf = x.float()
    y = (xf * scale.view(b, c, 1, 1) + shift.view(b, c, 1, 1)).clamp_(min=0.0)
    keep = valid.bool().unsqueeze(1) & pick.view(b, 1, 1, 1)
    return torch.where(keep, y, xf)
