"""Segmentation losses for binary PV masks with ignored (nodata) pixels.

Every loss is an ``nn.Module`` called as ``loss(logits, target, valid)``:

- ``logits``: ``[B, 1, H, W]`` or ``[B, H, W]``, any float dtype (raw scores, not probabilities);
- ``target``: ``[B, H, W]``, uint8 or float, ``{0, 1}`` (float soft labels in ``[0, 1]`` are
  accepted by the BCE, focal, Jaccard and Dice terms); the value 255 marks an ignored pixel;
- ``valid``: ``[B, H, W]`` bool, or ``None`` meaning ``target != 255``. A pixel counts only when it
  is valid *and* its target is not 255.

Shared properties of all losses:

- computed in float32 from the logits (log-sigmoid / softplus formulations), also under bf16 or
  fp16 autocast (autocast is switched off inside and the logits are upcast), so they stay finite
  for extreme logits;
- ignored pixels are excluded exactly: their logits and targets are replaced by constants with
  ``torch.where`` before anything else, so changing them changes neither the value nor the
  gradients, and the gradient reaching their logits is exactly zero (also for NaN/inf logits);
- no host synchronisation (no ``.item()``, no boolean indexing, no Python branching on tensor
  values): safe inside compiled / CUDA-graph training steps;
- a batch without any counted pixel gives a loss of 0 (with zero gradients), never NaN.

Names for :func:`build_loss` and their parameters (all optional):

=====================  ======================================================================
``bce_focal_jaccard``  ``bce_weight`` 0.3, ``focal_weight`` 0.3, ``jaccard_weight`` 0.4, plus the
                       parameters of the three terms below (the default training loss)
``bce``                ``pos_weight`` 2.0, ``neg_weight`` 1.0
``focal``              ``alpha`` 0.8, ``gamma`` 1.5
``jaccard``            ``pv_weight`` 0.85, ``background_weight`` 0.15, ``eps`` 1.0
``dice``               ``eps`` 1.0
``lovasz``             ``per_image`` True
=====================  ======================================================================

Definitions (``m`` = counted-pixel mask, ``p = sigmoid(x)``, sums over the masked pixels):

- weighted BCE: per-pixel weight ``w = pos_weight * t + neg_weight * (1 - t)``;
  ``sum(m * w * bce(x, t)) / sum(m * w)`` (a weighted mean over counted pixels);
- focal: ``-alpha_t (1 - p_t)^gamma log(p_t)`` with ``alpha_t = alpha`` on positives and
  ``1 - alpha`` on negatives, averaged over counted pixels;
- soft Jaccard of a class: ``1 - (I + eps) / (U + eps)`` with ``I = sum(p t)``,
  ``U = sum(p) + sum(t) - I`` summed over the *whole batch* (not per image), from probabilities
  (never thresholded); ``eps`` (default 1, i.e. one pixel) smooths batches without PV. The Jaccard
  loss is ``pv_weight * J(PV) + background_weight * J(background)`` where the background class uses
  ``1 - p`` and ``1 - t``;
- soft Dice of the PV class: ``1 - (2 I + eps) / (sum(p) + sum(t) + eps)``, over the whole batch;
- Lovasz hinge (Berman et al. 2018, binary case): the Lovasz extension of the Jaccard loss applied
  to the hinge errors ``1 - x (2t - 1)``, per image (averaged over images that have counted
  pixels) or over the whole batch; targets are binarised at 0.5.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pvdetect.data.raster import IGNORE_INDEX
from pvdetect.errors import ConfigError

__all__ = [
    "LOSSES",
    "BCEFocalJaccardLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszHingeLoss",
    "SoftJaccardLoss",
    "WeightedBCELoss",
    "build_loss",
    "prepare_inputs",
]


def prepare_inputs(
    logits: Tensor, target: Tensor, valid: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Bring loss inputs to float32 ``[B, H, W]`` with ignored pixels neutralised.

    Args:
        logits: ``[B, 1, H, W]`` or ``[B, H, W]`` raw scores.
        target: ``[B, H, W]`` labels in ``{0, 1}`` (255 = ignored).
        valid: ``[B, H, W]`` bool or ``None`` (then ``target != 255``).

    Returns:
        ``(x, t, m)``: float32 logits (0 at ignored pixels), float32 targets (0 at ignored
        pixels) and the float32 0/1 mask of counted pixels.

    Raises:
        ValueError: if the shapes do not fit together.
    """
    if logits.dim() == 4:
        if logits.shape[1] != 1:
            raise ValueError(
                f"binary losses need logits with 1 channel, got shape {tuple(logits.shape)}"
            )
        logits = logits[:, 0]
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B,1,H,W] or [B,H,W], got {tuple(logits.shape)}")
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
        )
    keep = target != IGNORE_INDEX
    if valid is not None:
        if valid.dim() == 4 and valid.shape[1] == 1:
            valid = valid[:, 0]
        if valid.shape != logits.shape:
            raise ValueError(
                f"valid shape {tuple(valid.shape)} does not match logits {tuple(logits.shape)}"
            )
        keep = keep & valid.to(device=keep.device, dtype=torch.bool)
    keep = keep.to(logits.device)
    zero = torch.zeros((), dtype=torch.float32, device=logits.device)
    x = torch.where(keep, logits.float(), zero)
    t = torch.where(keep, target.to(device=logits.device, dtype=torch.float32), zero)
    return x, t, keep.float()


