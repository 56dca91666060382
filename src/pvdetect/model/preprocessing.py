"""The one preprocessing path: raw reflectance to model input, model output to probabilities.

Training-time validation (:class:`~pvdetect.training.task.SegmentationTask`), ``evaluate`` and
``predict`` (both through :class:`~pvdetect.model.bundle.Bundle`) all go through
:class:`Preprocessor` and :func:`run_model`, so what the network sees and how its output comes
back to the chip grid can never differ between them:

1. ``raw * input_scale`` normalised with the training-split band statistics, invalid pixels 0;
2. upscaled (bicubic or super-resolution) when the bundle upscales, valid mask by nearest;
3. padded to the model's multiple, run in channels_last, cropped back (:func:`run_model`);
4. probabilities averaged back onto the input grid (``native``), invalid pixels 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pvdetect.model.transforms import (
    d4_inverse,
    d4_transform,
    downscale_probs,
    normalize,
    pad_to_multiple,
    upscale_batch,
    upscale_valid,
)

__all__ = ["Preprocessor", "run_model", "tta_elements"]


class Preprocessor(nn.Module):
    """Normalisation and upscaling of raw tiles, and the way back to their grid.

    Args:
        mean: per-band mean of the training split (valid pixels only).
        std: per-band standard deviation of the training split.
        factor: upscaling factor (1: none).
        method: ``bicubic`` or ``sr``.
        sr: the super-resolution network for ``sr`` (see :mod:`pvdetect.model.sr`).
        sr_loader: called once, on first use, to load ``sr`` lazily (training).
        input_scale: multiplies the raw values before normalisation.

    The statistics are buffers that are not saved in state dicts (they come from the bundle's
    metadata or the task's hyper-parameters); the SR network is kept out of the module tree
    (frozen, never checkpointed) but follows :meth:`to`.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        factor: int = 1,
        method: str = "bicubic",
        sr: nn.Module | None = None,
        sr_loader: Callable[[], nn.Module] | None = None,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.factor = int(factor)
        self.method = method
        self.input_scale = float(input_scale)
        self.__dict__["_sr"] = sr.eval() if sr is not None else None
        self._sr_loader = sr_loader

    @property
    def sr(self) -> nn.Module | None:
        """The super-resolution network (``method="sr"``), loaded on first use."""
        if self.factor == 1 or self.method != "sr":
            return None
        sr = self.__dict__["_sr"]
        if sr is None and self._sr_loader is not None:
            sr = self._sr_loader().eval()
            for p in sr.parameters():
                p.requires_grad_(False)
            self.__dict__["_sr"] = sr
        if sr is not None:
            param = next(sr.parameters(), None)
            if param is not None and param.device != self.mean.device:
                sr.to(self.mean.device)
        return sr

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        super()._apply(fn, recurse)
        sr = self.__dict__.get("_sr")
        if sr is not None:
            sr._apply(fn, recurse)
        return self

    def model_input(self, raw: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised (and upscaled) model input and its valid mask at model resolution.

        Args:
            raw: ``[B, C, H, W]`` reflectance in the bundle's band order (any value where
                invalid).
            valid: ``[B, H, W]`` bool, True where the pixel is valid.
        """
        scaled = raw if self.input_scale == 1.0 else raw * self.input_scale
        x = normalize(scaled, valid, self.mean, self.std)
        if self.factor > 1:
            return upscale_batch(x, valid, self.factor, self.method, self.sr)
        return x, valid

    def upscaled_valid(self, valid: Tensor) -> Tensor:
        """``valid`` at model resolution (nearest upscaling)."""
        return upscale_valid(valid, self.factor)

    def output_probs(self, probs: Tensor, valid: Tensor, native: bool = True) -> Tensor:
        """Probabilities at model resolution back to the input grid (``native``) or kept
        upscaled; invalid pixels are 0.

        Args:
            probs: ``[B, H', W']`` probabilities at model resolution.
            valid: ``[B, H, W]`` valid mask of the input grid.
            native: average ``factor`` x ``factor`` blocks back onto the input grid.
        """
        if self.factor == 1:
            return probs * valid
        if native:
            return downscale_probs(probs, self.factor) * valid
        return probs * self.upscaled_valid(valid)


def run_model(model: nn.Module, x: Tensor, multiple: int) -> Tensor:
    """Logits ``[B, 1, H, W]`` of ``x`` padded to ``multiple``, in channels_last, cropped back."""
    h, w = x.shape[-2:]
    x = pad_to_multiple(x, multiple).contiguous(memory_format=torch.channels_last)
    return model(x)[..., :h, :w]


def tta_elements(height: int, width: int) -> tuple[int, ...]:
    """The D4 elements averaged by test-time augmentation: all 8 for square inputs, else the
    4 flips (a transposition would change the shape); numbering of
    :func:`~pvdetect.model.transforms.d4_index`."""
    return tuple(range(8)) if height == width else (0, 1, 2, 3)


def tta_probs(forward: Callable[[Tensor], Tensor], x: Tensor, elements: Sequence[int]) -> Tensor:
    """Mean of ``forward`` (``[B, C, H, W]`` -> probabilities ``[B, H, W]``) over the D4
    ``elements`` of ``x``, each mapped back with its inverse."""
    total: Tensor | None = None
    for k in elements:
        if k == 0:
            out = forward(x)
        else:
            g = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            out = d4_transform(forward(d4_transform(x, g)), d4_inverse(g))
        total = out if total is None else total + out
    assert total is not None
    return total / len(elements)
