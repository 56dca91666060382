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
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from pvdetect.data.raster import atomic_output
from pvdetect.device import autocast_dtype
from pvdetect.errors import BundleError
from pvdetect.io import first_line
from pvdetect.model.bundle_meta import (  # noqa: F401 - FORMAT_VERSION, UpscaleMeta re-exported
    FORMAT_VERSION,
    META_NAME,
    BundleMeta,
    UpscaleMeta,
    parse_meta_json,
)

WEIGHTS_NAME = "model.safetensors"
SR_NAME = "sr_model.safetensors"


def _d4(x: Tensor, k: int) -> Tensor:
    """Element ``k`` (0..7) of the dihedral group on the last two dims."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _d4_inverse(x: Tensor, k: int) -> Tensor:
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return x


class Bundle:
    """A loaded bundle: metadata, model, and the exact preprocessing used in training."""

    def __init__(self, meta: BundleMeta, model: nn.Module, sr: nn.Module | None = None) -> None:
        self.meta = meta
        self.model = model.eval()
        self.sr = sr.eval() if sr is not None else None
        self.device = torch.device("cpu")
        self._mean = torch.tensor(meta.band_stats["mean"], dtype=torch.float32)
        self._std = torch.tensor(meta.band_stats["std"], dtype=torch.float32)

    @property
    def factor(self) -> int:
        """Upscaling factor applied before the model."""
        return int(self.meta.upscale.factor)

    @property
    def multiple(self) -> int:
        """Input side the model needs to be divisible by."""
        from pvdetect.model.factory import required_multiple

        return required_multiple(self.meta.arch, self.meta.encoder)

    def to(self, device: str | torch.device) -> Bundle:
        """Move model (channels_last) and statistics to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device, memory_format=torch.channels_last)
        if self.sr is not None:
            self.sr.to(self.device)
        self._mean = self._mean.to(self.device)
        self._std = self._std.to(self.device)
        return self

    @torch.inference_mode()
    def predict_probs(
        self, raw: Tensor, valid: Tensor, tta: bool = False, native: bool = True
    ) -> Tensor:
        """PV probabilities for raw reflectance tiles.

        Args:
            raw: ``[B, C, H, W]`` reflectance in the bundle's band order (nodata anywhere).
            valid: ``[B, H, W]`` bool, True where the pixel is valid.
            tta: average the 8 flips/rotations of the dihedral group.
            native: with an upscaling bundle, average the upscaled prediction back onto the
                input grid (True) or return it at the upscaled resolution (False).

        Returns:
            float32 ``[B, H', W']`` probabilities, 0 at invalid pixels.
        """
        from pvdetect.model.transforms import (
            downscale_probs,
            normalize,
            upscale_batch,
            upscale_mask,
        )

        raw = raw.to(self.device, torch.float32, non_blocking=True)
        valid = valid.to(self.device, non_blocking=True).bool()
        x = normalize(raw * self.meta.input_scale, valid, self._mean, self._std)
        vout = valid
        if self.factor > 1:
            x, vout = upscale_batch(x, valid, self.factor, self.meta.upscale.method, self.sr)
        ks = range(8) if tta else (0,)
        probs = torch.zeros(x.shape[0], x.shape[2], x.shape[3], device=self.device)
        for k in ks:
            probs += _d4_inverse(self._forward(_d4(x, k)), k)
        probs /= len(ks)
        if self.factor > 1 and native:
            probs = downscale_probs(probs, self.factor)
            vout = valid
        elif self.factor > 1:
            vout = upscale_mask(valid.to(torch.uint8), self.factor).bool()
        return probs * vout

    def _forward(self, x: Tensor) -> Tensor:
        """Sigmoid of the model on normalised input, padded to the model's multiple."""
        from pvdetect.model.transforms import pad_to_multiple

        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=autocast_dtype(self.device)):
            logits = self.model(x)
        return torch.sigmoid(logits.float())[:, 0, :h, :w]


def _write_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def _copy_sr_weights(src: Path, dst: Path) -> None:
    """Store SR weights as safetensors, whatever format the user gave."""
    from safetensors.torch import save_file

    if src.suffix == ".safetensors":
        shutil.copyfile(src, dst)
        return
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise BundleError(f"{src}: cannot read super-resolution weights ({exc})") from None
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise BundleError(f"{src}: no tensors found in super-resolution weights")
    save_file(tensors, str(dst))


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
            for name in names & {META_NAME, WEIGHTS_NAME, SR_NAME}:
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
        text = meta_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: {META_NAME}: cannot be read ({first_line(exc)})") from None
    return parse_meta_json(text, str(path))


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle; weights only through safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from pvdetect.errors import ConfigError
    from pvdetect.model.factory import build_model

    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: bundle not found")
    with _bundle_dir(path) as d:
        meta = _read_meta(path, d)
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
            first = str(exc).strip().splitlines()[0][:200]
            raise BundleError(f"{path}: weights do not load ({first})") from None
        sr = None
        if meta.upscale.factor > 1 and meta.upscale.method == "sr":
            from pvdetect.model.transforms import load_sr_model

            sr_file = d / (meta.upscale.sr_weights or SR_NAME)
            if not sr_file.is_file():
                raise BundleError(f"{path}: super-resolution weights {sr_file.name} missing")
            stats = meta.band_stats
            sr = load_sr_model(sr_file, meta.upscale.factor, mean=stats["mean"], std=stats["std"])
    return Bundle(meta, model, sr).to(device)
