"""Plant-level metrics: predicted regions matched to true plants, counts and area errors.

:func:`object_metrics` matches the connected components of one chip; :class:`ObjectAccumulator`
sums them over a split for the ``object`` section of an evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from pvdetect.data.raster import IGNORE_INDEX
from pvdetect.evaluation.metrics import DetectionScores, ratio

__all__ = ["ObjectAccumulator", "ObjectMetrics", "object_metrics"]


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


@dataclass
class ObjectMetrics(DetectionScores):
    """Plant-level (connected component) detection scores and area errors.

    Counts: ``tp`` matched pairs, ``fp`` unmatched predicted regions, ``fn`` unmatched true
    plants (precision: matched share of predicted regions; recall: of true plants). Areas in
    hectares. ``pairs`` lists each match as ``(true_ha, pred_ha, iou)``.
    Zero-division rules as in :class:`Confusion` (no plants and no predictions: all 1; means
    over no matches: 0).
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    abs_error_ha_sum: float = 0.0
    signed_error_ha_sum: float = 0.0
    matched_true_ha: float = 0.0
    matched_pred_ha: float = 0.0
    total_true_ha: float = 0.0
    total_pred_ha: float = 0.0
    pairs: list[tuple[float, float, float]] = field(default_factory=list)

    def __add__(self, other: ObjectMetrics) -> ObjectMetrics:
        return ObjectMetrics(
            tp=self.tp + other.tp,
            fp=self.fp + other.fp,
            fn=self.fn + other.fn,
            abs_error_ha_sum=self.abs_error_ha_sum + other.abs_error_ha_sum,
            signed_error_ha_sum=self.signed_error_ha_sum + other.signed_error_ha_sum,
            matched_true_ha=self.matched_true_ha + other.matched_true_ha,
            matched_pred_ha=self.matched_pred_ha + other.matched_pred_ha,
            total_true_ha=self.total_true_ha + other.total_true_ha,
            total_pred_ha=self.total_pred_ha + other.total_pred_ha,
            pairs=[*self.pairs, *other.pairs],
        )

    @property
    def mean_abs_area_error_ha(self) -> float:
        """Mean ``|pred_ha - true_ha|`` over matched pairs (0 without matches)."""
        return ratio(self.abs_error_ha_sum, self.tp, 0.0)

    @property
    def mean_signed_area_error_ha(self) -> float:
        """Mean ``pred_ha - true_ha`` over matched pairs (0 without matches)."""
        return ratio(self.signed_error_ha_sum, self.tp, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Counts, scores and area summaries (not the per-pair list); JSON-safe."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "mean_abs_area_error_ha": self.mean_abs_area_error_ha,
            "mean_signed_area_error_ha": self.mean_signed_area_error_ha,
            "matched_true_ha": self.matched_true_ha,
            "matched_pred_ha": self.matched_pred_ha,
            "total_true_ha": self.total_true_ha,
            "total_pred_ha": self.total_pred_ha,
        }


_EIGHT = np.ones((3, 3), dtype=bool)


