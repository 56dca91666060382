"""Run an exported ONNX network with onnxruntime behind the :class:`Bundle` interface.

See :mod:`pvdetect.model.onnx` for the export and the graph's contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pvdetect.errors import BundleError, ConfigError
from pvdetect.io import first_line
from pvdetect.model.bundle_meta import BundleMeta
from pvdetect.model.runtime import Bundle, bundle_preprocessor
from pvdetect.model.transforms import pad_to_multiple

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["ONNX_NAME", "RUNTIME", "OnnxBundle", "load_onnx_bundle"]

ONNX_NAME = "model.onnx"
#: ``bundle.json`` ``"runtime"`` of an exported bundle
RUNTIME = "onnx"


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX bundles need onnxruntime: pip install 'pvdetect[onnx]'") from None
    return onnxruntime


def _providers(device: torch.device) -> list[str]:
    available = _ort().get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBundle(Bundle):
    """A bundle whose network runs in onnxruntime; see the module docstring.

    Args:
        meta: the bundle's metadata.
        model_bytes: the serialised ONNX graph (kept in memory: a ``.pvb`` bundle's files
            live only while it is opened).
        sr: the super-resolution network of an ``sr`` bundle (torch).
    """

    def __init__(
        self, meta: BundleMeta, model_bytes: bytes, sr: torch.nn.Module | None = None
    ) -> None:
        self.meta = meta
        self.model = None  # no torch network: the graph runs in onnxruntime
        self.model_bytes = model_bytes
        self.device = torch.device("cpu")
        self.session: onnxruntime.InferenceSession | None = None
        self.pre = bundle_preprocessor(meta, sr)

    def to(self, device: str | torch.device) -> OnnxBundle:
        """Preprocessing on ``device``; an onnxruntime session with its execution provider."""
        self.device = torch.device(device)
        self.pre.to(self.device)
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                self.model_bytes, sess_options=opts, providers=_providers(self.device)
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise BundleError(f"ONNX model does not load ({first_line(exc)})") from None
        self._input = self.session.get_inputs()[0].name
        return self

    @property
    def providers(self) -> list[str]:
        """onnxruntime execution providers in use."""
        return self.session.get_providers() if self.session is not None else []

    def _forward(self, x: Tensor) -> Tensor:
        """Sigmoid of the ONNX network on normalised input ``[B, C, H, W]`` -> ``[B, H, W]``."""
        assert self.session is not None, "call .to(device) first"
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x.float(), self.multiple).contiguous()
        feed = {self._input: padded.cpu().numpy()}
        (logits,) = self.session.run(None, feed)
        out = torch.from_numpy(np.ascontiguousarray(logits)).to(self.device)
        return torch.sigmoid(out[:, 0, :h, :w])


def load_onnx_bundle(
    path: Path,
    folder: Path,
    meta: BundleMeta,
    sr: torch.nn.Module | None,
    device: str | torch.device,
) -> OnnxBundle:
    """The :class:`OnnxBundle` in ``folder`` (the opened bundle ``path``), on ``device``."""
    onnx_file = folder / ONNX_NAME
    if not onnx_file.is_file():
        raise BundleError(f"{path}: not an ONNX bundle ({ONNX_NAME} missing)")
    try:
        return OnnxBundle(meta, onnx_file.read_bytes(), sr).to(device)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from None
