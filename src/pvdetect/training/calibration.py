"""The threshold a run ships and its validation metrics: overall and per training source."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pvdetect.training.task import SegmentationTask

__all__ = ["calibrate", "source_metrics"]


def calibrate(task: SegmentationTask, metric: str = "f1") -> tuple[float, dict[str, Any]]:
    """Threshold maximising ``metric`` on the last validation epoch and the metrics there.

    Calibrated on the native-resolution probabilities (what ``predict`` writes by default);
    the threshold is kept within ``[0.01, 0.99]``.
    """
    from pvdetect.training.task import THRESHOLD_MIN

    if task.last_val is None:
        raise RuntimeError("no validation epoch to calibrate on")
    native = task.last_val["hist_native"]
    up = task.last_val["hist"]
    thr, _ = native.best_threshold(metric)
    thr = min(max(thr, THRESHOLD_MIN), 1.0 - THRESHOLD_MIN)
    conf = native.confusion(thr)
    at_half = native.confusion(0.5)
    metrics: dict[str, Any] = {**conf.to_dict(), "loss": float(task.last_val["loss"])}
    metrics["threshold"] = thr
    metrics["iou_at_0.5"] = at_half.iou
    metrics["f1_at_0.5"] = at_half.f1
    metrics["windows_mirrored"] = bool(task.cfg.data.mirror_windows)
    if task.factor > 1:
        c_up = up.confusion(thr)
        metrics["iou_upscaled"] = c_up.iou
        metrics["f1_upscaled"] = c_up.f1
    metrics = {k: (v if not (isinstance(v, float) and not math.isfinite(v)) else None)
               for k, v in metrics.items()}  # fmt: skip
    return thr, metrics


def source_metrics(task: SegmentationTask, threshold: float) -> dict[str, dict[str, Any]]:
    """Per source of a multi-source run: the last validation's confusion at ``threshold``
    (native resolution), its loss, and whether it counted in the totals (``primary``)."""
    out: dict[str, dict[str, Any]] = {}
    for src in (task.last_val or {}).get("sources", []):
        if not src["count"]:
            continue
        conf = src["hist_native"].confusion(threshold)
        m: dict[str, Any] = {**conf.to_dict(), "loss": float(src["loss"]),
                             "threshold": threshold, "primary": bool(src["primary"])}  # fmt: skip
        out[src["name"]] = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()
        }
    return out