def _foreground(
    pred_mask: Any, true_mask: Any, valid: Any, iou_threshold: float, pixel_area_m2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true PV pixels restricted to valid, labelled pixels (checked inputs)."""
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    if not float(pixel_area_m2) > 0.0:
        raise ValueError(f"pixel_area_m2 must be > 0, got {pixel_area_m2!r}")
    pred = _to_numpy(pred_mask)
    true = _to_numpy(true_mask)
    if pred.ndim != 2 or pred.shape != true.shape:
        raise ValueError(
            f"object_metrics needs 2-D masks of one shape, got {pred.shape} and {true.shape}"
        )
    keep = true != IGNORE_INDEX
    if valid is not None:
        v = _to_numpy(valid).astype(bool)
        if v.shape != pred.shape:
            raise ValueError(f"valid shape {v.shape} does not match masks {pred.shape}")
        keep &= v
    return (pred != 0) & keep, (true >= 0.5) & keep


def _candidates(
    pred_lab: np.ndarray,
    true_lab: np.ndarray,
    pred_area: np.ndarray,
    true_area: np.ndarray,
    iou_threshold: float,
) -> list[tuple[float, int, int, int]]:
    """Overlapping (region, plant) pairs reaching the IoU threshold, best first:
    ``(-iou, -overlap, region, plant)``."""
    n_true = true_area.size - 1
    both = (pred_lab > 0) & (true_lab > 0)
    codes = pred_lab[both].astype(np.int64) * (n_true + 1) + true_lab[both]
    uniq, inter = np.unique(codes, return_counts=True)
    p_ids, t_ids = np.divmod(uniq, n_true + 1)
    ious = inter / (pred_area[p_ids] + true_area[t_ids] - inter)
    return sorted(
        (-float(iou), -int(n), int(p), int(t))
        for iou, n, p, t in zip(ious, inter, p_ids, t_ids, strict=True)
        if iou >= iou_threshold
    )


def object_metrics(
    pred_mask: Any,
    true_mask: Any,
    valid: Any = None,
    pixel_area_m2: float = 100.0,
    iou_threshold: float = 0.5,
) -> ObjectMetrics:
    """Match predicted regions to true plants in one image.

    Rule: both masks are restricted to the valid, labelled pixels (``valid`` and
    ``true_mask != 255``) and split into connected components with 8-connectivity
    (``scipy.ndimage.label``). Every predicted region / true plant pair that overlaps gets its
    pixel IoU; pairs with ``IoU >= iou_threshold`` are candidates, matched greedily one-to-one in
    order of descending IoU (ties: larger overlap first, then lower labels). Matched pairs are
    true positives; unmatched predicted regions are false positives and unmatched plants false
    negatives. So a plant split into two predicted pieces counts as matched with the larger
    piece if that alone reaches the IoU threshold (the other piece is a false positive), else
    as a miss with two false positives. Areas are pixel counts times ``pixel_area_m2`` in
    hectares; area errors are ``pred - true`` over matched pairs.

    Args:
        pred_mask: ``[H, W]`` predicted PV (bool or numbers, non-zero = PV), numpy or torch.
        true_mask: ``[H, W]`` labels ``{0, 1}``, 255 = ignored.
        valid: ``[H, W]`` bool or None (all valid).
        pixel_area_m2: area of one pixel in square metres (100 for 10 m Sentinel-2).
        iou_threshold: minimum IoU of a match, in ``(0, 1]``.

    Raises:
        ValueError: for mismatched or non-2-D shapes or bad parameters.
    """
    pred_fg, true_fg = _foreground(pred_mask, true_mask, valid, iou_threshold, pixel_area_m2)
    pred_lab, n_pred = ndimage.label(pred_fg, structure=_EIGHT)
    true_lab, n_true = ndimage.label(true_fg, structure=_EIGHT)
    ha = float(pixel_area_m2) / 10_000.0
    pred_area = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    true_area = np.bincount(true_lab.ravel(), minlength=n_true + 1)
    candidates = _candidates(pred_lab, true_lab, pred_area, true_area, iou_threshold)
    used_pred: set[int] = set()
    used_true: set[int] = set()
    result = ObjectMetrics(
        total_true_ha=float(true_area[1:].sum()) * ha,
        total_pred_ha=float(pred_area[1:].sum()) * ha,
    )
    for neg_iou, _, p, t in candidates:
        if p in used_pred or t in used_true:
            continue
        used_pred.add(p)
        used_true.add(t)
        true_ha = float(true_area[t]) * ha
        pred_ha = float(pred_area[p]) * ha
        result.tp += 1
        result.abs_error_ha_sum += abs(pred_ha - true_ha)
        result.signed_error_ha_sum += pred_ha - true_ha
        result.matched_true_ha += true_ha
        result.matched_pred_ha += pred_ha
        result.pairs.append((true_ha, pred_ha, -neg_iou))
    result.fp = n_pred - result.tp
    result.fn = n_true - result.tp
    return result


class ObjectAccumulator:
    """Per-plant matching summed over chips (each chip is matched on its own).

    Args:
        iou_threshold: IoU for a predicted region to match a true plant.
    """

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = float(iou_threshold)
        self.result = ObjectMetrics()
        self.images = 0

    def add(
        self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None, pixel_area_m2: float
    ) -> ObjectMetrics:
        """Match the plants of one chip and add them; returns that chip's metrics.

        Chips with neither true nor predicted PV add nothing but the image count. The per-pair
        list is not kept, so memory stays flat over large splits.
        """
        self.images += 1
        if not pred.any() and not truth.any():
            return ObjectMetrics()
        one = object_metrics(pred, truth, valid, pixel_area_m2, self.iou_threshold)
        one.pairs = []
        self.result = self.result + one
        return one

    def section(self) -> dict[str, Any]:
        """The ``object`` section of a metrics dict: scores, counts and area errors."""
        t = self.result
        d = t.to_dict()
        err = t.total_pred_ha - t.total_true_ha
        d.update(
            iou_threshold=self.iou_threshold,
            n_true=t.tp + t.fn,
            n_pred=t.tp + t.fp,
            area_error_ha=err,
            area_error_rel=err / t.total_true_ha if t.total_true_ha > 0 else None,
        )
        return d
