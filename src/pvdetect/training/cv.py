"""Site-grouped K-fold cross-validation: ``pvdetect train --cv K``.

The training and validation chips of the real datasets are dealt into K folds by site
(:func:`pvdetect.data.sources.cv_splits`; test chips and synthetic chips keep their split). Fold
k validates on its sites and trains on the others, as a normal run in ``RUN/fold-k/`` (its
``config.yaml`` has ``cv: K`` and ``cv_fold: k``, so ``pvdetect train --out RUN/fold-k
--resume`` continues that fold alone). Then::

    RUN/config.yaml   the configuration of the cross-validation
    RUN/cv.json       per fold: its run, validation chips and metrics; per metric the
                      mean, std (sample, n - 1), min and max over the folds
    RUN/cv.csv        one row per fold, then mean, std, min and max rows

``--resume`` skips the folds whose bundle is written, resumes a fold with a ``last.ckpt`` and
starts the others, so a killed cross-validation finishes what is missing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdetect.config import TrainConfig, config_from_dict, save_config
from pvdetect.device import env_rank_zero
from pvdetect.errors import BundleError, OutputError
from pvdetect.io import write_json, write_text

__all__ = ["CVResult", "cross_validate", "fold_dir", "summarize_folds"]

#: validation metrics summarised over the folds (from bundle.json val_metrics)
METRICS = ("iou", "f1", "precision", "recall", "loss", "threshold", "iou_at_0.5")


def fold_dir(run_dir: Path, fold: int) -> Path:
    """``RUN/fold-<fold>``."""
    return run_dir / f"fold-{fold}"


@dataclass
class CVResult:
    """What :func:`cross_validate` wrote."""

    run_dir: Path
    folds: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)

    def line(self) -> str:
        """One-line summary: validation IoU and F1, mean +- std (min..max)."""
        parts = []
        for key, label in (("iou", "IoU"), ("f1", "F1")):
            s = self.summary.get(key)
            if s:
                parts.append(
                    f"{label} {s['mean']:.4f} +- {s['std']:.4f} "
                    f"(min {s['min']:.4f}, max {s['max']:.4f})"
                )
        return f"cross-validation, {len(self.folds)} folds: validation " + ", ".join(parts)


def summarize_folds(values: list[float | None]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max of the finite values."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(v), "max": max(v), "n": len(v)}


def _fold_config(cfg: TrainConfig, run_dir: Path, fold: int, resume: bool) -> TrainConfig:
    data = cfg.to_dict()
    data.update(out=str(fold_dir(run_dir, fold)), cv_fold=fold, resume=resume)
    return config_from_dict(data)


def _finished(folder: Path) -> dict[str, Any] | None:
    """The ``bundle.json`` of a finished fold (None while it is not)."""
    from pvdetect.model.bundle_meta import parse_meta_json

    path = folder / "bundle" / "bundle.json"
    if not path.is_file():
        return None
    try:
        return parse_meta_json(path.read_text(encoding="utf-8"), str(folder)).to_dict()
    except (OSError, BundleError):
        return None


def _check_start(cfg: TrainConfig, run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder")
    if cfg.resume or not env_rank_zero():
        return
    held = [p for p in run_dir.glob("fold-*") if p.is_dir()] if run_dir.is_dir() else []
    if held or (run_dir / "cv.json").exists() or (run_dir / "checkpoints").exists():
        raise OutputError(
            f"{run_dir}: already holds a training run; pass --resume to continue it or "
            f"choose another --out"
        )


def cross_validate(config: TrainConfig) -> CVResult:
    """Run (or, with ``resume``, finish) the folds of ``config.cv`` and summarise them.

    Raises:
        ConfigError: invalid options, or fewer sites than folds.
        DataError: unusable data.
        OutputError: ``out`` holds another run (without ``resume``) or cannot be written.
    """
    from pvdetect.training.train import _resolve_paths, train

    cfg = _resolve_paths(config)
    assert cfg.cv is not None and cfg.out is not None
    run_dir = Path(cfg.out)
    _check_start(cfg, run_dir)
    if env_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = config_from_dict(cfg.to_dict())
        saved.resume = False
        save_config(saved, run_dir / "config.yaml")
    folds: list[dict[str, Any]] = []
    for k in range(1, cfg.cv + 1):
        folder = fold_dir(run_dir, k)
        meta = _finished(folder) if cfg.resume else None
        if meta is None:
            resume = cfg.resume and (folder / "checkpoints" / "last.ckpt").is_file()
            train(_fold_config(cfg, run_dir, k, resume))
            meta = _finished(folder)
            if meta is None:
                raise OutputError(f"{folder}: fold {k} finished without a bundle")
        folds.append(_fold_entry(k, folder, meta))
    result = CVResult(run_dir, folds, _summary(folds))
    if env_rank_zero():
        _write(result, cfg)
    return result


def _fold_entry(k: int, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    vm = meta.get("val_metrics") or {}
    entry: dict[str, Any] = {
        "fold": k,
        "run": str(folder),
        "metrics": {m: vm.get(m) for m in METRICS},
        "checkpoint": vm.get("checkpoint"),
    }
    sources = meta.get("sources") or []
    if len(sources) > 1:
        entry["sources"] = {
            s["name"]: {
                "iou": s["val_metrics"].get("iou"),
                "f1": s["val_metrics"].get("f1"),
                "val_chips": s["chips"].get("val", 0),
            }
            for s in sources
            if s.get("val_metrics")
        }
    entry["val_chips"] = sum(int(s.get("chips", {}).get("val", 0)) for s in sources) or None
    return entry


def _summary(folds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {m: summarize_folds([f["metrics"].get(m) for f in folds]) for m in METRICS}
    names = sorted({n for f in folds for n in f.get("sources", {})})
    for name in names:
        for m in ("iou", "f1"):
            out[f"{m}@{name}"] = summarize_folds(
                [f.get("sources", {}).get(name, {}).get(m) for f in folds]
            )
    return out


def _write(result: CVResult, cfg: TrainConfig) -> None:
    doc = {
        "folds": len(result.folds),
        "seed": cfg.seed,
        "grouping": "site (training and validation chips of the datasets)",
        "std": "sample standard deviation (n - 1)",
        "summary": result.summary,
        "per_fold": result.folds,
    }
    write_json(result.run_dir / "cv.json", doc)
    columns = list(result.summary)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["fold", *columns])
    for f in result.folds:
        row = [f["metrics"].get(c) if "@" not in c else None for c in columns]
        for i, c in enumerate(columns):
            if "@" in c:
                m, name = c.split("@", 1)
                row[i] = f.get("sources", {}).get(name, {}).get(m)
        writer.writerow([f["fold"], *("" if v is None else f"{v:.6g}" for v in row)])
    for stat in ("mean", "std", "min", "max"):
        values = [result.summary[c][stat] for c in columns]
        writer.writerow([stat, *("" if math.isnan(v) else f"{v:.6g}" for v in values)])
    write_text(result.run_dir / "cv.csv", buf.getvalue())


def read_cv(run_dir: Path) -> dict[str, Any]:
    """The contents of ``RUN/cv.json``."""
    return json.loads((run_dir / "cv.json").read_text(encoding="utf-8"))