def _check_number(name: str, value: Any, low: float = 0.0, high: float = math.inf) -> float:
    """A finite float in ``[low, high]`` or a ConfigError naming the parameter."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"loss parameter {name} must be a number, got {value!r}") from None
    if not math.isfinite(out) or not low <= out <= high:
        raise ConfigError(f"loss parameter {name} must be in [{low}, {high}], got {value!r}")
    return out


class _MaskedLoss(nn.Module):
    """Base: runs :meth:`compute` in float32 with autocast disabled."""

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """The scalar float32 loss (see the module docstring for the arguments)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x, t, m = prepare_inputs(logits, target, valid)
            return self.compute(x, t, m)

    def compute(self, x: Tensor, t: Tensor, m: Tensor) -> Tensor:  # pragma: no cover
        """The loss from prepared float32 logits, targets and mask."""
        raise NotImplementedError


class WeightedBCELoss(_MaskedLoss):
    """Binary cross-entropy with class weights, a weighted mean over counted pixels.

    Args:
        pos_weight: weight of a PV pixel (default 2).
        neg_weight: weight of a background pixel (default 1).
    """

    def __init__(self, pos_weight: float = 2.0, neg_weight: float = 1.0) -> None:
        super().__init__()
        self.pos_weight = _check_number("pos_weight", pos_weight)
        self.neg_weight = _check_number("neg_weight", neg_weight)

    def compute(self, x: Tensor, t: Tensor, m: Tensor) -> Tensor:
        """Weighted mean BCE."""
        per_pixel = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        w = m * (self.pos_weight * t + self.neg_weight * (1.0 - t))
        return (w * per_pixel).sum() / w.sum().clamp_min(1e-12)

    def extra_repr(self) -> str:
        return f"pos_weight={self.pos_weight}, neg_weight={self.neg_weight}"


class FocalLoss(_MaskedLoss):
    """Binary focal loss (Lin et al. 2017) averaged over counted pixels.

    Args:
        alpha: weight of the PV class, ``1 - alpha`` for background (default 0.8).
        gamma: focusing exponent (default 1.5); 0 gives alpha-weighted BCE.
    """

    def __init__(self, alpha: float = 0.8, gamma: float = 1.5) -> None:
        super().__init__()
        self.alpha = _check_number("alpha", alpha, 0.0, 1.0)
        self.gamma = _check_number("gamma", gamma)

    def compute(self, x: Tensor, t: Tensor, m: Tensor) -> Tensor:
        """Mean focal loss."""
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")  # = -log(p_t)
        # 1 - p_t without cancellation: sigmoid(-x) for positives, sigmoid(x) for negatives.
        one_minus_pt = t * torch.sigmoid(-x) + (1.0 - t) * torch.sigmoid(x)
        modulating = one_minus_pt.clamp_min(1e-30).pow(self.gamma)
        alpha_t = self.alpha * t + (1.0 - self.alpha) * (1.0 - t)
        return (m * alpha_t * modulating * ce).sum() / m.sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"


