"""``evaluate`` of a model bundle on a split: metrics.json and a self-contained report.html.

The bundle's predictions go through :func:`~pvdetect.evaluation.engine.evaluate_predictor`,
the engine the baselines use too; with ``baselines`` they are fitted and evaluated in the same
run, else a ``pvdetect baselines`` metrics.json is looked up (:mod:`.comparison`). Several
datasets are evaluated together (a :class:`~pvdetect.data.sources.SourceSet`), with a
per-dataset section (``per_source``) and table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvdetect.data.exclude import read_exclude
from pvdetect.data.raster import BAND_NAMES
from pvdetect.errors import BundleError, ConfigError, DataError
from pvdetect.evaluation.comparison import comparison_entry, find_baselines
from pvdetect.evaluation.engine import EvalSettings, Evaluation, evaluate_predictor
from pvdetect.io import check_out_dir, prepare_out_dir, write_json, write_text

if TYPE_CHECKING:
    from pvdetect.model.bundle import Bundle

__all__ = ["EvaluateOptions", "bundle_band_order", "evaluate_bundle"]

log = logging.getLogger(__name__)


@dataclass
class EvaluateOptions:
    """Options of :func:`evaluate_bundle`.

    Attributes:
        batch_size: chips per batch.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        tta: average the flips/rotations of the dihedral group.
        threshold: override the bundle's (validation-calibrated) threshold.
        native: evaluate at the chips' resolution (an upscaling bundle's predictions are
            averaged back down); False: at the upscaled resolution with nearest-upscaled masks.
        baselines: also fit the baselines on the training split and compare.
        baselines_json: a ``pvdetect baselines`` metrics.json to compare with.
        seed: seed of the baselines.
        cache_dir: packed-cache folder (default: beside the data).
        progress: print progress to stderr.
        bands: chip bands in the bundle's order, names or 1-based indices (``--bands``);
            None: by the first chip's band names, else the bundle's order of R, G, B, NIR.
        offset: ``--offset`` (one value or one per band); with it or ``scale`` the chips'
            own scale/offset metadata is ignored (:mod:`pvdetect.data.radiometry`).
        scale: ``--scale``.
        exclude: chips to leave out (``--exclude``): a file or a list of entries
            (:mod:`pvdetect.data.exclude`), matched in every dataset; each entry must name a
            chip of at least one.
        mirror_windows: score each chip with its window mirrored over the chip (chips cut to
            their labels, as ``train --mirror-windows`` trains and validates on them).
    """

    batch_size: int = 40
    device: str = "auto"
    tta: bool = False
    threshold: float | None = None
    native: bool = True
    baselines: bool = False
    baselines_json: Path | None = None
    seed: int = 0
    cache_dir: Path | None = None
    progress: bool = False
    bands: str | Sequence[str | int] | None = None
    offset: str | float | Sequence[float] | None = None
    scale: str | float | Sequence[float] | None = None
    exclude: str | Sequence[str] | None = None
    mirror_windows: bool = False

    def check(self) -> None:
        """Refuse options out of range before anything is read."""
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be in [0, 1], got {self.threshold}")
        if self.baselines_json is not None and not Path(self.baselines_json).is_file():
            raise ConfigError(f"{self.baselines_json}: baselines metrics file not found")


def bundle_band_order(names: Sequence[str]) -> list[int] | None:
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


def _model_info(bundle: Bundle, path: Path, tta: bool) -> dict[str, Any]:
    meta = bundle.meta
    return {
        "name": "model",
        "kind": "bundle",
        "bundle": str(path.resolve()),
        "arch": meta.arch,
        "encoder": meta.encoder,
        "upscale": {"factor": bundle.factor, "method": meta.upscale.method},
        "tta": bool(tta),
        "data_fingerprint": meta.data_fingerprint,
        "val_metrics": meta.val_metrics,
    }


def _excluded_entry(exclude: Sequence[str], cache: Any) -> dict[str, Any]:
    """The ``data`` keys of an exclusion list: its entries and how many chips they named."""
    if not exclude:
        return {}
    return {"exclude": list(exclude), "excluded": sum(len(s.excluded) for s in cache.sources)}


def _load_data(
    roots: list[Path],
    split: str,
    band_order: list[int] | None,
    cache_dir: Path | None,
    exclude: Sequence[str] = (),
    **how: Any,
) -> tuple[Any, Any]:
    """The packed chips of one dataset (its cache) or several (a SourceSet) and the split.

    ``exclude``: entries of an exclusion list, left out of every dataset they name.
    ``how``: ``bands``, ``wanted`` and ``radiometry``, as :func:`load_split` takes them.
    """
    from pvdetect.data.loading import load_split

    if len(roots) == 1 and not exclude:
        return load_split(roots[0], split, band_order=band_order, cache_dir=cache_dir, **how)
    from pvdetect.data.exclude import check_matched, excluded_chips
    from pvdetect.data.sources import Source, SourceSet, open_dataset, source_name

    names: list[str] = []
    sources = []
    unmatched = set(exclude)
    for root in roots:
        name, k = source_name(root), 2
        while name in names:
            name, k = f"{source_name(root)}-{k}", k + 1
        names.append(name)
        cache = open_dataset(root, band_order=band_order, cache_dir=cache_dir, **how)
        gone, missed = excluded_chips(cache.records, root, exclude)
        unmatched &= missed
        settings = {"root": str(root)} | ({"exclude": list(exclude)} if exclude else {})
        sources.append(Source(name, "dataset", cache, settings=settings, excluded=tuple(gone)))
    check_matched(unmatched, f"--exclude ({', '.join(map(str, roots))})")
    sset = SourceSet(sources)
    for s, root in enumerate(roots):
        if sset.indices(split, s).size == 0:
            have = sorted({r.split for r in sources[s].cache.records})
            raise DataError(
                f"{root}: split '{split}' has no chips (splits found: {', '.join(have)})"
            )
    return sset, sset.indices(split)


def evaluate_bundle(
    bundle_path: str | Path,
    data_root: str | os.PathLike | Sequence[str | os.PathLike],
    split: str = "test",
    out_dir: str | Path | None = None,
    options: EvaluateOptions | None = None,
) -> dict[str, Any]:
    """Evaluate a bundle on a split; with ``out_dir`` write metrics.json and report.html.

    ``data_root`` is one dataset, or a list of datasets evaluated together (the metrics then
    have a ``per_source`` section, one entry per dataset). The output folder is created only
    once bundle and data have been read.

    Returns:
        The metrics dict (also written as ``metrics.json``).
    """
    from pvdetect.data.radiometry import RadiometryOptions
    from pvdetect.device import resolve_device
    from pvdetect.model.bundle import load_bundle

    roots = (
        [Path(data_root)]
        if isinstance(data_root, str | os.PathLike)
        else [Path(r) for r in data_root]
    )
    if not roots:
        raise ConfigError("no dataset to evaluate")
    opt = options or EvaluateOptions()
    opt.check()
    exclude = read_exclude(opt.exclude, "--exclude")
    radiometry = RadiometryOptions.parse(opt.offset, opt.scale)
    out = check_out_dir(out_dir) if out_dir is not None else None
    dev = resolve_device(opt.device)
    bundle = load_bundle(Path(bundle_path), device=dev)
    meta = bundle.meta
    cache, idx = _load_data(
        roots,
        split,
        bundle_band_order(meta.band_order),
        opt.cache_dir,
        exclude,
        bands=opt.bands,
        wanted=list(meta.band_order),
        radiometry=radiometry,
    )
    if cache.images.shape[1] != meta.in_channels:
        raise BundleError(
            f"{bundle_path}: model takes {meta.in_channels} bands, the chips have "
            f"{cache.images.shape[1]}"
        )
    used, source = _threshold(opt, meta)
    _check_mirroring(bundle_path, meta, opt.mirror_windows)

    def predict(raw: Any, valid: Any, indices: Any) -> Any:
        return bundle.predict_probs(raw, valid, tta=opt.tta, native=opt.native)

    settings = EvalSettings(
        batch_size=opt.batch_size,
        device=dev,
        upscale_factor=1 if opt.native else bundle.factor,
        band_stats=meta.band_stats,
        band_names=meta.band_order,
        threshold_source=source,
        model_info=_model_info(bundle, Path(bundle_path), opt.tta),
        split=split,
        progress=opt.progress,
        mirror_windows=opt.mirror_windows,
    )
    ev = evaluate_predictor(predict, cache, idx, used, settings)
    metrics = ev.metrics
    metrics["data"] |= _data_entry(roots, dev) | _excluded_entry(exclude, cache)
    entries, note = _baseline_entries(cache, split, out, opt, dev, meta.band_order, metrics)
    if entries:
        upscaled = not opt.native and bundle.factor > 1
        metrics["comparison"] = _comparison(metrics, entries, note, upscaled)
    if out is not None:
        prepare_out_dir(out)
        write_json(out / "metrics.json", metrics)
        write_text(out / "report.html", _report(metrics, ev, entries, used, source, opt.tta))
    return metrics


def _check_mirroring(bundle_path: str | Path, meta: Any, mirror: bool) -> None:
    """Warn when ``--mirror-windows`` differs from how the bundle's threshold was calibrated."""
    mirrored = bool((meta.val_metrics or {}).get("windows_mirrored"))
    if mirrored != mirror:
        log.warning(
            "%s: the threshold was calibrated with the windows %s; this evaluation scores "
            "them %s (%s --mirror-windows to score them as in training)",
            bundle_path,
            "mirrored" if mirrored else "as cut",
            "mirrored" if mirror else "as cut",
            "pass" if mirrored else "drop",
        )


