"""Pixel and object metrics for binary PV segmentation with ignored (nodata) pixels.

- :class:`Confusion`: pixel counts and the derived scores, never NaN (see its docstring for the
  zero-division rules).
- :class:`ThresholdHistogram`: on-device histograms of predicted probabilities of valid PV and
  valid background pixels, from which the confusion at any bin-edge threshold, a full threshold
  sweep and the best threshold follow exactly, in O(bins) memory, with DDP support.
- :func:`per_image_confusion`: the confusion of a thresholded prediction (numpy or torch).

Plant-level metrics are in :mod:`pvdetect.evaluation.objects`.

Pixels count only when valid and labelled (target != 255); targets are ``{0, 1}`` (values >= 0.5
count as PV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pvdetect.data.raster import IGNORE_INDEX
from pvdetect.errors import ConfigError

__all__ = [
    "Confusion",
    "ThresholdHistogram",
    "per_image_confusion",
]

THRESHOLD_METRICS = ("f1", "iou")


def ratio(num: float, den: float, if_empty: float) -> float:
    """``num / den``, or ``if_empty`` when ``den`` is 0 (the zero-division rules)."""
    return float(num) / float(den) if den else float(if_empty)


class DetectionScores:
    """Precision, recall and F1 from the counts ``tp``, ``fp`` and ``fn`` of a subclass
    (pixels in :class:`Confusion`, plants in the object metrics), with the same zero-division
    rules: precision without predictions is 1 when nothing was missed, recall without truth
    is 1 when nothing was predicted, F1 of nothing against nothing is 1."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp)."""
        return ratio(self.tp, self.tp + self.fp, 1.0 if self.fn == 0 else 0.0)

    @property
    def recall(self) -> float:
        """tp / (tp + fn) (sensitivity, producer's accuracy of PV)."""
        return ratio(self.tp, self.tp + self.fn, 1.0 if self.fp == 0 else 0.0)

    @property
    def f1(self) -> float:
        """F1 score (Dice) of the PV class, or of the plants."""
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, 1.0)


@dataclass
class Confusion(DetectionScores):
    """Pixel confusion counts of the PV class and the scores derived from them.

    Zero-division rules (chosen so that agreeing on "nothing" is perfect and no score is NaN):

    - ``precision`` with no predicted PV: 1 if there is no true PV either, else 0;
    - ``recall`` with no true PV: 1 if nothing was predicted as PV, else 0;
    - ``specificity`` with no true background: 1 if no background pixel was missed (fn == 0),
      else 0;
    - ``f1 = 2tp / (2tp + fp + fn)``, ``iou = tp / (tp + fp + fn)`` and
      ``background_iou = tn / (tn + fp + fn)``: 1 when the denominator is 0;
    - ``accuracy`` with no pixels: 1.

    Attributes:
        tp: PV pixels predicted PV.
        fp: background pixels predicted PV.
        tn: background pixels predicted background.
        fn: PV pixels predicted background.
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "tn", "fn"):
            value = int(getattr(self, name))
            if value < 0:
                raise ValueError(f"confusion count {name} must be >= 0, got {value}")
            setattr(self, name, value)

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    @property
    def total(self) -> int:
        """Number of counted pixels."""
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        """Share of pixels classified correctly."""
        return ratio(self.tp + self.tn, self.total, 1.0)

    @property
    def specificity(self) -> float:
        """tn / (tn + fp)."""
        return ratio(self.tn, self.tn + self.fp, 1.0 if self.fn == 0 else 0.0)

    @property
    def iou(self) -> float:
        """Intersection over union of the PV class."""
        return ratio(self.tp, self.tp + self.fp + self.fn, 1.0)

    @property
    def background_iou(self) -> float:
        """Intersection over union of the background class."""
        return ratio(self.tn, self.tn + self.fp + self.fn, 1.0)

    @property
    def miou(self) -> float:
        """Mean of the PV and background IoU."""
        return 0.5 * (self.iou + self.background_iou)

    def to_dict(self) -> dict[str, Any]:
        """Counts (int) and scores (float); JSON-safe, never NaN."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "specificity": self.specificity,
            "f1": self.f1,
            "iou": self.iou,
            "background_iou": self.background_iou,
            "miou": self.miou,
        }


