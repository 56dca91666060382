"""``pvdetect train``: options (each a dotted configuration key), configuration, training.

The options are generated from the configuration models in :mod:`pvdetect.config`: a field with
a ``flag`` in its ``json_schema_extra`` becomes that option, with the field's description (and
default) as its help and argparse settings derived from its type (``Literal`` -> ``choices``,
int/float -> ``type``) and extras (``metavar``, ``action``). One argument group per section.

Options come from the defaults, then ``--config cfg.yaml``, then the command-line flags that
were given. ``--resume`` continues from ``checkpoints/last.ckpt`` with the saved configuration
(flags still override it, e.g. a larger ``--epochs`` extends a finished run). ``--print-config``
prints the resolved configuration as YAML and exits without training or writing anything; it
needs neither DATA nor ``--out`` (they are then null in the output).
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from pvdetect.config import (
    SECTIONS,
    TrainConfig,
    check_model_sizes,
    config_from_dict,
    dump_config,
    iter_fields,
    merge,
    read_yaml,
)
from pvdetect.device import env_rank_zero
from pvdetect.errors import ConfigError

_ACTIONS = {
    "store_const": "store_const",
    "boolean_optional": argparse.BooleanOptionalAction,
    "append": "append",
}


def _dest(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _plain_type(annotation: Any) -> Any:
    """The annotation without ``None`` (``int | None`` -> ``int``)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    return annotation


def argparse_kwargs(flag: str, info: FieldInfo) -> dict[str, Any]:
    """``add_argument`` keywords of a field's flag (default None: "not given")."""
    extra = dict(info.json_schema_extra or {})  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {"default": None}
    help_text = (info.description or "").replace("%", "%%")
    action = extra.get("action")
    if action == "append":
        kwargs["action"] = "append"
        kwargs["metavar"] = extra.get("metavar", flag.lstrip("-").replace("-", "_").upper())
    elif action:
        kwargs["action"] = _ACTIONS[action]
        if "const" in extra:
            kwargs["const"] = extra["const"]
    else:
        tp = _plain_type(info.annotation)
        if typing.get_origin(tp) is typing.Literal:
            choices = typing.get_args(tp)
            kwargs["choices"] = choices
            if all(isinstance(c, int) for c in choices):
                kwargs["type"] = int
        elif tp in (int, float) and not extra.get("as_text"):
            kwargs["type"] = tp
        if "choices" not in kwargs:
            kwargs["metavar"] = extra.get("metavar", flag.lstrip("-").replace("-", "_").upper())
        default = info.get_default(call_default_factory=True)
        shown = _show(default) if default is not None else extra.get("default_text")
        if shown is not None:
            help_text += f" (default: {shown})".replace("%", "%%")
    kwargs["help"] = help_text
    return kwargs


#: (flag, dotted configuration key, field) of every option, in declaration order
OPTIONS: list[tuple[str, str, FieldInfo]] = [
    (str(info.json_schema_extra["flag"]), key, info)  # type: ignore[index]
    for key, info in iter_fields()
    if isinstance(info.json_schema_extra, dict) and "flag" in info.json_schema_extra
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect train`` (all default to None: "not given")."""
    parser.add_argument("data", nargs="?", metavar="DATA", help="dataset folder or CSV manifest")
    parser.add_argument("--config", metavar="YAML", help="configuration file")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (defaults <- --config <- flags) as YAML and "
        "exit; trains and writes nothing, needs neither DATA nor --out",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for section, model in SECTIONS.items():
        doc = (model.__doc__ or "").strip().splitlines()[0].rstrip(".")
        groups[section] = parser.add_argument_group(f"{section} options ({section}.*)", doc)
    run_group = parser.add_argument_group("run options", "Top-level keys of the configuration.")
    for flag, key, info in OPTIONS:
        section = key.split(".", 1)[0] if "." in key else None
        group = groups[section] if section else run_group
        group.add_argument(flag, dest=_dest(key), **argparse_kwargs(flag, info))


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys of the options given on the command line."""
    out: dict[str, Any] = {}
    for _, key, _ in OPTIONS:
        value = getattr(args, _dest(key), None)
        if value is not None:
            out[key] = value
    if getattr(args, "data", None) is not None:
        out["data.root"] = args.data
    return out


def config_from_args(args: argparse.Namespace, need_paths: bool = True) -> TrainConfig:
    """Defaults <- ``--config`` YAML (or, with ``--resume``, RUN/config.yaml) <- flags.

    Args:
        args: Parsed ``pvdetect train`` arguments.
        need_paths: Refuse a configuration without a dataset or a run folder.
    """
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
    merged = merge(base, overrides)
    try:
        cfg = config_from_dict(merged)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    if cfg.model.init_from:
        _model_of_start(cfg, given=merged.get("model") or {})
    if need_paths and not cfg.data.has_data():
        raise ConfigError(
            "no dataset given: pass DATA, --data or --synthetic, or set data.root, data.sources "
            "or data.synthetic in the --config file"
        )
    if need_paths and not cfg.out:
        raise ConfigError("no run folder given: pass --out RUN or set out in the --config file")
    return cfg


def _model_of_start(cfg: TrainConfig, given: dict[str, Any]) -> None:
    """``--init-from``: the architecture and encoder not given are the starting bundle's."""
    from pvdetect.errors import BundleError
    from pvdetect.model.bundle import read_meta
    from pvdetect.training.start import start_path

    path = start_path(cfg.model.init_from, 1 if cfg.cv else None)
    try:
        meta = read_meta(path)
    except BundleError as exc:
        raise ConfigError(f"model.init_from: {exc}") from None
    if "arch" not in given:
        cfg.model.arch = meta.arch
    if "encoder" not in given:
        cfg.model.encoder = meta.encoder


def run(args: argparse.Namespace) -> int:
    """CLI entry: train, then print where the run and bundle are and the val scores."""
    if getattr(args, "print_config", False):
        sys.stdout.write(dump_config(config_from_args(args, need_paths=False)))
        return 0
    cfg = config_from_args(args)
    check_model_sizes(cfg)

    if cfg.cv and cfg.cv_fold is None:
        from pvdetect.training.cv import cross_validate

        result = cross_validate(cfg)
        if env_rank_zero():
            print(f"run folder: {result.run_dir} (folds in fold-1..{cfg.cv}, cv.json, cv.csv)")
            print(result.line())
        return 0

    from pvdetect.training.train import train

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
        sources = meta.get("sources") or []
        for src in sources if len(sources) > 1 else []:
            m = src.get("val_metrics") or {}
            if m:
                counted = "" if m.get("primary") else " (not in the totals)"
                print(f"  {src['name']}: IoU {m['iou']:.4f}  F1 {m['f1']:.4f}{counted}")
    return 0
