"""Evaluation of a model bundle (or any predictor) on a split: metrics.json and report.html.

Everything accumulates batch by batch, so memory does not grow with the split: an on-device
:class:`~pvdetect.evaluation.metrics.ThresholdHistogram` of the probabilities of PV and background pixels
(for the threshold sweep and the probability plots), exact per-image confusion counts at the
decision threshold (pixel, per-image and per-site metrics), and per-plant matching
(:func:`~pvdetect.evaluation.metrics.object_metrics`). Only the per-image scores are kept; the few chips
shown in the report's best/worst grids are predicted again at the end.

``pvdetect evaluate BUNDLE DATA --split test --out DIR`` writes ``DIR/metrics.json`` and a
self-contained ``DIR/report.html``. :func:`evaluate_predictor` is the generic engine that the
baselines (:mod:`pvdetect.evaluation.baselines`) share, so their numbers are computed by the same code.

The sections of the metrics dict (shared by evaluate and baselines):

* ``pixel``: confusion counts and metrics over all valid, labelled pixels at the used threshold
  (``tp fp fn tn accuracy precision recall specificity f1 iou miou``, plus pixel counts);
* ``threshold``: the used threshold and its source, the best-F1 threshold on this split with
  the metrics at it (optimistic: chosen on the evaluated split), the sweep curve and the
  probability histograms;
* ``object``: per-plant matching (IoU >= 0.5) and detected-area errors in hectares;
* ``per_image``, ``per_site``: the pixel metrics of each chip and each site;
* ``model``, ``data``: what was evaluated on what.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pvdetect.data.raster import BAND_NAMES, atomic_output
from pvdetect.errors import ConfigError, DataError, OutputError

if TYPE_CHECKING:
    import torch

    from pvdetect.data.packed import PackedCache
    from pvdetect.evaluation.figures import GridChip

log = logging.getLogger(__name__)

#: sections every metrics dict has (evaluate adds ``comparison`` when baselines are known)
SECTIONS = ("model", "data", "pixel", "threshold", "object", "per_site", "per_image")
#: bins of the probability histogram (thresholds of the sweep are its edges)
HIST_BINS = 1000
#: bins of the probability histograms stored in metrics.json for plotting
PLOT_BINS = 50
#: pixel side assumed when a chip carries no usable transform (Sentinel-2 10 m bands)
DEFAULT_PIXEL_M = 10.0

PredictFn = Callable[..., Any]


@dataclass
class Evaluation:
    """Result of :func:`evaluate_predictor`.

    Attributes:
        metrics: JSON-ready dict with the sections listed in :data:`SECTIONS`.
        grids: the best and worst chips, ready to draw.
    """

    metrics: dict[str, Any]
    grids: list[GridChip] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers


def clean_json(value: Any) -> Any:
    """Plain JSON types: numpy/torch scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean_json(v) for v in value.tolist()]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Path):
        return str(value)
    return value


def confusion_dict(tp: float, fp: float, fn: float, tn: float) -> dict[str, Any]:
    """Confusion counts and derived metrics of the PV class (via :class:`metrics.Confusion`)."""
    from pvdetect.evaluation.metrics import Confusion

    d = Confusion(tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn)).to_dict()
    return clean_json(d)


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


_CRS_CACHE: dict[str, Any] = {}


def _crs(wkt: str) -> Any:
    if wkt not in _CRS_CACHE:
        from rasterio.crs import CRS

        try:
            _CRS_CACHE[wkt] = CRS.from_wkt(wkt)
        except Exception:  # noqa: BLE001 - any CRS parse failure falls back to 10 m pixels
            _CRS_CACHE[wkt] = None
    return _CRS_CACHE[wkt]


def _accepts_indices(fn: PredictFn) -> bool:
    try:
        return "indices" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _call(fn: PredictFn, raw: torch.Tensor, valid: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    import torch

    out = fn(raw, valid, indices=idx) if _accepts_indices(fn) else fn(raw, valid)
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out))
    return out.to(raw.device, torch.float32)


