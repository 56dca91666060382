"""Where code runs and in which precision: device names, autocast dtype, Lightning precision.

Every part asks here: inference and evaluation (:func:`resolve_device`, :func:`autocast_dtype`),
training (:func:`resolve_precision`), and the distributed launch (:func:`env_rank_zero`).
bf16 autocast runs on GPUs that support it and on CPUs with native bf16; older GPUs get float16,
other CPUs float32 (emulated bf16 is several times slower there).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import TYPE_CHECKING

from pvdetect.errors import ConfigError
from pvdetect.io import first_line

if TYPE_CHECKING:
    import torch

__all__ = ["autocast_dtype", "env_rank_zero", "resolve_device", "resolve_precision"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]`` as a torch device.

    An unknown name or a GPU that is not there is a :class:`ConfigError` naming ``--device``.
    """
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {device}: {first_line(exc)}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: expected auto, cpu or cuda[:N]")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    return dev


@functools.cache
def cpu_bf16_fast() -> bool:
    """Whether this CPU runs bf16 kernels natively (oneDNN: AVX-512 BF16/AMX, or AVX-512 or
    Arm bf16 vector units). Without them bf16 is emulated: an AVX2-only AMD EPYC runs a
    unet/resnet18 forward 8x slower under bf16 autocast than in float32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_supported(device_type: str) -> bool:
    """Whether bf16 autocast is fast on this kind of device (CPUs with native bf16; recent
    GPUs)."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return device_type == "cpu" and cpu_bf16_fast()


def autocast_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype for ``device``: bf16 where it is fast (CPUs with native bf16,
    bf16-capable GPUs), float16 on older GPUs, float32 (no autocast) on other CPUs."""
    import torch

    kind = torch.device(device).type
    if bf16_supported(kind):
        return torch.bfloat16
    return torch.float16 if kind == "cuda" else torch.float32


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` at :func:`autocast_dtype` (disabled where that is float32)."""
    import torch

    kind = torch.device(device).type
    dtype = autocast_dtype(device)
    if dtype == torch.float32:
        return torch.autocast(kind, enabled=False)
    return torch.autocast(kind, dtype=dtype)


def resolve_precision(precision: str = "auto", accelerator: str = "auto") -> str:
    """Lightning precision for ``precision``; ``auto``: bf16-mixed on bf16-capable GPUs and
    CPUs with native bf16, 16-mixed (with gradient scaling) on older GPUs, 32-true on other
    CPUs and on Apple MPS."""
    if precision != "auto":
        return precision
    import torch

    acc = accelerator
    if acc == "auto":
        if torch.cuda.is_available():
            acc = "gpu"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            acc = "mps"
        else:
            acc = "cpu"
    if acc in ("gpu", "cuda"):
        return "bf16-mixed" if bf16_supported("cuda") else "16-mixed"
    if acc == "mps":
        return "32-true"
    return "bf16-mixed" if cpu_bf16_fast() else "32-true"


def env_rank_zero() -> bool:
    """True unless the environment says this is a non-zero distributed rank."""
    for var in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "PMI_RANK"):
        if os.environ.get(var, "").strip().isdigit():
            return int(os.environ[var]) == 0
    local = os.environ.get("LOCAL_RANK", "0").strip()
    node = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")).strip()
    return local in ("", "0") and node in ("", "0")