def _soft_jaccard(p: Tensor, t: Tensor, m: Tensor, eps: float) -> Tensor:
    """``1 - (I + eps) / (U + eps)`` over the whole batch, counted pixels only."""
    p = p * m
    t = t * m
    inter = (p * t).sum()
    union = p.sum() + t.sum() - inter
    return 1.0 - (inter + eps) / (union + eps)


class SoftJaccardLoss(_MaskedLoss):
    """Soft Jaccard (IoU) loss of PV and background, summed over the whole batch.

    Args:
        pv_weight: weight of the PV-class Jaccard loss (default 0.85).
        background_weight: weight of the background-class Jaccard loss (default 0.15).
        eps: smoothing added to intersection and union (default 1, one pixel).
    """

    def __init__(
        self, pv_weight: float = 0.85, background_weight: float = 0.15, eps: float = 1.0
    ) -> None:
        super().__init__()
        self.pv_weight = _check_number("pv_weight", pv_weight)
        self.background_weight = _check_number("background_weight", background_weight)
        self.eps = _check_number("eps", eps)
        if self.eps <= 0:
            raise ConfigError(f"loss parameter eps must be > 0, got {eps!r}")

    def compute(self, x: Tensor, t: Tensor, m: Tensor) -> Tensor:
        """Weighted PV + background soft Jaccard loss."""
        p = torch.sigmoid(x)
        pv = _soft_jaccard(p, t, m, self.eps)
        bg = _soft_jaccard(1.0 - p, 1.0 - t, m, self.eps)
        return self.pv_weight * pv + self.background_weight * bg

    def extra_repr(self) -> str:
        return f"pv_weight={self.pv_weight}, background_weight={self.background_weight}, " + (
            f"eps={self.eps}"
        )


class DiceLoss(_MaskedLoss):
    """Soft Dice loss of the PV class over the whole batch.

    Args:
        eps: smoothing added to numerator and denominator (default 1, one pixel).
    """

    def __init__(self, eps: float = 1.0) -> None:
        super().__init__()
        self.eps = _check_number("eps", eps)
        if self.eps <= 0:
            raise ConfigError(f"loss parameter eps must be > 0, got {eps!r}")

    def compute(self, x: Tensor, t: Tensor, m: Tensor) -> Tensor:
        """Soft Dice loss."""
        p = torch.sigmoid(x) * m
        t = t * m
        inter = (p * t).sum()
        return 1.0 - (2.0 * inter + self.eps) / (p.sum() + t.sum() + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class LovaszHingeLoss(_MaskedLoss):
    """Binary Lovasz hinge loss (Berman, Triki & Blaschko, CVPR 2018), valid-masked.

    Ignored pixels get a hinge error of -1 and label 0: they sort after every positive error and
    contribute ``relu(-1) = 0``, so they neither add to the loss nor shift the Jaccard gradient of
    the counted pixels. Vectorised over the batch (one sort of ``[B, H*W]`` or ``[1, B*H*W]``).

    Args:
        per_image: compute the loss per image and average over images with counted pixels
            (default True, as in the paper); False computes it once over the whole batch.
    """

    def __init__(self, per_image: bool = True) -> None:
        super().__init__()
        if not isinstance(per_image, bool):
            raise ConfigError(f"loss parameter per_image must be true or false, got {per_image!r}")
        self.per_image = per_image

    def compute(self, x: Tensor, t: Tensor, m: Tensor) -> Tensor:
        """Lovasz hinge loss."""
        rows = x.shape[0] if self.per_image else 1
        x = x.reshape(rows, -1)
        labels = (t >= 0.5).float().reshape(rows, -1) * m.reshape(rows, -1)
        m = m.reshape(rows, -1)
        signs = 2.0 * labels - 1.0
        errors = torch.where(m > 0, 1.0 - x * signs, torch.full_like(x, -1.0))
        errors_sorted, order = torch.sort(errors, dim=1, descending=True)
        gt_sorted = torch.gather(labels, 1, order)
        gts = gt_sorted.sum(dim=1, keepdim=True)
        intersection = gts - gt_sorted.cumsum(dim=1)
        union = gts + (1.0 - gt_sorted).cumsum(dim=1)  # >= 1 everywhere
        jaccard = 1.0 - intersection / union
        grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
        per_row = (F.relu(errors_sorted) * grad).sum(dim=1)
        has_pixels = (m.sum(dim=1) > 0).float()
        return (per_row * has_pixels).sum() / has_pixels.sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}"


