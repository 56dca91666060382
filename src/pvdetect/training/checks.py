"""What ``train`` refuses before it creates anything: devices, extras, a foreign checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pvdetect.config import TrainConfig
from pvdetect.errors import ConfigError
from pvdetect.extras import require
from pvdetect.io import first_line

if TYPE_CHECKING:
    from pvdetect.training.task import SegmentationTask

__all__ = ["check_devices", "check_extras", "check_resume_checkpoint"]


def check_devices(cfg: TrainConfig) -> None:
    """Refuse an accelerator or device list this machine does not have (before any folder)."""
    import torch

    acc = cfg.accelerator
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--accelerator {acc}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        devices = cfg.devices
        if isinstance(devices, int) and devices > count:
            raise ConfigError(f"--devices {devices}: only {count} CUDA device(s) present")
        if isinstance(devices, list) and devices and max(devices) >= count:
            raise ConfigError(f"--devices {devices}: only {count} CUDA device(s) present")
    if acc == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("--accelerator mps: Apple MPS is not available on this machine")


def check_extras(cfg: TrainConfig) -> None:
    """Refuse options whose optional packages are missing, naming the extra to install."""
    if cfg.tensorboard:
        require("tensorboard", "tensorboard", "--tensorboard")
    if cfg.upscale.factor > 1 and cfg.upscale.method == "sr":
        require("spandrel", "sr", "--upscale-method sr")


def check_resume_checkpoint(path: Path, task: SegmentationTask) -> None:
    """Refuse a truncated or foreign ``last.ckpt`` with one line, before Lightning opens it.

    The file is read the way Lightning will read it (``weights_only``: no code runs), and its
    model weights must be this run's network.
    """
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for broken files
        raise ConfigError(
            f"{path}: not a readable checkpoint ({first_line(exc)}); it cannot be resumed"
        ) from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "epoch" not in ckpt:
        raise ConfigError(f"{path}: not a pvdetect training checkpoint; it cannot be resumed")
    want = {k for k in task.state_dict() if k.startswith("model.")}
    have = {k for k in state if k.startswith("model.")}
    if want != have or any(
        tuple(state[k].shape) != tuple(v.shape) for k, v in task.state_dict().items() if k in want
    ):
        raise ConfigError(
            f"{path}: checkpoint of another network than {task.cfg.model.arch}/"
            f"{task.cfg.model.encoder} with {task.hparams['in_channels']} bands; it cannot be "
            "resumed with this configuration"
        )