def _to_resolution(
    probs: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring mask and validity to the probabilities' grid (nearest upscaling by ``factor``)."""
    if probs.shape[-2:] == mask.shape[-2:]:
        return mask, valid
    h, w = mask.shape[-2:]
    if factor > 1 and probs.shape[-2:] == (h * factor, w * factor):
        up = lambda t: t.repeat_interleave(factor, -2).repeat_interleave(factor, -1)  # noqa: E731
        return up(mask), up(valid)
    raise ConfigError(
        f"predictions of shape {tuple(probs.shape[-2:])} do not match chips of {h}x{w} "
        f"(upscale factor {factor})"
    )


def _rgb_bands(band_names: Sequence[str]) -> tuple[int, int, int]:
    names = [n.lower() for n in band_names]
    try:
        return tuple(names.index(b) for b in ("red", "green", "blue"))  # type: ignore[return-value]
    except ValueError:
        return (0, 1, 2)


# ------------------------------------------------------------------------------ engine


def evaluate_predictor(
    predict_fn: PredictFn,
    cache: PackedCache,
    indices: Sequence[int] | np.ndarray,
    threshold: float,
    *,
    batch_size: int = 40,
    device: str | torch.device = "cpu",
    upscale_factor: int = 1,
    band_stats: dict[str, list[float]] | None = None,
    band_names: Sequence[str] = BAND_NAMES,
    iou_threshold: float = 0.5,
    n_grid: int = 4,
    threshold_source: str = "given",
    model_info: dict[str, Any] | None = None,
    split: str = "",
    progress: bool = False,
) -> Evaluation:
    """Evaluate a predictor on chips of a packed cache, accumulating per batch.

    Args:
        predict_fn: ``predict_fn(raw, valid) -> probs``: raw float32 reflectance tensor
            ``[B, C, H, W]`` and bool ``valid [B, H, W]`` on ``device``; returns PV
            probabilities ``[B, H, W]`` (tensor or array) at the input resolution, or at
            ``upscale_factor`` times it. A predictor that needs to know which chips it sees
            (seeded noise) may take a keyword ``indices`` (cache indices of the batch).
        cache: the packed chips.
        indices: cache indices of the chips to evaluate.
        threshold: decision threshold; a pixel is PV when ``prob >= threshold``.
        batch_size: chips per batch.
        device: where the predictor and the accumulators run.
        upscale_factor: resolution factor of the predictions (1 = native); masks are upscaled
            by nearest neighbour and pixel areas divided by ``factor**2``.
        band_stats: ``p2``/``p98`` for the RGB stretch of the grids (default: the cache's).
        band_names: band names of the cache's band order (to find R, G, B).
        iou_threshold: IoU for a detected region to match a true plant.
        n_grid: chips in each of the best and worst grids.
        threshold_source: where ``threshold`` came from, for the report.
        model_info: the ``model`` section of the metrics.
        split: name of the evaluated split.
        progress: print a progress line to stderr every 5 s and at the end.

    Returns:
        The metrics (sections :data:`SECTIONS`) and the grid chips.

    Raises:
        DataError: ``indices`` is empty.
    """
    import torch

    from pvdetect.evaluation.metrics import ThresholdHistogram

    idx_all = np.asarray(indices, dtype=np.int64)
    if idx_all.size == 0:
        raise DataError(f"split {split or '?'}: no chips to evaluate")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold} is outside [0, 1]")
    dev = torch.device(device)
    factor = max(1, int(upscale_factor))
    hist = ThresholdHistogram(bins=HIST_BINS, device=dev)
    counts = np.zeros((idx_all.size, 4), dtype=np.int64)  # tp fp fn tn per chip
    obj = _ObjectTotals(iou_threshold)
    areas, area_sources = _pixel_areas(cache, idx_all, factor)
    t0 = last = time.perf_counter()
    for start in range(0, idx_all.size, batch_size):
        idx = idx_all[start : start + batch_size]
        raw = torch.from_numpy(np.ascontiguousarray(cache.images[idx])).to(dev)
        valid = torch.from_numpy(np.ascontiguousarray(cache.valid[idx])).to(dev)
        mask = torch.from_numpy(np.ascontiguousarray(cache.masks[idx])).to(dev)
        with torch.inference_mode():
            probs = _call(predict_fn, raw, valid, idx)
            mask_r, valid_r = _to_resolution(probs, mask, valid, factor)
            ev = valid_r.bool() & (mask_r != 255)
            truth = (mask_r == 1) & ev
            pred = (probs >= threshold) & ev
            hist.update(probs, truth.to(torch.uint8), ev)
            neg = ev & ~truth
            c = torch.stack(
                [
                    (pred & truth).sum((1, 2)),
                    (pred & neg).sum((1, 2)),
                    (~pred & truth).sum((1, 2)),
                    (~pred & neg).sum((1, 2)),
                ],
                dim=1,
            )
        counts[start : start + idx.size] = c.cpu().numpy()
        pred_np, truth_np, ev_np = pred.cpu().numpy(), truth.cpu().numpy(), ev.cpu().numpy()
        for j in range(idx.size):
            obj.add(pred_np[j], truth_np[j], ev_np[j], areas[start + j])
        done = start + idx.size
        now = time.perf_counter()
        if progress and (now - last >= 5.0 or done == idx_all.size):
            last = now
            rate = done / max(now - t0, 1e-9)
            print(f"  {done}/{idx_all.size} chips ({rate:.1f} chips/s)", file=sys.stderr)

    per_image = _per_image(cache, idx_all, counts)
    metrics: dict[str, Any] = {
        "model": dict(model_info or {}),
        "data": {
            "split": split,
            "n_images": int(idx_all.size),
            "resolution": "native" if factor == 1 else f"upscaled x{factor}",
            "upscale_factor": factor,
            "fingerprint": getattr(cache, "fingerprint", ""),
            "pixel_area": ", ".join(sorted(set(area_sources))),
        },
        "pixel": _pixel_section(counts.sum(axis=0)),
        "threshold": _threshold_section(hist, threshold, threshold_source),
        "object": obj.section(),
        "per_site": _per_site(per_image),
        "per_image": per_image,
    }
    grids = _grid_chips(
        predict_fn,
        cache,
        idx_all,
        per_image,
        threshold,
        dev,
        factor,
        band_stats or _stats_dict(cache),
        band_names,
        n_grid,
    )
    return Evaluation(clean_json(metrics), grids)


