"""A loaded bundle in memory: metadata, the torch network and the training's preprocessing.

:func:`pvdetect.model.bundle.load_bundle` builds it from a bundle on disk;
:class:`pvdetect.model.onnx_runtime.OnnxBundle` is the same interface over onnxruntime.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pvdetect.device import autocast
from pvdetect.model.bundle_meta import BundleMeta
from pvdetect.model.preprocessing import Preprocessor, run_model, tta_elements, tta_probs

__all__ = ["Bundle", "bundle_preprocessor"]


def bundle_preprocessor(meta: BundleMeta, sr: nn.Module | None = None) -> Preprocessor:
    """The training's preprocessing of a bundle: its band statistics, upscaling, input scale."""
    stats = meta.band_stats
    return Preprocessor(
        stats["mean"],
        stats["std"],
        factor=int(meta.upscale.factor),
        method=meta.upscale.method,
        sr=sr,
        input_scale=float(meta.input_scale),
    )


class Bundle:
    """A loaded bundle: metadata, model, and the preprocessing used in training."""

    def __init__(self, meta: BundleMeta, model: nn.Module, sr: nn.Module | None = None) -> None:
        self.meta = meta
        self.model = model.eval()
        self.device = torch.device("cpu")
        self.pre = bundle_preprocessor(meta, sr)

    @property
    def factor(self) -> int:
        """Upscaling factor applied before the model."""
        return int(self.meta.upscale.factor)

    @property
    def sr(self) -> nn.Module | None:
        """The super-resolution network of an ``sr`` bundle."""
        return self.pre.sr

    @property
    def multiple(self) -> int:
        """Input side the model needs to be divisible by."""
        from pvdetect.model.factory import required_multiple

        return required_multiple(self.meta.arch, self.meta.encoder)

    def to(self, device: str | torch.device) -> Bundle:
        """Move model (channels_last), statistics and SR network to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device, memory_format=torch.channels_last)
        self.pre.to(self.device)
        return self

    @torch.inference_mode()
    def predict_probs(
        self, raw: Tensor, valid: Tensor, tta: bool = False, native: bool = True
    ) -> Tensor:
        """PV probabilities for raw reflectance tiles.

        Args:
            raw: ``[B, C, H, W]`` reflectance in the bundle's band order (nodata anywhere).
            valid: ``[B, H, W]`` bool, True where the pixel is valid.
            tta: average the flips/rotations of the dihedral group (8 for square tiles).
            native: with an upscaling bundle, average the upscaled prediction back onto the
                input grid (True) or return it at the upscaled resolution (False).

        Returns:
            float32 ``[B, H', W']`` probabilities, 0 at invalid pixels.
        """
        raw = raw.to(self.device, torch.float32, non_blocking=True)
        valid = valid.to(self.device, non_blocking=True).bool()
        x, _ = self.pre.model_input(raw, valid)
        elements = tta_elements(*x.shape[-2:]) if tta else (0,)
        probs = tta_probs(self._forward, x, elements)
        return self.pre.output_probs(probs, valid, native)

    def _forward(self, x: Tensor) -> Tensor:
        """Sigmoid of the model on normalised input ``[B, C, H, W]`` -> ``[B, H, W]``."""
        with autocast(self.device):
            logits = run_model(self.model, x, self.multiple)
        return torch.sigmoid(logits.float())[:, 0]