def _squeeze_channel(a: Any) -> Any:
    """Drop a singleton channel axis ``[B,1,H,W] -> [B,H,W]``."""
    if a is not None and a.ndim == 4 and a.shape[1] == 1:
        return a[:, 0]
    return a


def per_image_confusion(pred_bool: Any, target: Any, valid: Any = None) -> Confusion:
    """Confusion of a binary prediction against a target over the valid pixels.

    Works on numpy arrays or torch tensors of any matching shape (one image or a batch; all
    pixels are summed). With torch inputs the four counts are read back to the host once.

    Args:
        pred_bool: predicted PV (bool, or numbers where non-zero is PV).
        target: labels ``{0, 1}``, 255 = ignored.
        valid: bool mask of valid pixels, or None (all valid); ANDed with ``target != 255``.

    Raises:
        ValueError: if the shapes differ.
    """
    pred_bool, target, valid = (_squeeze_channel(a) for a in (pred_bool, target, valid))
    shapes = {tuple(pred_bool.shape), tuple(target.shape)}
    if valid is not None:
        shapes.add(tuple(valid.shape))
    if len(shapes) != 1:
        raise ValueError(f"prediction, target and valid shapes differ: {sorted(shapes)}")
    if isinstance(pred_bool, torch.Tensor) or isinstance(target, torch.Tensor):
        pred = torch.as_tensor(pred_bool) != 0
        tgt = torch.as_tensor(target, device=pred.device)
        keep = tgt != IGNORE_INDEX
        if valid is not None:
            keep &= torch.as_tensor(valid, device=pred.device).bool()
        pos = (tgt >= 0.5) & keep
        neg = keep & ~pos
        counts = torch.stack(
            [(pred & pos).sum(), (pred & neg).sum(), (~pred & neg).sum(), (~pred & pos).sum()]
        ).tolist()
        return Confusion(*counts)
    pred = np.asarray(pred_bool) != 0
    tgt = np.asarray(target)
    keep = tgt != IGNORE_INDEX
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool)
    pos = (tgt >= 0.5) & keep
    neg = keep & ~pos
    return Confusion(
        int(np.count_nonzero(pred & pos)),
        int(np.count_nonzero(pred & neg)),
        int(np.count_nonzero(~pred & neg)),
        int(np.count_nonzero(~pred & pos)),
    )


