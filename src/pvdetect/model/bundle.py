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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pvdetect import __version__
from pvdetect.data.raster import BAND_NAMES, DEFAULT_NODATA
from pvdetect.device import autocast_dtype
from pvdetect.errors import BundleError
from pvdetect.io import atomic_output, first_line
from pvdetect.model.preprocessing import Preprocessor, run_model, tta_elements, tta_probs

FORMAT_VERSION = 1
META_NAME = "bundle.json"
WEIGHTS_NAME = "model.safetensors"
SR_NAME = "sr_model.safetensors"
ONNX_NAME = "model.onnx"  # bundles of ``"runtime": "onnx"`` (pvdetect.inference.onnx)


@dataclass
class UpscaleMeta:
    """How inputs are upscaled before the model (factor 1 = not at all)."""

    factor: int = 1
    method: str = "bicubic"
    sr_weights: str | None = None  # inside a bundle: the file name of the SR weights


@dataclass
class BundleMeta:
    """Contents of ``bundle.json``; see docs/architecture.md."""

    arch: str
    encoder: str
    band_stats: dict[str, list[float]]
    in_channels: int = 4
    band_order: list[str] = field(default_factory=lambda: list(BAND_NAMES))
    input_scale: float = 1.0
    nodata: float = DEFAULT_NODATA
    threshold: float = 0.5
    threshold_metric: str = "f1"
    upscale: UpscaleMeta = field(default_factory=UpscaleMeta)
    tile_size: int = 256
    overlap: int = 64
    data_fingerprint: str = ""
    val_metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    pvdetect_version: str = __version__
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleMeta:
        """Build from a dict, ignoring unknown keys written by newer versions."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        up = kwargs.get("upscale") or {}
        kwargs["upscale"] = up if isinstance(up, UpscaleMeta) else UpscaleMeta(**up)
        return cls(**kwargs)


class Bundle:
    """A loaded bundle: metadata, model, and the preprocessing used in training."""

    def __init__(self, meta: BundleMeta, model: nn.Module, sr: nn.Module | None = None) -> None:
        self.meta = meta
        self.model = model.eval()
        self.device = torch.device("cpu")
        stats = meta.band_stats
        self.pre = Preprocessor(
            stats["mean"],
            stats["std"],
            factor=int(meta.upscale.factor),
            method=meta.upscale.method,
            sr=sr,
            input_scale=float(meta.input_scale),
        )

    @property
    def factor(self) -> int:
        """Upscaling factor applied before the model."""
        return int(self.meta.upscale.factor)

    @property
    def sr(self) -> nn.Module | None:
        """The super-resolution network of an ``sr`` bundle."""
        return self.pre.sr

    @property
    def multiple(self) -> int:
        """Input side the model needs to be divisible by."""
        from pvdetect.model.factory import required_multiple

        return required_multiple(self.meta.arch, self.meta.encoder)

    def to(self, device: str | torch.device) -> Bundle:
        """Move model (channels_last), statistics and SR network to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device, memory_format=torch.channels_last)
        self.pre.to(self.device)
        return self

    @torch.inference_mode()
    def predict_probs(
        self, raw: Tensor, valid: Tensor, tta: bool = False, native: bool = True
    ) -> Tensor:
        """PV probabilities for raw reflectance tiles.

        Args:
            raw: ``[B, C, H, W]`` reflectance in the bundle's band order (nodata anywhere).
            valid: ``[B, H, W]`` bool, True where the pixel is valid.
            tta: average the flips/rotations of the dihedral group (8 for square tiles).
            native: with an upscaling bundle, average the upscaled prediction back onto the
                input grid (True) or return it at the upscaled resolution (False).

        Returns:
            float32 ``[B, H', W']`` probabilities, 0 at invalid pixels.
        """
        raw = raw.to(self.device, torch.float32, non_blocking=True)
        valid = valid.to(self.device, non_blocking=True).bool()
        x, _ = self.pre.model_input(raw, valid)
        elements = tta_elements(*x.shape[-2:]) if tta else (0,)
        probs = tta_probs(self._forward, x, elements)
        return self.pre.output_probs(probs, valid, native)

    def _forward(self, x: Tensor) -> Tensor:
        """Sigmoid of the model on normalised input ``[B, C, H, W]`` -> ``[B, H, W]``."""
        with torch.autocast(self.device.type, dtype=autocast_dtype(self.device)):
            logits = run_model(self.model, x, self.multiple)
        return torch.sigmoid(logits.float())[:, 0]


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
        return _read_meta(path, d)


def _read_meta(path: Path, d: Path) -> BundleMeta:
    meta_file = d / META_NAME
    if not meta_file.is_file():
        raise BundleError(f"{path}: not a bundle ({META_NAME} missing)")
    try:
        data = json.loads(meta_file.read_text())
        meta = BundleMeta.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{path}: {META_NAME} is invalid ({exc})") from None
    if meta.format_version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {meta.format_version} is newer than this pvdetect "
            f"supports ({FORMAT_VERSION}); upgrade pvdetect"
        )
    if len(meta.band_stats.get("mean", [])) != meta.in_channels:
        raise BundleError(f"{path}: band statistics do not match {meta.in_channels} bands")
    return meta


def _runtime(d: Path) -> str:
    """The ``runtime`` key of ``bundle.json`` (``"torch"`` when absent)."""
    try:
        return str(json.loads((d / META_NAME).read_text()).get("runtime", "torch"))
    except (ValueError, AttributeError):
        return "torch"


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle; weights only through safetensors (or an ONNX graph for onnxruntime)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from pvdetect.errors import ConfigError
    from pvdetect.model.factory import build_model

    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: bundle not found")
    with _bundle_dir(path) as d:
        meta = _read_meta(path, d)
        if _runtime(d) == "onnx":  # exported by ``pvdetect export --onnx``: onnxruntime runs it
            from pvdetect.inference.onnx import load_onnx_bundle

            return load_onnx_bundle(path, d, meta, device)
        weights = d / WEIGHTS_NAME
        if not weights.is_file():
            raise BundleError(f"{path}: not a bundle ({WEIGHTS_NAME} missing)")
        try:
            model = build_model(meta.arch, meta.encoder, in_channels=meta.in_channels)
        except ConfigError as exc:
            raise BundleError(f"{path}: {exc}") from None
        try:
            state = load_file(str(weights))
            model.load_state_dict(state)
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise BundleError(f"{path}: weights do not load ({first_line(exc)})") from None
        sr = None
        if meta.upscale.factor > 1 and meta.upscale.method == "sr":
            from pvdetect.model.sr import load_sr_model

            sr_file = d / (meta.upscale.sr_weights or SR_NAME)
            if not sr_file.is_file():
                raise BundleError(f"{path}: super-resolution weights {sr_file.name} missing")
            stats = meta.band_stats
            sr = load_sr_model(sr_file, meta.upscale.factor, mean=stats["mean"], std=stats["std"])
    return Bundle(meta, model, sr).to(device)