class BCEFocalJaccardLoss(_MaskedLoss):
    """Weighted sum of weighted BCE, focal and soft Jaccard losses (the default training loss).

    ``bce_weight * BCE + focal_weight * focal + jaccard_weight * Jaccard``; see the module
    docstring for each term. :meth:`terms` returns the unweighted terms for logging.

    Args:
        bce_weight: weight of the weighted BCE term (default 0.3).
        focal_weight: weight of the focal term (default 0.3).
        jaccard_weight: weight of the Jaccard term (default 0.4).
        pos_weight: BCE weight of PV pixels (default 2).
        neg_weight: BCE weight of background pixels (default 1).
        alpha: focal PV-class weight (default 0.8).
        gamma: focal exponent (default 1.5).
        pv_weight: weight of the PV Jaccard loss inside the Jaccard term (default 0.85).
        background_weight: weight of the background Jaccard loss (default 0.15).
        eps: Jaccard smoothing (default 1).
    """

    def __init__(
        self,
        bce_weight: float = 0.3,
        focal_weight: float = 0.3,
        jaccard_weight: float = 0.4,
        pos_weight: float = 2.0,
        neg_weight: float = 1.0,
        alpha: float = 0.8,
        gamma: float = 1.5,
        pv_weight: float = 0.85,
        background_weight: float = 0.15,
        eps: float = 1.0,
    ) -> None:
        super().__init__()
        self.bce_weight = _check_number("bce_weight", bce_weight)
        self.focal_weight = _check_number("focal_weight", focal_weight)
        self.jaccard_weight = _check_number("jaccard_weight", jaccard_weight)
        self.bce = WeightedBCELoss(pos_weight, neg_weight)
        self.focal = FocalLoss(alpha, gamma)
        self.jaccard = SoftJaccardLoss(pv_weight, background_weight, eps)

    def compute_terms(self, x: Tensor, t: Tensor, m: Tensor) -> dict[str, Tensor]:
        """The three unweighted terms from prepared inputs."""
        return {
            "bce": self.bce.compute(x, t, m),
            "focal": self.focal.compute(x, t, m),
            "jaccard": self.jaccard.compute(x, t, m),
        }

    def terms(
        self, logits: Tensor, target: Tensor, valid: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Unweighted ``bce``, ``focal`` and ``jaccard`` terms (float32 scalars, on the device)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute_terms(*prepare_inputs(logits, target, valid))

    def compute(self, x: Tensor, t: Tensor, m: Tensor) -> Tensor:
        """Weighted sum of the terms."""
        terms = self.compute_terms(x, t, m)
        return (
            self.bce_weight * terms["bce"]
            + self.focal_weight * terms["focal"]
            + self.jaccard_weight * terms["jaccard"]
        )

    def extra_repr(self) -> str:
        return (
            f"bce_weight={self.bce_weight}, focal_weight={self.focal_weight}, "
            f"jaccard_weight={self.jaccard_weight}"
        )


#: loss name -> class; the constructor keywords are the accepted parameters.
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce_focal_jaccard": BCEFocalJaccardLoss,
    "bce": WeightedBCELoss,
    "focal": FocalLoss,
    "jaccard": SoftJaccardLoss,
    "dice": DiceLoss,
    "lovasz": LovaszHingeLoss,
}


def _accepted(name: str) -> list[str]:
    """Parameter names accepted by the loss ``name``."""
    sig = inspect.signature(LOSSES[name])
    return [p for p in sig.parameters if p != "self"]


def build_loss(name: str = "bce_focal_jaccard", **params: Any) -> nn.Module:
    """Build a loss module by name.

    Args:
        name: one of :data:`LOSSES` (``bce_focal_jaccard``, ``bce``, ``focal``, ``jaccard``,
            ``dice``, ``lovasz``).
        **params: keyword parameters of that loss (see the module docstring).

    Returns:
        The module, called as ``loss(logits, target, valid)``.

    Raises:
        ConfigError: for an unknown name, an unknown parameter or a bad parameter value.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    accepted = _accepted(key)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"loss {key!r} does not take parameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted)}"
        )
    return LOSSES[key](**params)