def _stats_dict(cache: PackedCache) -> dict[str, list[float]]:
    s = cache.stats
    return s.to_dict() if hasattr(s, "to_dict") else dict(s)


def _pixel_areas(cache: PackedCache, idx: np.ndarray, factor: int) -> tuple[np.ndarray, list[str]]:
    areas = np.empty(idx.size, dtype=np.float64)
    sources = []
    for j, i in enumerate(idx):
        a, src = pixel_area_m2(cache.chips[int(i)])
        areas[j] = a / factor**2
        sources.append(src)
    return areas, sources


def _pixel_section(c: np.ndarray) -> dict[str, Any]:
    tp, fp, fn, tn = (int(v) for v in c)
    d = confusion_dict(tp, fp, fn, tn)
    d.update(n_valid=tp + fp + fn + tn, n_pv_true=tp + fn, n_pv_pred=tp + fp)
    return d


def _per_image(cache: PackedCache, idx: np.ndarray, counts: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for j, i in enumerate(idx):
        rec = cache.records[int(i)]
        tp, fp, fn, tn = (int(v) for v in counts[j])
        d = confusion_dict(tp, fp, fn, tn)
        rows.append(
            {
                "key": rec.key,
                "site": rec.site,
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


def _per_site(per_image: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
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


def _threshold_section(hist: Any, used: float, source: str) -> dict[str, Any]:
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


class _ObjectTotals:
    """Per-plant matching summed over chips (each chip is matched on its own)."""

    def __init__(self, iou_threshold: float) -> None:
        from pvdetect.evaluation.metrics import ObjectMetrics

        self.iou_threshold = iou_threshold
        self.total = ObjectMetrics()

    def add(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray, area_m2: float) -> None:
        from pvdetect.evaluation.metrics import object_metrics

        if not pred.any() and not truth.any():
            return
        r = object_metrics(pred, truth, valid, area_m2, iou_threshold=self.iou_threshold)
        r.pairs = []  # keep memory flat over large splits
        self.total = self.total + r

    def section(self) -> dict[str, Any]:
        t = self.total
        d = t.to_dict()
        err = t.total_pred_ha - t.total_true_ha
        d.update(
            iou_threshold=self.iou_threshold,
            n_true=t.tp + t.fn,
            n_pred=t.tp + t.fp,
            area_error_ha=err,
            area_error_rel=err / t.total_true_ha if t.total_true_ha > 0 else None,
        )
        return clean_json(d)


def select_grid(per_image: list[dict[str, Any]], n: int) -> tuple[list[int], list[int]]:
    """Positions (in ``per_image``) of the ``n`` best and ``n`` worst chips by IoU.

    Only chips with true or predicted PV are ranked (others have no IoU); ties keep the
    split's order. The worst list never repeats a chip of the best list.
    """
    ranked = [
        (r["iou"] if r["iou"] is not None else 0.0, j)
        for j, r in enumerate(per_image)
        if r["pv_true"] > 0 or r["pv_pred"] > 0
    ]
    order = [j for _, j in sorted(ranked, key=lambda t: (-t[0], t[1]))]
    best = order[:n]
    rest = [j for j in reversed(order) if j not in best]
    return best, rest[:n]


def _grid_chips(
    predict_fn: PredictFn,
    cache: PackedCache,
    idx_all: np.ndarray,
    per_image: list[dict[str, Any]],
    threshold: float,
    dev: torch.device,
    factor: int,
    stats: dict[str, list[float]],
    band_names: Sequence[str],
    n: int,
) -> list[GridChip]:
    import torch

    from pvdetect.evaluation.figures import GridChip, rgb_stretch

    if n <= 0:
        return []
    best, worst = select_grid(per_image, n)
    picks = [(j, f"best {k + 1}") for k, j in enumerate(best)]
    picks += [(j, f"worst {k + 1}") for k, j in enumerate(worst)]
    if not picks:
        return []
    idx = np.array([idx_all[j] for j, _ in picks], dtype=np.int64)
    order = np.argsort(idx, kind="stable")  # memmap reads in increasing order
    raw_np = np.ascontiguousarray(cache.images[idx[order]])
    valid_np = np.ascontiguousarray(cache.valid[idx[order]])
    mask_np = np.ascontiguousarray(cache.masks[idx[order]])
    with torch.inference_mode():
        probs = _call(
            predict_fn,
            torch.from_numpy(raw_np).to(dev),
            torch.from_numpy(valid_np).to(dev),
            idx[order],
        )
        mask_t, valid_t = _to_resolution(
            probs, torch.from_numpy(mask_np).to(dev), torch.from_numpy(valid_np).to(dev), factor
        )
    probs_np = probs.cpu().numpy()
    mask_r = mask_t.cpu().numpy()
    valid_r = valid_t.cpu().numpy().astype(bool)
    rgb_idx = _rgb_bands(band_names)
    chips = []
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    for (j, label), pos in zip(picks, inv, strict=True):
        raw = raw_np[pos]
        if factor > 1:
            raw = raw.repeat(factor, -2).repeat(factor, -1)
        truth = mask_r[pos].copy()
        truth[~valid_r[pos]] = 255
        ys, xs = _extent(valid_r[pos] | (truth != 255))
        r = per_image[j]
        chips.append(
            GridChip(
                key=r["key"],
                site=r["site"],
                label=label,
                score=r["iou"],
                rgb=rgb_stretch(
                    raw[:, ys, xs], valid_r[pos][ys, xs], stats["p2"], stats["p98"], rgb_idx
                ),
                truth=truth[ys, xs],
                prob=probs_np[pos][ys, xs].astype(np.float32),
                threshold=threshold,
            )
        )
    return chips


def _extent(keep: np.ndarray, margin: int = 1) -> tuple[slice, slice]:
    """Rows and columns of the box around ``keep`` (padding and nodata frames cropped)."""
    rows, cols = np.flatnonzero(keep.any(1)), np.flatnonzero(keep.any(0))
    if rows.size == 0:
        return slice(None), slice(None)
    h, w = keep.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )


# ------------------------------------------------------------------------------ bundle


def _band_order(names: Sequence[str]) -> list[int] | None:
    """Cache band order (0-based file bands) for a bundle's band names; None = file order."""
    want = [n.lower() for n in names]
    have = [n.lower() for n in BAND_NAMES]
    if want == have[: len(want)]:
        return None
    try:
        return [have.index(n) for n in want]
    except ValueError:
        raise ConfigError(
            f"bundle band order {list(names)} uses bands other than {list(BAND_NAMES)}"
        ) from None


def load_split(
    data_root: str | Path,
    split: str,
    *,
    band_order: Sequence[int] | None = None,
    cache_dir: Path | None = None,
) -> tuple[PackedCache, np.ndarray]:
    """Find the chips, pack them and return the cache with the split's indices.

    Raises:
        DataError: the dataset cannot be read or the split has no chips.
    """
    from pvdetect.data.layouts import find_chips
    from pvdetect.data.packed import build_cache

    root = Path(data_root)
    records = find_chips(root)
    cache = build_cache(records, cache_dir=cache_dir, band_order=band_order)
    idx = np.asarray(cache.indices(split), dtype=np.int64)
    if idx.size == 0:
        have = sorted({r.split for r in records})
        raise DataError(f"{root}: split '{split}' has no chips (splits found: {', '.join(have)})")
    return cache, idx


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the output folder up front so a long evaluation never ends in a write error."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create output folder ({exc.strerror or exc})") from None
    if not out.is_dir():
        raise OutputError(f"{out}: not a folder")
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (no NaN: undefined metrics are null)."""
    text = json.dumps(clean_json(data), indent=1, allow_nan=False)
    with atomic_output(path) as tmp:
        tmp.write_text(text + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def comparison_entry(metrics: dict[str, Any]) -> dict[str, Any]:
    """The summary of one metrics dict kept in a comparison table."""
    th = metrics.get("threshold", {})
    return {
        "pixel": metrics.get("pixel", {}),
        "object": metrics.get("object", {}),
        "threshold": {k: th.get(k) for k in ("used", "source", "best", "at_best")},
    }


def _find_baselines(
    out: Path | None, explicit: Path | None, split: str, fingerprint: str
) -> tuple[dict[str, dict[str, Any]], str]:
    """Baseline metrics from an explicit file or ``OUT/../baselines/metrics.json``."""
    cands = [explicit] if explicit else ([out.parent / "baselines" / "metrics.json"] if out else [])
    for path in cands:
        if path is None or not path.is_file():
            if explicit:
                raise ConfigError(f"{explicit}: baselines metrics file not found")
            continue
        try:
            data = json.loads(path.read_text())
        except (ValueError, OSError):
            data = None
        entries = data.get("baselines") if isinstance(data, dict) else None
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            if explicit:
                raise DataError(f"{path}: not a metrics.json written by 'pvdetect baselines'")
            log.warning("%s: not a metrics.json of 'pvdetect baselines'; ignored", path)
            continue
        splits = {e.get("data", {}).get("split") for e in entries.values()}
        if splits != {split}:
            log.warning("%s: baselines were evaluated on %s, not %s; ignored", path, splits, split)
            if explicit:
                raise ConfigError(
                    f"{path}: baselines were evaluated on split(s) "
                    f"{', '.join(sorted(map(str, splits)))}, not {split}"
                )
            continue
        fps = {e.get("data", {}).get("fingerprint") for e in entries.values()}
        note = f"baselines from {path}"
        if fingerprint and fps != {fingerprint}:
            note += " (WARNING: computed on different data)"
        return entries, note
    return {}, ""


def evaluate_bundle(
    bundle_path: str | Path,
    data_root: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    *,
    batch_size: int = 40,
    device: str = "auto",
    tta: bool = False,
    threshold: float | None = None,
    native: bool = True,
    baselines: bool = False,
    baselines_json: str | Path | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a bundle on a split; with ``out_dir`` write metrics.json and report.html.

    Args:
        bundle_path: bundle folder or ``.pvb`` file.
        data_root: dataset folder (any layout of :mod:`pvdetect.data.layouts`).
        split: split to evaluate.
        out_dir: where to write ``metrics.json`` and ``report.html`` (None: write nothing).
        batch_size: chips per batch.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        tta: average the 8 flips/rotations.
        threshold: override the bundle's (validation-calibrated) threshold.
        native: evaluate at the chips' resolution (an upscaling bundle's predictions are
            averaged back down); False: at the upscaled resolution with nearest-upscaled masks.
        baselines: also fit the baselines on the training split and compare.
        baselines_json: a ``pvdetect baselines`` metrics.json to compare with.
        seed: seed of the baselines.
        cache_dir: packed-cache folder (default: beside the data).
        progress: print progress to stderr.

    Returns:
        The metrics dict (also written as ``metrics.json``).
    """
    from pvdetect.errors import BundleError
    from pvdetect.model.bundle import load_bundle

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1], got {threshold}")
    if baselines_json is not None and not Path(baselines_json).is_file():
        raise ConfigError(f"{baselines_json}: baselines metrics file not found")
    out = prepare_out_dir(out_dir) if out_dir is not None else None
    from pvdetect.device import resolve_device

    dev = resolve_device(device)
    bundle = load_bundle(Path(bundle_path), device=dev)
    meta = bundle.meta
    cache, idx = load_split(
        data_root, split, band_order=_band_order(meta.band_order), cache_dir=cache_dir
    )
    if cache.images.shape[1] != meta.in_channels:
        raise BundleError(
            f"{bundle_path}: model takes {meta.in_channels} bands, the chips have "
            f"{cache.images.shape[1]}"
        )
    factor = 1 if native else bundle.factor
    used = float(meta.threshold if threshold is None else threshold)
    source = (
        "command line"
        if threshold is not None
        else "bundle, chosen on validation for "
        + {"f1": "F1", "iou": "IoU"}.get(meta.threshold_metric, meta.threshold_metric)
    )

    def predict(raw: Any, valid: Any) -> Any:
        return bundle.predict_probs(raw, valid, tta=tta, native=native)

    info = {
        "name": "model",
        "kind": "bundle",
        "bundle": str(Path(bundle_path).resolve()),
        "arch": meta.arch,
        "encoder": meta.encoder,
        "upscale": {"factor": bundle.factor, "method": meta.upscale.method},
        "tta": bool(tta),
        "data_fingerprint": meta.data_fingerprint,
        "val_metrics": meta.val_metrics,
    }
    ev = evaluate_predictor(
        predict,
        cache,
        idx,
        used,
        batch_size=batch_size,
        device=dev,
        upscale_factor=factor,
        band_stats=meta.band_stats,
        band_names=meta.band_order,
        threshold_source=source,
        model_info=info,
        split=split,
        progress=progress,
    )
    metrics = ev.metrics
    metrics["data"]["root"] = str(Path(data_root).resolve())
    metrics["data"]["device"] = str(dev)

    entries: dict[str, dict[str, Any]] = {}
    base_evals: dict[str, Evaluation] = {}
    note = ""
    if baselines:
        from pvdetect.evaluation.baselines import evaluate_baselines

        base_evals = evaluate_baselines(
            cache,
            split,
            seed=seed,
            batch_size=batch_size,
            device=dev,
            n_grid=0,
            band_names=meta.band_order,
        )
        entries = {k: e.metrics for k, e in base_evals.items()}
        note = "baselines fitted on the training split in this run"
    else:
        entries, note = _find_baselines(
            out,
            Path(baselines_json) if baselines_json else None,
            split,
            metrics["data"]["fingerprint"],
        )
    if entries:
        if factor > 1:
            note += "; the model was evaluated upscaled, the baselines at native resolution"
        metrics["comparison"] = {
            "note": note,
            "entries": {"model": comparison_entry(metrics)}
            | {k: comparison_entry(v) for k, v in entries.items()},
        }
    if out is not None:
        from pvdetect.evaluation.report import (
            comparison_section,
            evaluation_section,
            html_page,
            info_table,
        )

        body = [
            info_table(
                {
                    "bundle": info["bundle"],
                    "architecture": f"{meta.arch} / {meta.encoder}",
                    "data": metrics["data"]["root"],
                    "split": split,
                    "chips": metrics["data"]["n_images"],
                    "threshold": f"{used:.4f} ({source})",
                    "test-time augmentation": "yes (D4)" if tta else "no",
                    "resolution": metrics["data"]["resolution"],
                    "pixel area": metrics["data"]["pixel_area"],
                    "device": metrics["data"]["device"],
                }
            )
        ]
        if entries:
            body.append(
                comparison_section({"model": metrics} | entries, note=metrics["comparison"]["note"])
            )
        body.append(evaluation_section(metrics, ev.grids, heading="Model", anchor="model"))
        write_json(out / "metrics.json", metrics)
        write_text(out / "report.html", html_page(f"pvdetect evaluation: {split}", "\n".join(body)))
    return metrics


# --------------------------------------------------------------------------------- CLI
