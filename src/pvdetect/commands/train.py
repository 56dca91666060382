"""``pvdetect train``: options (each a dotted configuration key), configuration, training.

Options come from the defaults, then ``--config cfg.yaml``, then the command-line flags that
were given. ``--resume`` continues from ``checkpoints/last.ckpt`` with the saved configuration
(flags still override it, e.g. a larger ``--epochs`` extends a finished run).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pvdetect.config import (
    ACCELERATORS,
    MONITORS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    THRESHOLD_METRICS,
    UPSCALE_FACTORS,
    UPSCALE_METHODS,
    TrainConfig,
    config_from_dict,
    merge,
    read_yaml,
)
from pvdetect.device import env_rank_zero
from pvdetect.errors import ConfigError
from pvdetect.training.train import train

# (flag, dotted config key, argparse keywords)
_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--out", "out", {"metavar": "RUN", "help": "run folder"}),
    ("--arch", "model.arch", {"help": "smp architecture (default unet)"}),
    ("--encoder", "model.encoder", {"help": "encoder (default resnet18; timm as tu-NAME)"}),
    ("--weights", "model.weights",
     {"metavar": "imagenet|PATH|none", "help": "pretrained encoder weights (default imagenet)"}),
    ("--epochs", "epochs", {"type": int, "help": "maximum epochs (default 100)"}),
    ("--batch-size", "data.batch_size", {"type": int, "help": "training batch size (default 5)"}),
    ("--val-batch-size", "data.val_batch_size", {"type": int, "help": "default 5"}),
    ("--test-batch-size", "data.test_batch_size", {"type": int, "help": "default 40"}),
    ("--accumulate", "accumulate",
     {"type": int, "metavar": "N", "help": "gradient accumulation over N batches"}),
    ("--lr", "optim.lr", {"type": float, "help": "learning rate (default 1e-3)"}),
    ("--schedule", "optim.schedule",
     {"choices": SCHEDULES, "help": "plateau (default) or cosine (warm-up + cosine decay)"}),
    ("--warmup", "optim.warmup",
     {"type": float, "metavar": "FRAC", "help": "warm-up share of the steps (cosine, 0.05)"}),
    ("--weight-decay", "optim.weight_decay", {"type": float, "help": "default 1e-4"}),
    ("--optimizer", "optim.optimizer", {"choices": OPTIMIZERS, "help": "default adamw"}),
    ("--gradient-clip", "optim.gradient_clip", {"type": float, "help": "clip the gradient norm"}),
    ("--loss", "loss.name", {"help": "loss (default bce_focal_jaccard)"}),
    ("--precision", "precision", {"choices": PRECISIONS, "help": "default auto"}),
    ("--compile", "compile",
     {"action": argparse.BooleanOptionalAction, "help": "torch.compile the network"}),
    ("--accelerator", "accelerator", {"choices": ACCELERATORS, "help": "default auto"}),
    ("--devices", "devices", {"help": "devices: auto, a count or ids like 0,1"}),
    ("--num-nodes", "num_nodes", {"type": int, "help": "nodes (default 1)"}),
    ("--strategy", "strategy", {"help": "Lightning strategy: auto, ddp, ... (default auto)"}),
    ("--upscale-factor", "upscale.factor",
     {"type": int, "choices": UPSCALE_FACTORS, "help": "upscale inputs (default 1)"}),
    ("--upscale-method", "upscale.method", {"choices": UPSCALE_METHODS, "help": "default bicubic"}),
    ("--sr-weights", "upscale.sr_weights", {"metavar": "PATH", "help": "super-resolution model"}),
    ("--crop-size", "data.crop_size",
     {"type": int, "metavar": "PX", "help": "training crop at model resolution (default chip)"}),
    ("--crop-pv", "data.crop_pv",
     {"type": float, "metavar": "P", "help": "share of crops placed on PV (default 0)"}),
    ("--no-augment", "data.augment",
     {"action": "store_const", "const": False, "help": "no random flips/rotations"}),
    ("--drop-empty", "data.drop_empty",
     {"type": float, "metavar": "P", "help": "probability of dropping a chip without PV"}),
    ("--oversample-pv", "data.oversample_pv",
     {"type": float, "metavar": "W", "help": "PV chips drawn 1+W times as often"}),
    ("--num-workers", "data.num_workers", {"type": int, "help": "loader workers (default 2)"}),
    ("--cache-dir", "data.cache_dir", {"metavar": "DIR", "help": "packed cache location"}),
    ("--band-order", "data.band_order",
     {"metavar": "I,J,K,L", "help": "0-based source bands used as R,G,B,NIR"}),
    ("--val-fraction", "data.val_fraction", {"type": float, "help": "when the layout has none"}),
    ("--test-fraction", "data.test_fraction", {"type": float, "help": "when the layout has none"}),
    ("--seed", "seed", {"type": int, "help": "seed (default 0)"}),
    ("--resume", "resume",
     {"action": "store_const", "const": True, "help": "continue RUN from checkpoints/last.ckpt"}),
    ("--tensorboard", "tensorboard",
     {"action": "store_const", "const": True, "help": "TensorBoard logs in RUN/logs"}),
    ("--max-minutes", "max_minutes",
     {"type": float, "metavar": "MIN", "help": "stop training after MIN minutes"}),
    ("--val-every", "val_every",
     {"type": int, "metavar": "N", "help": "validate every N epochs (default 1)"}),
    ("--max-train-batches", "max_train_batches",
     {"type": int, "metavar": "N", "help": "limit batches per epoch (debugging)"}),
    ("--max-val-batches", "max_val_batches",
     {"type": int, "metavar": "N", "help": "limit validation batches (debugging)"}),
    ("--threshold-metric", "threshold_metric",
     {"choices": THRESHOLD_METRICS, "help": "score the calibrated threshold maximises"}),
    ("--monitor", "monitor", {"choices": MONITORS, "help": "selects best.ckpt (default val_loss)"}),
    ("--patience", "patience", {"type": int, "help": "early-stopping patience (default 20)"}),
    ("--overlap", "overlap", {"type": int, "help": "tile overlap in the bundle (default tile/4)"}),
    ("--no-progress", "progress",
     {"action": "store_const", "const": False, "help": "no progress bar"}),
]  # fmt: skip


def _dest(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect train`` (all default to None: "not given")."""
    parser.add_argument("data", nargs="?", metavar="DATA", help="dataset folder or CSV manifest")
    parser.add_argument("--config", metavar="YAML", help="configuration file")
    for flag, key, kwargs in _OPTIONS:
        if "metavar" not in kwargs and kwargs.get("action") is None and "choices" not in kwargs:
            kwargs = {**kwargs, "metavar": flag.lstrip("-").replace("-", "_").upper()}
        parser.add_argument(flag, dest=_dest(key), default=None, **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys of the options given on the command line."""
    out: dict[str, Any] = {}
    for _, key, _ in _OPTIONS:
        value = getattr(args, _dest(key), None)
        if value is not None:
            out[key] = value
    if getattr(args, "data", None) is not None:
        out["data.root"] = args.data
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- ``--config`` YAML (or, with ``--resume``, RUN/config.yaml) <- flags."""
    overrides = overrides_from_args(args)
    base: dict[str, Any] = {}
    source: str | None = None
    if getattr(args, "config", None):
        source = str(args.config)
        base = read_yaml(args.config)
    elif overrides.get("resume") and overrides.get("out"):
        saved = Path(overrides["out"]) / "config.yaml"
        if saved.is_file():
            source = str(saved)
            base = read_yaml(saved)
    try:
        cfg = config_from_dict(merge(base, overrides))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    if not cfg.data.root:
        raise ConfigError("no dataset given: pass DATA or set data.root in the --config file")
    if not cfg.out:
        raise ConfigError("no run folder given: pass --out RUN or set out in the --config file")
    return cfg


def run(args: argparse.Namespace) -> int:
    """CLI entry: train, then print where the run and bundle are and the val scores."""
    cfg = config_from_args(args)
    run_dir = train(cfg)
    if env_rank_zero():
        import json

        meta = json.loads((run_dir / "bundle" / "bundle.json").read_text())
        vm = meta.get("val_metrics", {})
        print(f"run folder: {run_dir}")
        print(f"bundle:     {run_dir / 'bundle'}")
        iou, f1 = vm.get("iou", float("nan")), vm.get("f1", float("nan"))
        print(
            f"validation: IoU {iou:.4f}  F1 {f1:.4f}"
            f"  at threshold {meta.get('threshold', float('nan')):.3f}"
            f" ({meta.get('threshold_metric')}-optimal)"
        )
    return 0
