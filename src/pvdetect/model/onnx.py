"""ONNX bundles: export a bundle's network to ONNX (run by :mod:`pvdetect.model.onnx_runtime`).

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

import numpy as np
import torch

from pvdetect.errors import BundleError, OutputError
from pvdetect.io import first_line
from pvdetect.model.bundle import META_NAME, SR_NAME, Bundle, BundleMeta, _bundle_dir, load_bundle
from pvdetect.model.onnx_runtime import ONNX_NAME, RUNTIME, OnnxBundle, _ort

__all__ = ["OPSET", "export_onnx"]

#: ONNX opset of the exported graphs (onnxruntime >= 1.12 runs it)
OPSET = 17
#: largest |probability difference| between torch (float32) and onnxruntime accepted at export
EXPORT_TOLERANCE = 1e-3


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


def _export_checked(
    src: Path,
    model: torch.nn.Module,
    meta: BundleMeta,
    onnx_path: Path,
    side: int,
    m: int,
    opset: int,
) -> float:
    """Trace ``model`` to ``onnx_path`` and return its worst difference to torch (checked)."""
    example = torch.zeros(1, meta.in_channels, side, side)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        try:
            torch.onnx.export(
                model,
                (example,),
                str(onnx_path),
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
        worst = _check_export(model, onnx_path, side, meta.in_channels, m)
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
        worst = _export_checked(src, model, meta, stage / ONNX_NAME, side, m, opset)
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