def _comparison(
    metrics: dict[str, Any], entries: dict[str, Any], note: str, upscaled: bool
) -> dict[str, Any]:
    """``metrics.json`` ``comparison``: the model beside the baselines."""
    if upscaled:
        note += "; the model was evaluated upscaled, the baselines at native resolution"
    return {
        "note": note,
        "entries": {"model": comparison_entry(metrics)}
        | {k: comparison_entry(v) for k, v in entries.items()},
    }


def _data_entry(roots: list[Path], dev: Any) -> dict[str, Any]:
    """``metrics.json`` ``data``: the dataset(s) and the device."""
    entry: dict[str, Any] = {"root": ", ".join(str(r.resolve()) for r in roots)}
    if len(roots) > 1:
        entry["roots"] = [str(r.resolve()) for r in roots]
    return entry | {"device": str(dev)}


def _threshold(opt: EvaluateOptions, meta: Any) -> tuple[float, str]:
    """The threshold used and where it comes from (for the report)."""
    if opt.threshold is not None:
        return float(opt.threshold), "command line"
    metric = {"f1": "F1", "iou": "IoU"}.get(meta.threshold_metric, meta.threshold_metric)
    return float(meta.threshold), f"bundle, chosen on validation for {metric}"


def _baseline_entries(
    cache: Any,
    split: str,
    out: Path | None,
    opt: EvaluateOptions,
    dev: Any,
    band_names: Sequence[str],
    metrics: dict[str, Any],
) -> tuple[dict[str, dict[str, Any]], str]:
    """Baselines fitted in this run (``opt.baselines``) or found on disk, and a note."""
    if opt.baselines:
        from pvdetect.evaluation.baseline_runs import evaluate_baselines

        evals = evaluate_baselines(
            cache,
            split,
            seed=opt.seed,
            batch_size=opt.batch_size,
            device=dev,
            n_grid=0,
            band_names=band_names,
            mirror_windows=opt.mirror_windows,
        )
        return {k: e.metrics for k, e in evals.items()}, (
            "baselines fitted on the training split in this run"
        )
    explicit = Path(opt.baselines_json) if opt.baselines_json else None
    return find_baselines(
        out, explicit, split, metrics["data"]["fingerprint"], mirrored=opt.mirror_windows
    )


def _report(
    metrics: dict[str, Any],
    ev: Evaluation,
    entries: dict[str, dict[str, Any]],
    used: float,
    source: str,
    tta: bool,
) -> str:
    """The HTML page of an evaluation."""
    from pvdetect.evaluation.report import (
        comparison_section,
        evaluation_section,
        html_page,
        info_table,
        windows_row,
    )

    info, data = metrics["model"], metrics["data"]
    body = [
        info_table(
            {
                "bundle": info["bundle"],
                "architecture": f"{info['arch']} / {info['encoder']}",
                "data": data["root"],
                "split": data["split"],
                "chips": data["n_images"],
                "threshold": f"{used:.4f} ({source})",
                "test-time augmentation": "yes (D4)" if tta else "no",
                "resolution": data["resolution"],
                "pixel area": data["pixel_area"],
                "device": data["device"],
            }
            | windows_row(data)
        )
    ]
    if entries:
        body.append(
            comparison_section({"model": metrics} | entries, note=metrics["comparison"]["note"])
        )
    body.append(evaluation_section(metrics, ev.grids, heading="Model", anchor="model"))
    return html_page(f"pvdetect evaluation: {data['split']}", "\n".join(body))
