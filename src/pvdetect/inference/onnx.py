"""ONNX bundles: export a bundle's network to ONNX and run it with onnxruntime.

``pvdetect export BUNDLE --onnx OUT`` writes a bundle folder ``OUT/`` holding ``model.onnx``
and the same ``bundle.json`` with ``"runtime": "onnx"`` (plus ``sr_model.safetensors`` for a
super-resolution bundle). The ONNX graph is the segmentation network alone: its input is the
*normalised and upscaled* tensor ``[B, C, H, W]`` (float32, H and W multiples of the
architecture's output stride), its output the logits ``[B, 1, H, W]``; batch, height and width
are dynamic. Normalisation, upscaling, padding, test-time augmentation and the way back to the
input grid stay in :class:`~pvdetect.model.preprocessing.Preprocessor` (torch), exactly as for a
torch bundle, so both runtimes see the same input. :func:`~pvdetect.model.bundle.load_bundle`
returns an :class:`OnnxBundle` for such a folder; it has the interface of
:class:`~pvdetect.model.bundle.Bundle` (``meta``, ``device``, ``multiple``, ``factor``,
``to``, ``predict_probs``), so ``predict``, ``evaluate`` and ``map`` take it as they take a torch
bundle. onnxruntime runs on the CPU, or with its CUDA execution provider when the device is a
GPU and the installed onnxruntime has it; it computes in float32 (no bf16 autocast).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from pvdetect.errors import BundleError, ConfigError, OutputError
from pvdetect.io import first_line
from pvdetect.model.bundle import (
    META_NAME,
    ONNX_NAME,
    SR_NAME,
    Bundle,
    BundleMeta,
    _bundle_dir,
    load_bundle,
)
from pvdetect.model.preprocessing import Preprocessor
from pvdetect.model.transforms import pad_to_multiple

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["ONNX_NAME", "OPSET", "RUNTIME", "OnnxBundle", "export_onnx", "load_onnx_bundle"]

RUNTIME = "onnx"
#: ONNX opset of the exported graphs (onnxruntime >= 1.12 runs it)
OPSET = 17
#: largest |probability difference| between torch (float32) and onnxruntime accepted at export
EXPORT_TOLERANCE = 1e-3


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
        stats = meta.band_stats
        self.pre = Preprocessor(
            stats["mean"],
            stats["std"],
            factor=int(meta.upscale.factor),
            method=meta.upscale.method,
            sr=sr,
            input_scale=float(meta.input_scale),
        )

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
    path: Path, folder: Path, meta: BundleMeta, device: str | torch.device = "cpu"
) -> OnnxBundle:
    """The :class:`OnnxBundle` in ``folder`` (the opened bundle ``path``), on ``device``."""
    onnx_file = folder / ONNX_NAME
    if not onnx_file.is_file():
        raise BundleError(f"{path}: not an ONNX bundle ({ONNX_NAME} missing)")
    sr = None
    if meta.upscale.factor > 1 and meta.upscale.method == "sr":
        from pvdetect.model.sr import load_sr_model

        sr_file = folder / (meta.upscale.sr_weights or SR_NAME)
        if not sr_file.is_file():
            raise BundleError(f"{path}: super-resolution weights {sr_file.name} missing")
        stats = meta.band_stats
        sr = load_sr_model(sr_file, meta.upscale.factor, mean=stats["mean"], std=stats["std"])
    try:
        return OnnxBundle(meta, onnx_file.read_bytes(), sr).to(device)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from None


def _example_side(bundle: Bundle) -> int:
    """Side of the example input traced at export: the model's tile, at model resolution."""
    from pvdetect.model.factory import min_input_size

    side = int(bundle.meta.tile_size) * bundle.factor
    m = bundle.multiple
    side = max(side, min_input_size(bundle.meta.arch, bundle.meta.encoder))
    return -(-side // m) * m


def _check_export(
    model: torch.nn.Module, onnx_path: Path, side: int, channels: int, m: int
) -> float:
    """Largest probability difference torch - onnxruntime on inputs of other sizes than traced.

    Two batches whose batch size, height and width differ from the example's prove that the
    graph's sizes are dynamic; an architecture that baked a size in fails here.
    """
    ort = _ort()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch, h, w in ((2, side + m, side), (1, side, side + 2 * m)):
        x = torch.randn(batch, channels, h, w, generator=gen)
        with torch.inference_mode():
            ref = torch.sigmoid(model(x)).numpy()
        got = 1.0 / (1.0 + np.exp(-session.run(None, {name: x.numpy()})[0]))
        if got.shape != ref.shape:
            raise BundleError(
                f"output {got.shape} for input {tuple(x.shape)}, expected {ref.shape}"
            )
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def export_onnx(bundle_path: str | Path, out: str | Path, *, opset: int = OPSET) -> Path:
    """Export a torch bundle to an ONNX bundle folder ``out`` (see the module docstring).

    The export is checked: onnxruntime must reproduce the torch network (float32) within
    :data:`EXPORT_TOLERANCE` on inputs whose batch and spatial sizes differ from the traced
    example. ``out`` is written beside itself and renamed when complete; an existing ``out``
    is replaced only when it is a bundle folder.

    Raises:
        BundleError: the bundle is already ONNX, or its architecture does not export.
        OutputError: ``out`` exists and is not a bundle folder, or cannot be written.
    """
    src, dst = Path(bundle_path), Path(out)
    bundle = load_bundle(src, device="cpu")
    if isinstance(bundle, OnnxBundle):
        raise BundleError(f"{src}: is already an ONNX bundle")
    if dst.exists() and not (dst.is_dir() and (dst / META_NAME).is_file()):
        raise OutputError(f"{dst}: exists and is not a bundle folder; not replacing it")
    meta = bundle.meta
    model = bundle.model.float().eval().to(memory_format=torch.contiguous_format)
    side, m = _example_side(bundle), bundle.multiple
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    except OSError as exc:
        raise OutputError(f"{dst.parent}: cannot write here ({exc.strerror or exc})") from None
    try:
        example = torch.zeros(1, meta.in_channels, side, side)
        axes = {0: "batch", 2: "height", 3: "width"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            try:
                torch.onnx.export(
                    model,
                    (example,),
                    str(stage / ONNX_NAME),
                    dynamo=False,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": axes, "logits": axes},
                    opset_version=opset,
                    do_constant_folding=True,
                )
            except Exception as exc:  # noqa: BLE001 - the exporter raises many types
                raise BundleError(
                    f"{src}: {meta.arch}/{meta.encoder} does not export to ONNX ({first_line(exc)})"
                ) from None
        try:
            worst = _check_export(model, stage / ONNX_NAME, side, meta.in_channels, m)
        except BundleError as exc:
            raise BundleError(f"{src}: {meta.arch}/{meta.encoder} ONNX graph: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise BundleError(
                f"{src}: {meta.arch}/{meta.encoder} ONNX graph does not run with other "
                f"sizes ({first_line(exc)})"
            ) from None
        if worst > EXPORT_TOLERANCE:
            raise BundleError(
                f"{src}: {meta.arch}/{meta.encoder} ONNX graph differs from torch by {worst:.2g} "
                f"(> {EXPORT_TOLERANCE:g}) on other input sizes"
            )
        data = meta.to_dict()
        data["runtime"] = RUNTIME
        data["onnx"] = {
            "file": ONNX_NAME,
            "opset": opset,
            "input": f"normalised (and upscaled) tensor [B, C, H, W], H and W multiples of {m}",
            "output": "logits [B, 1, H, W]",
            "max_abs_prob_diff_vs_torch": worst,
            "torch": torch.__version__,
        }
        if meta.upscale.method == "sr" and meta.upscale.factor > 1:
            with _bundle_dir(src) as folder:
                shutil.copy2(folder / (meta.upscale.sr_weights or SR_NAME), stage / SR_NAME)
        (stage / META_NAME).write_text(json.dumps(data, indent=2, allow_nan=False))
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
            dst.rename(old / dst.name)
            shutil.rmtree(old, ignore_errors=True)
        stage.rename(dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dst