class ThresholdHistogram:
    """On-device histograms of probabilities of valid PV and valid background pixels.

    Bin ``i`` (``0 <= i < bins``) holds probabilities in ``[i/bins, (i+1)/bins)``; the last bin
    also holds exactly 1.0 (kept in a separate internal slot so that the threshold 1.0 is exact
    too). For a threshold on a bin edge ``k/bins`` the confusion of ``prob >= threshold`` is
    exact: bins are computed in float64 (float32 on MPS), where ``floor(p * bins)`` of a float32
    probability has no rounding error. Other thresholds are rounded up to the next bin edge.

    :meth:`update` does no host synchronisation (``scatter_add_`` into int64 counts); reading
    results (:meth:`confusion`, :meth:`sweep`, ...) copies the ``2 * (bins + 1)`` counts to the
    host. Memory is O(bins) whatever the number of pixels.

    Args:
        bins: number of bins (thresholds are multiples of ``1 / bins``).
        device: device of the counts; None takes the device of the first update.
    """

    def __init__(self, bins: int = 1000, device: str | torch.device | None = None) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 1_000_000:
            raise ConfigError(f"histogram bins must be an integer in [1, 1000000], got {bins!r}")
        self.bins = bins
        self._slots = bins + 1  # bins plus the exact-1.0 slot
        self.counts: torch.Tensor | None = None  # int64 [2, slots]: row 0 negatives, 1 positives
        if device is not None:
            self._allocate(torch.device(device))

    def _allocate(self, device: torch.device) -> torch.Tensor:
        self.counts = torch.zeros(2, self._slots, dtype=torch.int64, device=device)
        return self.counts

    @property
    def device(self) -> torch.device | None:
        """Device of the counts (None before the first update when created without one)."""
        return None if self.counts is None else self.counts.device

    def reset(self) -> None:
        """Set all counts to zero."""
        if self.counts is not None:
            self.counts.zero_()

    def to(self, device: str | torch.device) -> ThresholdHistogram:
        """Move the counts to ``device`` (in place); returns self."""
        if self.counts is None:
            self._allocate(torch.device(device))
        else:
            self.counts = self.counts.to(device)
        return self

    @torch.no_grad()
    def update(self, probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Add a batch.

        Args:
            probs: ``[B, H, W]`` (or ``[B, 1, H, W]``) probabilities in ``[0, 1]``; values
                outside are clamped, NaN pixels are ignored.
            target: ``[B, H, W]`` labels ``{0, 1}``, 255 = ignored.
            valid: ``[B, H, W]`` bool, or None (then ``target != 255``).
        """
        probs, target, valid = (_squeeze_channel(a) for a in (probs, target, valid))
        if probs.shape != target.shape or (valid is not None and valid.shape != probs.shape):
            raise ValueError(
                f"probs {tuple(probs.shape)}, target {tuple(target.shape)} and valid "
                f"{None if valid is None else tuple(valid.shape)} must have the same shape"
            )
        counts = self.counts if self.counts is not None else self._allocate(probs.device)
        dev = counts.device
        probs = probs.to(dev, non_blocking=True)
        target = target.to(dev, non_blocking=True)
        keep = (target != IGNORE_INDEX) & ~torch.isnan(probs)
        if valid is not None:
            keep &= valid.to(dev, non_blocking=True).bool()
        wide = torch.float32 if dev.type == "mps" else torch.float64
        idx = torch.floor(probs.to(wide).nan_to_num(0.0) * self.bins).clamp_(0, self.bins).long()
        pos = (target >= 0.5).long()
        # Flat slot: row (0 neg, 1 pos) * slots + bin; ignored pixels go to a dump slot.
        dump = 2 * self._slots
        flat = torch.where(keep, pos * self._slots + idx, torch.full_like(idx, dump)).reshape(-1)
        buffer = torch.zeros(dump + 1, dtype=torch.int64, device=dev)
        buffer.scatter_add_(0, flat, torch.ones_like(flat))
        counts += buffer[:dump].view(2, self._slots)

    def merge(self, other: ThresholdHistogram) -> ThresholdHistogram:
        """Add another histogram's counts (same ``bins``) into this one; returns self."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms with {self.bins} and {other.bins} bins")
        if other.counts is None:
            return self
        if self.counts is None:
            self._allocate(other.counts.device)
        assert self.counts is not None
        self.counts += other.counts.to(self.counts.device)
        return self

    def sync(self, process_group: Any = None) -> ThresholdHistogram:
        """Sum the counts over all processes (no-op unless torch.distributed is initialised).

        Every rank must call it. With the NCCL backend the counts live on the current CUDA
        device (moved there if needed).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        backend = str(dist.get_backend(process_group))
        if backend == "nccl":
            need = torch.device("cuda", torch.cuda.current_device())
        else:
            need = self.counts.device if self.counts is not None else torch.device("cpu")
            if need.type == "cuda" and backend == "gloo":
                need = torch.device("cpu")
        if self.counts is None:
            self._allocate(need)
        assert self.counts is not None
        home = self.counts.device
        buf = self.counts.to(need)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=process_group)
        self.counts = buf.to(home)
        return self

    def _host_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(negative, positive) int64 counts of the ``bins + 1`` slots."""
        if self.counts is None:
            zero = np.zeros(self._slots, dtype=np.int64)
            return zero, zero.copy()
        host = self.counts.cpu().numpy()
        return host[0].copy(), host[1].copy()

    @property
    def negative_counts(self) -> np.ndarray:
        """Background counts per bin, ``[bins]`` (the last bin includes 1.0)."""
        neg, _ = self._host_counts()
        return np.concatenate([neg[:-2], [neg[-2] + neg[-1]]])

    @property
    def positive_counts(self) -> np.ndarray:
        """PV counts per bin, ``[bins]`` (the last bin includes 1.0)."""
        _, pos = self._host_counts()
        return np.concatenate([pos[:-2], [pos[-2] + pos[-1]]])

    @property
    def total(self) -> int:
        """Number of pixels counted so far."""
        neg, pos = self._host_counts()
        return int(neg.sum() + pos.sum())

    def _edge_index(self, threshold: float) -> int:
        """Index ``k`` of the bin edge ``k / bins`` used for ``threshold`` (rounded up)."""
        t = float(threshold)
        if math.isnan(t):
            raise ValueError("threshold must be a number, got NaN")
        scaled = t * self.bins
        nearest = round(scaled)
        k = nearest if abs(scaled - nearest) <= 1e-9 * max(1.0, abs(scaled)) else math.ceil(scaled)
        return int(min(max(k, 0), self.bins + 1))

    def _suffix(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Counts at or above each edge ``k = 0..bins+1``: (pos_ge, neg_ge, n_pos, n_neg)."""
        neg, pos = self._host_counts()
        pos_ge = np.concatenate([np.cumsum(pos[::-1])[::-1], [0]])
        neg_ge = np.concatenate([np.cumsum(neg[::-1])[::-1], [0]])
        return pos_ge, neg_ge, int(pos.sum()), int(neg.sum())

    def confusion(self, threshold: float = 0.5) -> Confusion:
        """Confusion of ``prob >= threshold`` (exact when ``threshold`` is a bin edge)."""
        k = self._edge_index(threshold)
        pos_ge, neg_ge, n_pos, n_neg = self._suffix()
        tp, fp = int(pos_ge[k]), int(neg_ge[k])
        return Confusion(tp=tp, fp=fp, tn=n_neg - fp, fn=n_pos - tp)

    def sweep(self) -> dict[str, np.ndarray]:
        """Scores at every bin edge ``k / bins``, ``k = 0..bins`` (thresholds 0 to 1 inclusive).

        Returns:
            dict of numpy arrays of length ``bins + 1``: ``thresholds`` (float64), ``precision``,
            ``recall``, ``f1``, ``iou`` (float64, zero-division rules of :class:`Confusion`),
            ``tp``, ``fp``, ``tn``, ``fn`` (int64).
        """
        pos_ge, neg_ge, n_pos, n_neg = self._suffix()
        tp = pos_ge[: self.bins + 1].astype(np.int64)
        fp = neg_ge[: self.bins + 1].astype(np.int64)
        fn = n_pos - tp
        tn = n_neg - fp

        def ratio(num: np.ndarray, den: np.ndarray, empty: np.ndarray | float) -> np.ndarray:
            out = np.broadcast_to(np.asarray(empty, dtype=np.float64), num.shape).copy()
            nz = den > 0
            out[nz] = num[nz] / den[nz]
            return out

        return {
            "thresholds": np.arange(self.bins + 1, dtype=np.float64) / self.bins,
            "precision": ratio(tp, tp + fp, (fn == 0).astype(np.float64)),
            "recall": ratio(tp, tp + fn, (fp == 0).astype(np.float64)),
            "f1": ratio(2 * tp, 2 * tp + fp + fn, 1.0),
            "iou": ratio(tp, tp + fp + fn, 1.0),
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
        }

    def best_threshold(self, metric: str = "f1") -> tuple[float, float]:
        """The bin-edge threshold maximising ``metric`` (``"f1"`` or ``"iou"``) and its value.

        Thresholds whose score ties the maximum are often a plateau (no probabilities between
        them); the middle of the first maximal plateau is returned, which generalises better than
        either end. An empty histogram gives ``(0.5, 1.0)``.

        Raises:
            ConfigError: for another metric name.
        """
        if metric not in THRESHOLD_METRICS:
            raise ConfigError(
                f"unknown threshold metric {metric!r}; valid: {', '.join(THRESHOLD_METRICS)}"
            )
        result = self.sweep()
        scores = result[metric]
        k = plateau_middle(scores)
        return float(result["thresholds"][k]), float(scores[k])


def plateau_middle(scores: np.ndarray, tol: float = 1e-12) -> int:
    """Index in the middle of the first run of maximal ``scores``.

    Thresholds whose scores tie the maximum are often a plateau (no values between them); its
    middle generalises better than either end. Used for every calibrated threshold.
    """
    best = float(np.max(scores))
    start = int(np.flatnonzero(scores >= best - tol)[0])
    end = start
    while end + 1 < len(scores) and scores[end + 1] >= best - tol:
        end += 1
    return (start + end) // 2
