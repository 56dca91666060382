"""The model bundle: everything ``predict`` and ``evaluate`` need, and nothing that runs code.

A bundle is a folder holding ``bundle.json`` (metadata) and ``model.safetensors`` (weights), plus
``sr_model.safetensors`` when the bundle upscales with a super-resolution model; or the same
files in one zip archive with the suffix ``.pvb``. Weights are only ever read with safetensors,
so opening a bundle from someone else never unpickles anything.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pvdetect.errors import BundleError
from pvdetect.io import atomic_output, first_line
from pvdetect.model.bundle_meta import (  # noqa: F401 - FORMAT_VERSION, UpscaleMeta re-exported
    FORMAT_VERSION,
    META_NAME,
    BundleMeta,
    UpscaleMeta,
    parse_meta_json,
)
from pvdetect.model.onnx_runtime import ONNX_NAME, RUNTIME, load_onnx_bundle
from pvdetect.model.runtime import Bundle

WEIGHTS_NAME = "model.safetensors"
SR_NAME = "sr_model.safetensors"


def _write_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def _copy_sr_weights(src: Path, dst: Path) -> None:
    """Store SR weights as safetensors, whatever format the user gave.

    The tensors are read by :func:`~pvdetect.model.factory.read_state_dict`, the reader
    training uses, so the bundle ships exactly the network that training ran (for a BasicSR
    checkpoint holding both ``params_ema`` and ``params``: the EMA weights).
    """
    from safetensors.torch import save_file

    from pvdetect.errors import ConfigError
    from pvdetect.model.factory import read_state_dict

    try:
        state = read_state_dict(src)
    except ConfigError as exc:
        raise BundleError(f"cannot read super-resolution weights: {exc}") from None
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst))


def save_bundle(path: str | Path, model: nn.Module, meta: BundleMeta) -> Path:
    """Write a bundle folder (or a ``.pvb`` file when ``path`` ends so), atomically.

    ``meta.upscale.sr_weights`` may name any local SR weights file; it is copied into the
    bundle as safetensors and the metadata then names the copy.
    """
    path = Path(path)
    meta = BundleMeta.from_dict(meta.to_dict())
    if not meta.created:
        meta.created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=_parent(path)) as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        _write_weights(model, stage / WEIGHTS_NAME)
        if meta.upscale.method == "sr" and meta.upscale.factor > 1:
            if not meta.upscale.sr_weights:
                raise BundleError(f"{path}: upscale method 'sr' needs sr_weights")
            src = Path(meta.upscale.sr_weights)
            if src.name != SR_NAME or src.parent != stage:
                _copy_sr_weights(src, stage / SR_NAME)
            meta.upscale.sr_weights = SR_NAME
        (stage / META_NAME).write_text(json.dumps(meta.to_dict(), indent=2, allow_nan=False))
        if path.suffix == ".pvb":
            with atomic_output(path) as out, zipfile.ZipFile(out, "w") as zf:
                for f in sorted(stage.iterdir()):
                    zf.write(f, f.name)
        else:
            if path.exists():
                old = Path(tmp) / "old"
                path.rename(old)
            stage.rename(path)
    return path


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


@contextlib.contextmanager
def _bundle_dir(path: Path) -> Iterator[Path]:
    """The folder holding the bundle files (a zip is extracted to a temporary folder)."""
    if path.is_dir():
        yield path
        return
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path}: not a bundle (expected a folder or a .pvb archive)")
    with tempfile.TemporaryDirectory(prefix="pvdetect-bundle-") as tmp:
        with zipfile.ZipFile(path) as zf:
            names = {n for n in zf.namelist() if "/" not in n and ".." not in n}
            for name in names & {META_NAME, WEIGHTS_NAME, SR_NAME, ONNX_NAME}:
                zf.extract(name, tmp)
        yield Path(tmp)


def read_meta(path: str | Path) -> BundleMeta:
    """Read only the metadata of a bundle."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: bundle not found")
    with _bundle_dir(path) as d:
        return _read_meta(path, d)[0]


def _read_meta(path: Path, d: Path) -> tuple[BundleMeta, str]:
    """The metadata of the bundle opened in ``d`` and its ``runtime`` (``"torch"`` when
    absent; ``"onnx"`` for an exported bundle), from one read of ``bundle.json``."""
    meta_file = d / META_NAME
    if not meta_file.is_file():
        raise BundleError(f"{path}: not a bundle ({META_NAME} missing)")
    try:
        text = meta_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: {META_NAME}: cannot be read ({first_line(exc)})") from None
    meta = parse_meta_json(text, str(path))  # valid JSON of an object from here on
    return meta, str(json.loads(text).get("runtime", "torch"))


def _load_sr(path: Path, d: Path, meta: BundleMeta) -> nn.Module | None:
    """The super-resolution network of an ``sr`` bundle opened in ``d`` (None otherwise)."""
    if meta.upscale.factor <= 1 or meta.upscale.method != "sr":
        return None
    from pvdetect.model.sr import load_sr_model

    sr_file = d / (meta.upscale.sr_weights or SR_NAME)
    if not sr_file.is_file():
        raise BundleError(f"{path}: super-resolution weights {sr_file.name} missing")
    stats = meta.band_stats
    return load_sr_model(sr_file, meta.upscale.factor, mean=stats["mean"], std=stats["std"])


def read_weights(path: str | Path) -> tuple[BundleMeta, dict[str, torch.Tensor]]:
    """The metadata and the network's state dict of a bundle (what fine-tuning starts from).

    Raises:
        BundleError: no bundle there, an ONNX export (no trainable weights), or unreadable
            weights.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: bundle not found")
    with _bundle_dir(path) as d:
        meta, runtime = _read_meta(path, d)
        if runtime == RUNTIME:
            raise BundleError(
                f"{path}: an ONNX export holds no trainable weights; give the bundle it was "
                "exported from"
            )
        return meta, _read_state(path, d)


def _read_state(path: Path, d: Path) -> dict[str, torch.Tensor]:
    """The network's state dict of the bundle opened in ``d`` (safetensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = d / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"{path}: not a bundle ({WEIGHTS_NAME} missing)")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{path}: weights do not load ({first_line(exc)})") from None


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle; weights only through safetensors (or an ONNX graph for onnxruntime)."""
    from pvdetect.errors import ConfigError
    from pvdetect.model.factory import build_model

    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: bundle not found")
    with _bundle_dir(path) as d:
        meta, runtime = _read_meta(path, d)
        sr = _load_sr(path, d, meta)
        if runtime == RUNTIME:  # exported by ``pvdetect export --onnx``: onnxruntime runs it
            return load_onnx_bundle(path, d, meta, sr, device)
        state = _read_state(path, d)
        try:
            model = build_model(meta.arch, meta.encoder, in_channels=meta.in_channels)
        except ConfigError as exc:
            raise BundleError(f"{path}: {exc}") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise BundleError(f"{path}: weights do not load ({first_line(exc)})") from None
    return Bundle(meta, model, sr).to(device)
