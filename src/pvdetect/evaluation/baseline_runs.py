"""The baselines run as ``pvdetect baselines`` runs them: fitted on the training split,
evaluated on a split by the engine every model goes through, and reported."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvdetect.data.raster import BAND_NAMES
from pvdetect.errors import ConfigError, DataError
from pvdetect.evaluation.baselines import BASELINE_NAMES, DEFAULT_SAMPLE, fit_baselines
from pvdetect.io import check_out_dir, prepare_out_dir, write_json, write_text

if TYPE_CHECKING:
    from pvdetect.data.packed import PackedCache
    from pvdetect.evaluation.engine import Evaluation

__all__ = ["evaluate_baselines", "run_baselines"]


def evaluate_baselines(
    cache: PackedCache,
    split: str,
    *,
    seed: int = 0,
    batch_size: int = 40,
    device: Any = "cpu",
    n_grid: int = 4,
    names: Sequence[str] = BASELINE_NAMES,
    sample_size: int = DEFAULT_SAMPLE,
    band_names: Sequence[str] = BAND_NAMES,
    class_weight: str | None = None,
    mirror_windows: bool = False,
) -> dict[str, Evaluation]:
    """Fit on the training split, evaluate every baseline on ``split`` with the engine
    (with ``mirror_windows``, on the chips' windows mirrored, as ``evaluate --mirror-windows``)."""
    from pvdetect.evaluation.engine import EvalSettings, evaluate_predictor

    idx = cache.indices(split)
    if len(idx) == 0:
        raise DataError(f"{cache.root}: split '{split}' has no chips")
    fitted = fit_baselines(
        cache,
        seed=seed,
        names=names,
        sample_size=sample_size,
        band_names=band_names,
        class_weight=class_weight,
    )
    results = {}
    for name, b in fitted.items():
        settings = EvalSettings(
            batch_size=batch_size,
            device=device,
            band_stats=cache.stats.to_dict(),
            band_names=band_names,
            n_grid=n_grid,
            threshold_source="fitted on the training split",
            model_info={
                "name": name,
                "kind": "baseline",
                "params": b.params(),
                "fitted_on": "train",
                "seed": seed,
            },
            split=split,
            mirror_windows=mirror_windows,
        )
        results[name] = evaluate_predictor(b, cache, idx, b.threshold, settings)
    return results


def run_baselines(
    data_root: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    *,
    seed: int = 0,
    batch_size: int = 40,
    device: str = "auto",
    sample_size: int = DEFAULT_SAMPLE,
    class_weight: str | None = None,
    cache_dir: Path | None = None,
    mirror_windows: bool = False,
) -> dict[str, Any]:
    """Fit and evaluate all baselines; with ``out_dir`` write metrics.json and report.html
    (``mirror_windows``: scored on the chips' windows mirrored, see :func:`evaluate_baselines`).

    The output folder is created only once the data have been read.

    Returns:
        ``{"baselines": {name: metrics}, "split": split, "seed": seed}``.
    """
    from pvdetect.data.loading import load_split
    from pvdetect.device import resolve_device

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if sample_size < 100:
        raise ConfigError(f"--sample-size must be >= 100, got {sample_size}")
    out = check_out_dir(out_dir) if out_dir is not None else None
    dev = resolve_device(device)
    cache, _ = load_split(data_root, split, cache_dir=cache_dir)
    evals = evaluate_baselines(
        cache,
        split,
        seed=seed,
        batch_size=batch_size,
        device=dev,
        sample_size=sample_size,
        class_weight=class_weight,
        mirror_windows=mirror_windows,
    )
    root = str(Path(data_root).resolve())
    for e in evals.values():
        e.metrics["data"]["root"] = root
        e.metrics["data"]["device"] = str(dev)
    result = {"baselines": {k: e.metrics for k, e in evals.items()}, "split": split, "seed": seed}
    if out is not None:
        prepare_out_dir(out)
        write_json(out / "metrics.json", result)
        write_text(out / "report.html", _report(result, evals, root, split, seed))
    return result


def _report(
    result: dict[str, Any], evals: dict[str, Evaluation], root: str, split: str, seed: int
) -> str:
    """The HTML page of the baselines."""
    from pvdetect.evaluation.report import (
        comparison_section,
        evaluation_section,
        html_page,
        info_table,
        windows_row,
    )

    data = next(iter(evals.values())).metrics["data"]
    body = [
        info_table(
            {
                "data": root,
                "split": split,
                "chips": data["n_images"],
                "seed": seed,
                "fitted on": "training split",
            }
            | windows_row(data)
        ),
        '<p class="note">' + _definitions_html() + "</p>",
        comparison_section(result["baselines"]),
    ]
    for name, e in evals.items():
        body.append(
            evaluation_section(
                e.metrics, e.grids, heading=f"Baseline: {name}", compact=True, anchor=name
            )
        )
    return html_page(f"pvdetect baselines: {split}", "\n".join(body))


def _definitions_html() -> str:
    from pvdetect.evaluation.report import esc

    return "<br>".join(
        esc(s)
        for s in (
            "random: uniform scores seeded per chip, PV when the score >= 1 - training PV rate.",
            "nir_threshold: PV when NIR is below (or above) the threshold with the best "
            "training F1.",
            "logistic: logistic regression on R, G, B, NIR and NDVI (standardised), threshold with "
            "the best F1 on the training sample.",
        )
    )
