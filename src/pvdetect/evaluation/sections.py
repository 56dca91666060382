"""The sections of a metrics dict, built from counts the engine accumulated.

Shared by ``evaluate`` and ``baselines``, so both report the same numbers the same way:

* ``pixel``: confusion counts and metrics over all valid, labelled pixels at the used threshold
  (``tp fp fn tn accuracy precision recall specificity f1 iou miou``, plus pixel counts);
* ``threshold``: the used threshold and its source, the best-F1 threshold on this split with
  the metrics at it (optimistic: chosen on the evaluated split), the sweep curve and the
  probability histograms;
* ``object``: per-plant matching (IoU >= 0.5) and detected-area errors in hectares
  (:meth:`~pvdetect.evaluation.metrics.ObjectAccumulator.section`);
* ``per_image``, ``per_site``: the pixel metrics of each chip and each site;
* ``per_source`` (only when the evaluated chips come from several sources, e.g. several
  datasets): the pixel metrics of each source, with its predicted and false-positive area in
  hectares and false-positive hectares per 100 km2 of valid area; their counts add up to
  ``pixel``;
* ``model``, ``data``: what was evaluated on what.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from pvdetect.evaluation.metrics import Confusion, ThresholdHistogram
from pvdetect.io import clean_json

if TYPE_CHECKING:
    from pvdetect.data.packed import PackedCache

__all__ = [
    "SECTIONS",
    "confusion_dict",
    "per_image_section",
    "per_site_section",
    "per_source_section",
    "pixel_area_m2",
    "pixel_areas",
    "pixel_section",
    "threshold_section",
]

#: sections every metrics dict has (evaluate adds ``comparison`` when baselines are known)
SECTIONS = ("model", "data", "pixel", "threshold", "object", "per_site", "per_image")
#: bins of the probability histograms stored in metrics.json for plotting
PLOT_BINS = 50
#: pixel side assumed when a chip carries no usable transform (Sentinel-2 10 m bands)
DEFAULT_PIXEL_M = 10.0


def confusion_dict(tp: float, fp: float, fn: float, tn: float) -> dict[str, Any]:
    """Confusion counts and derived metrics of the PV class (JSON-ready)."""
    return clean_json(Confusion(tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn)).to_dict())


def pixel_area_m2(chip: dict[str, Any]) -> tuple[float, str]:
    """Area of one pixel of a chip in m2, and where it came from.

    Args:
        chip: the chip geometry stored in the packed cache (``crs`` WKT or None,
            ``transform`` six numbers, ``height``).

    Projected CRS: from the transform, in the CRS's linear unit converted to metres.
    Geographic CRS: degrees converted at the chip's centre latitude (spherical approximation).
    No georeferencing: a 10 m Sentinel-2 pixel.
    """
    t = [float(v) for v in chip.get("transform") or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)]
    rx = math.hypot(t[0], t[3])
    ry = math.hypot(t[1], t[4])
    wkt = chip.get("crs")
    identity = t == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if not wkt or identity or rx <= 0 or ry <= 0:
        return DEFAULT_PIXEL_M**2, "assumed 10 m pixels (no georeferencing)"
    crs = _crs(wkt)
    if crs is None:
        return DEFAULT_PIXEL_M**2, "assumed 10 m pixels (unreadable CRS)"
    if crs.is_geographic:
        cy = t[5] + t[4] * float(chip.get("height", 0)) / 2
        m = 111_320.0
        return rx * m * math.cos(math.radians(cy)) * ry * m, "chip transform (degrees converted)"
    factor = 1.0
    try:
        units = crs.linear_units_factor
        if units:
            factor = float(units[1])
    except Exception:  # noqa: BLE001 - CRSs without linear units: assume metres
        factor = 1.0
    return rx * ry * factor * factor, "chip transform"


@functools.lru_cache(maxsize=256)
def _crs(wkt: str) -> Any:
    from rasterio.crs import CRS

    try:
        return CRS.from_wkt(wkt)
    except Exception:  # noqa: BLE001 - any CRS parse failure falls back to 10 m pixels
        return None


def pixel_areas(cache: PackedCache, idx: np.ndarray, factor: int) -> tuple[np.ndarray, list[str]]:
    """Pixel area in m2 of each chip ``idx`` at ``factor`` times its resolution, and sources."""
    areas = np.empty(idx.size, dtype=np.float64)
    sources = []
    for j, i in enumerate(idx):
        a, src = pixel_area_m2(cache.chips[int(i)])
        areas[j] = a / factor**2
        sources.append(src)
    return areas, sources


def pixel_section(counts: np.ndarray) -> dict[str, Any]:
    """The ``pixel`` section from summed ``tp, fp, fn, tn``."""
    tp, fp, fn, tn = (int(v) for v in counts)
    d = confusion_dict(tp, fp, fn, tn)
    d.update(n_valid=tp + fp + fn + tn, n_pv_true=tp + fn, n_pv_pred=tp + fp)
    return d


def per_image_section(
    cache: PackedCache, idx: np.ndarray, counts: np.ndarray
) -> list[dict[str, Any]]:
    """One row per chip: key, site (and source, with several), cache index, counts, metrics."""
    names = getattr(cache, "names", None)
    several = names is not None and len(names) > 1
    rows = []
    for j, i in enumerate(idx):
        rec = cache.records[int(i)]
        tp, fp, fn, tn = (int(v) for v in counts[j])
        d = confusion_dict(tp, fp, fn, tn)
        src = {"source": names[int(cache.source_of[int(i)])]} if several else {}
        rows.append(
            {
                "key": rec.key,
                "site": rec.site,
                **src,
                "index": int(i),
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "tn": tn,
                "precision": d.get("precision"),
                "recall": d.get("recall"),
                "f1": d.get("f1"),
                "iou": d.get("iou"),
                "pv_true": tp + fn,
                "pv_pred": tp + fp,
            }
        )
    return rows


def per_site_section(per_image: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Counts and metrics summed over the chips of each site."""
    sums: dict[str, list[int]] = {}
    for r in per_image:
        s = sums.setdefault(r["site"], [0, 0, 0, 0, 0])
        s[0] += r["tp"]
        s[1] += r["fp"]
        s[2] += r["fn"]
        s[3] += r["tn"]
        s[4] += 1
    out = {}
    for site in sorted(sums):
        tp, fp, fn, tn, n = sums[site]
        d = confusion_dict(tp, fp, fn, tn)
        d["n_images"] = n
        out[site] = d
    return out


def per_source_section(
    per_image: list[dict[str, Any]], areas: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Counts, metrics and areas summed over the chips of each source.

    Args:
        per_image: rows of :func:`per_image_section` (with ``source``).
        areas: pixel area in m2 of each row's chip (at the evaluated resolution).

    Returns:
        Per source, in order of appearance: the confusion metrics, ``n_images``, ``fp_ha``
        and ``pv_pred_ha`` (false-positive and predicted PV area, hectares) and
        ``fp_ha_per_100km2`` (false-positive hectares per 100 km2 of valid area).
    """
    sums: dict[str, np.ndarray] = {}
    for r, a in zip(per_image, areas, strict=True):
        n_px = r["tp"] + r["fp"] + r["fn"] + r["tn"]
        row = [
            r["tp"],
            r["fp"],
            r["fn"],
            r["tn"],
            1,
            r["fp"] * a,
            (r["tp"] + r["fp"]) * a,
            n_px * a,
        ]
        sums[r["source"]] = sums.get(r["source"], np.zeros(8)) + np.asarray(row, np.float64)
    out = {}
    for name, v in sums.items():
        tp, fp, fn, tn, n = (int(x) for x in v[:5])
        d = confusion_dict(tp, fp, fn, tn)
        fp_m2, pred_m2, valid_m2 = (float(x) for x in v[5:])
        d.update(n_images=n, fp_ha=fp_m2 / 1e4, pv_pred_ha=pred_m2 / 1e4)
        # ha per 100 km2 (1e8 m2): fp_m2 / 1e4 * 1e8 / valid_m2
        d["fp_ha_per_100km2"] = fp_m2 * 1e4 / valid_m2 if valid_m2 else None
        out[name] = d
    return out


def threshold_section(hist: ThresholdHistogram, used: float, source: str) -> dict[str, Any]:
    """Used threshold and source, the split's best-F1 threshold, sweep and histograms."""
    sw = hist.sweep()
    best, _ = hist.best_threshold("f1")
    pos, neg = hist.positive_counts, hist.negative_counts
    k = max(1, pos.size // PLOT_BINS)
    n = pos.size // k
    return {
        "used": float(used),
        "source": source,
        "best": float(best),
        "best_metric": "f1",
        "at_best": clean_json(hist.confusion(best).to_dict()),
        "note": "best threshold chosen on the evaluated split: optimistic, for analysis only",
        "curve": {
            key: sw[key].tolist() for key in ("thresholds", "precision", "recall", "f1", "iou")
        },
        "histogram": {
            "edges": np.linspace(0.0, 1.0, n + 1).tolist(),
            "pos": pos[: k * n].reshape(n, k).sum(1).tolist(),
            "neg": neg[: k * n].reshape(n, k).sum(1).tolist(),
        },
    }
