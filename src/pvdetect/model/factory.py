"""Segmentation networks from segmentation-models-pytorch, built for 4-band (R, G, B, NIR) input.

:func:`build_model` creates any smp architecture with any smp encoder (or a timm model as
``tu-<name>``), 4 input bands and one logit channel. Pretrained weights are RGB weights: their
first convolution takes 3 channels. They are never loaded through smp's own 3-to-N channel
conversion; instead the model is built with random weights and ``in_channels=4`` and the
pretrained encoder state dict is adapted by :func:`adapt_first_conv`, which keeps the R, G and B
kernels exactly and initialises the NIR kernel with the mean of the RGB kernels.

``weights`` may be:

* ``None``: random initialisation;
* a weight name smp knows for the encoder (``"imagenet"``, ``"ssl"``, ...): looked up first in
  the local cache :func:`weights_dir` as ``<encoder>-<weights>.safetensors`` (or ``.pth``), then
  downloaded through smp (Hugging Face hub) and stored in the cache; without network a
  :class:`~pvdetect.errors.ConfigError` says where to put the file;
* an ``http(s)://`` URL: downloaded once into the cache (temporary file, then renamed);
* a local ``.safetensors`` or ``.pth`` file holding an encoder state dict or a full model state
  dict (also Lightning checkpoints' ``state_dict``). ``.pth`` files are read with
  ``torch.load(weights_only=True)``: no code is ever unpickled.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

from pvdetect.errors import ConfigError
from pvdetect.io import first_line

#: architecture names accepted by :func:`build_model` (all that the installed smp offers)
ARCHITECTURES: tuple[str, ...] = tuple(smp.MODEL_ARCHITECTURES_MAPPING)

#: extra constructor arguments per architecture
_ARCH_KWARGS: dict[str, dict[str, Any]] = {
    # ViT encoders default to a fixed 224 px input; chips are 64 px or whatever the user has
    "dpt": {"dynamic_img_size": True},
}

#: smallest input side some architectures accept (PAN's pyramid pooling halves 1/16 three times)
_MIN_SIZE: dict[str, int] = {"pan": 128}

#: keys under which checkpoints nest their state dict, in order of preference
STATE_WRAPPERS = ("state_dict", "model_state_dict", "model", "params_ema", "params")
_STATE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def weights_dir() -> Path:
    """Cache of pretrained weights: ``$PVDETECT_WEIGHTS_DIR`` or ``~/.cache/pvdetect/weights``."""
    env = os.environ.get("PVDETECT_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pvdetect" / "weights"


def _check_arch(arch: str) -> str:
    name = arch.lower()
    if name not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}"
        )
    return name


def _check_encoder(encoder: str) -> None:
    if encoder.startswith("tu-"):
        import timm

        base = encoder[3:].split(".")[0]
        if timm.is_model(base):
            return
        raise ConfigError(
            f"unknown timm encoder {encoder!r}: {base!r} is not a timm model "
            "(see timm.list_models())"
        )
    if encoder not in smp.encoders.get_encoder_names():
        raise ConfigError(
            f"unknown encoder {encoder!r}; use an smp encoder (list: "
            "segmentation_models_pytorch.encoders.get_encoder_names(), e.g. resnet18, resnet34, "
            "efficientnet-b0, mobilenet_v2, mit_b0) or a timm model as 'tu-<timm name>'"
        )


def _smp_create(
    arch: str, encoder: str, in_channels: int, classes: int, **kwargs: Any
) -> nn.Module:
    params = {**_ARCH_KWARGS.get(arch, {}), **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return smp.create_model(
            arch,
            encoder_name=encoder,
            encoder_weights=params.pop("encoder_weights", None),
            in_channels=in_channels,
            classes=classes,
            **params,
        )


def _create(arch: str, encoder: str, in_channels: int, classes: int, **kwargs: Any) -> nn.Module:
    try:
        return _smp_create(arch, encoder, in_channels, classes, **kwargs)
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        msg = first_line(exc, 500)
        raise ConfigError(f"cannot build {arch} with encoder {encoder!r}: {msg[:300]}") from None


def build_model(
    arch: str,
    encoder: str,
    in_channels: int = 4,
    weights: str | os.PathLike | None = None,
    classes: int = 1,
) -> nn.Module:
    """Build an smp segmentation model that returns logits ``[B, classes, H, W]``.

    Args:
        arch: one of :data:`ARCHITECTURES` (case-insensitive).
        encoder: an smp encoder name or ``tu-<timm model>``.
        in_channels: number of input bands (4: R, G, B, NIR).
        weights: ``None``, a pretrained weight name, an ``http(s)`` URL or a local file; see the
            module docstring.
        classes: output channels (1 for binary PV segmentation).

    Raises:
        ConfigError: unknown architecture/encoder, incompatible pair, or weights that cannot be
            found, downloaded or matched to the model.
    """
    name = _check_arch(arch)
    _check_encoder(encoder)
    if in_channels < 1 or classes < 1:
        raise ConfigError(f"in_channels and classes must be >= 1, got {in_channels}, {classes}")
    model = _create(name, encoder, in_channels, classes)
    if weights is not None and str(weights) != "":
        path = resolve_weights(name, encoder, weights)
        load_weights(model, path)
    return model


# ---------------------------------------------------------------------------------------------
# first-convolution adaptation


def adapt_conv_weight(
    weight: Tensor, in_channels: int = 4, init: str = "mean", scale: float = 1.0
) -> Tensor:
    """Widen a convolution kernel ``[O, 3, kh, kw]`` to ``in_channels`` inputs.

    The first three input channels (R, G, B) keep their values exactly; each extra channel (NIR)
    gets the mean of the RGB kernels (``init="mean"``) or the red kernel (``init="red"``), times
    ``scale``. With fewer than 3 channels the RGB kernels are summed and shared out, so that a
    grey input gives the same response as before.
    """
    if weight.ndim != 4:
        raise ConfigError(f"expected a 4-D convolution kernel, got shape {tuple(weight.shape)}")
    src = weight.shape[1]
    if in_channels == src:
        return weight.clone()
    if in_channels < src:
        merged = weight.sum(dim=1, keepdim=True) / in_channels
        return merged.repeat(1, in_channels, 1, 1)
    if init == "mean":
        extra = weight.mean(dim=1, keepdim=True)
    elif init == "red":
        extra = weight[:, :1]
    else:
        raise ConfigError(f"unknown init {init!r} for new input channels; use 'mean' or 'red'")
    extra = (extra * scale).repeat(1, in_channels - src, 1, 1)
    return torch.cat([weight, extra.to(weight.dtype)], dim=1)


def _first_conv_key(state: Mapping[str, Tensor], src_channels: int = 3) -> str | None:
    for key, value in state.items():
        if key.endswith("weight") and value.ndim == 4 and value.shape[1] == src_channels:
            return key
    return None


def adapt_first_conv(
    model_or_encoder_state: nn.Module | Mapping[str, Tensor],
    in_channels: int = 4,
    key: str | None = None,
    init: str = "mean",
) -> nn.Module | dict[str, Tensor]:
    """Give the first 3-channel convolution ``in_channels`` inputs, RGB kernels unchanged.

    Args:
        model_or_encoder_state: a module (its first ``Conv2d`` with 3 input channels is replaced
            in place and the module returned) or a state dict (a new dict is returned with the
            kernel ``key``, default the first 4-D weight with 3 input channels, widened).
        in_channels: input channels of the adapted layer.
        key: state-dict key of the kernel to adapt.
        init: initialisation of the extra channels, see :func:`adapt_conv_weight`.
    """
    if isinstance(model_or_encoder_state, nn.Module):
        module = model_or_encoder_state
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d) and sub.in_channels == 3 and sub.groups == 1:
                new = adapt_conv_weight(sub.weight.data, in_channels, init)
                sub.weight = nn.Parameter(new, requires_grad=sub.weight.requires_grad)
                sub.in_channels = in_channels
                return module
        raise ConfigError("no convolution with 3 input channels found to adapt")
    state = dict(model_or_encoder_state)
    k = key or _first_conv_key(state)
    if k is None or k not in state:
        raise ConfigError("no 3-channel convolution kernel found in the state dict")
    state[k] = adapt_conv_weight(state[k], in_channels, init)
    return state


# ---------------------------------------------------------------------------------------------
# weight files


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or "/" in text
        or text.startswith((".", "~"))
        or text.lower().endswith(_STATE_SUFFIXES)
    )


def resolve_weights(arch: str, encoder: str, weights: str | os.PathLike) -> Path:
    """Turn a ``weights`` option into a local file (downloading when needed)."""
    text = str(weights)
    if _is_url(text):
        return download_weights(text)
    if isinstance(weights, os.PathLike) or _looks_like_path(text) or Path(text).is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: weights file not found")
        return path
    return _named_weights(arch, encoder, text)


def _named_weights(arch: str, encoder: str, name: str) -> Path:
    if not encoder.startswith("tu-"):
        known = list(smp.encoders.encoders[encoder]["pretrained_settings"])
        if name not in known:
            raise ConfigError(
                f"encoder {encoder!r} has no pretrained weights {name!r}; "
                f"choose one of: {', '.join(known) or 'none'}, or give a weights file"
            )
    cache = weights_dir()
    for suffix in (".safetensors", ".pth"):
        candidate = cache / f"{encoder}-{name}{suffix}"
        if candidate.is_file():
            return candidate
    target = cache / f"{encoder}-{name}.safetensors"
    state = _hub_encoder_state(arch, encoder, name, target)
    _save_state(state, target)
    return target


def _hub_encoder_state(arch: str, encoder: str, name: str, target: Path) -> dict[str, Tensor]:
    """Download pretrained RGB encoder weights through smp; a clear error without network."""
    hub_name: Any = True if encoder.startswith("tu-") else name
    try:
        model = _smp_create(arch, encoder, 3, 1, encoder_weights=hub_name)
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        first = first_line(exc)
        raise ConfigError(
            f"cannot download {name!r} weights for encoder {encoder!r} ({first}); without network, "
            f"put the encoder state dict (3-channel RGB, as smp publishes it) at {target} "
            f"(or {target.with_suffix('.pth')}), set PVDETECT_WEIGHTS_DIR to the folder holding "
            "it, "
            "or pass the file path as weights"
        ) from None
    return {k: v.detach().clone().contiguous() for k, v in model.encoder.state_dict().items()}


def _save_state(state: Mapping[str, Tensor], target: Path) -> None:
    from safetensors.torch import save_file

    from pvdetect.data.raster import atomic_output

    try:
        with atomic_output(target) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    except Exception as exc:  # noqa: BLE001 - a read-only cache must not stop training
        warnings.warn(f"could not cache weights at {target}: {exc}", stacklevel=2)


def download_weights(url: str, dest: Path | None = None, timeout: float = 60.0) -> Path:
    """Download a weights file once into the cache folder; returns the local path.

    The file is written to a temporary name beside the target and renamed when complete, so an
    interrupted download never leaves a truncated file under the final name.
    """
    from pvdetect.data.raster import atomic_output

    parsed = urllib.parse.urlparse(url)
    base = (
        re.sub(r"[^A-Za-z0-9._-]", "_", Path(urllib.parse.unquote(parsed.path)).name) or "weights"
    )
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    target = dest or weights_dir() / "downloads" / f"{digest}-{base}"
    if target.is_file() and target.stat().st_size > 0:
        return target
    try:
        with atomic_output(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
                shutil.copyfileobj(resp, fh, length=1 << 20)
    except urllib.error.HTTPError as exc:
        raise ConfigError(
            f"{url}: cannot download weights (HTTP {exc.code} {exc.reason})"
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(
            f"{url}: cannot download weights ({reason}); download the file yourself and pass "
            "its path as weights"
        ) from None
    return target


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read tensors from ``.safetensors`` or a torch file (``weights_only``); never runs code."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read weights file ({exc.strerror or exc})") from None
    is_safetensors = p.suffix == ".safetensors" or (len(head) > 8 and head[8:9] == b"{")
    try:
        if is_safetensors:
            from safetensors.torch import load_file

            raw: Any = load_file(str(p), device="cpu")
        else:
            raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many types
        raise ConfigError(
            f"{p}: not a readable weights file (safetensors, or a torch state dict readable "
            f"with weights_only=True): {first_line(exc)}"
        ) from None
    # BasicSR / Real-ESRGAN checkpoints hold the EMA weights (the ones to use) beside the raw
    # ones: ``params_ema`` wins over ``params``
    for wrapper in STATE_WRAPPERS:
        if isinstance(raw, Mapping) and isinstance(raw.get(wrapper), Mapping):
            raw = raw[wrapper]
            break
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{p}: does not hold a state dict (found {type(raw).__name__})")
    state = {str(k): v for k, v in raw.items() if isinstance(v, Tensor)}
    if not state:
        raise ConfigError(f"{p}: holds no tensors")
    return state


def _match(state: Mapping[str, Tensor], target: Mapping[str, Tensor], prefixes: list[str]):
    """Best prefix to strip from ``state`` keys so they cover ``target``; (coverage, prefix)."""
    need = [k for k in target if not k.endswith("num_batches_tracked")]
    best = (0.0, "")
    for prefix in prefixes:
        hits = sum(1 for k in need if prefix + k in state)
        cover = hits / max(len(need), 1)
        if cover > best[0]:
            best = (cover, prefix)
    return best


def _prefixes(state: Mapping[str, Tensor], anchor: str) -> list[str]:
    found = {k[: k.index(anchor)] for k in state if anchor in k}
    return sorted({"", "model.", "module.", "net.", "model.model."} | found, key=len)


def load_weights(model: nn.Module, path: str | os.PathLike, init: str = "mean") -> nn.Module:
    """Load an encoder or full-model state dict into an smp model, adapting the first conv.

    Kernels whose input-channel count differs (3-band RGB weights into a 4-band model) are widened
    with :func:`adapt_conv_weight`; any other shape mismatch or missing weight is an error.
    """
    p = Path(path)
    state = read_state_dict(p)
    full_target = model.state_dict()
    enc_target = model.encoder.state_dict()
    full_cover, full_prefix = _match(state, full_target, _prefixes(state, "encoder."))
    enc_prefixes = _prefixes(state, "encoder.")
    enc_prefixes = sorted(set(enc_prefixes) | {p_ + "encoder." for p_ in enc_prefixes}, key=len)
    enc_cover, enc_prefix = _match(state, enc_target, enc_prefixes)
    if full_cover >= 1.0:
        module, target, prefix, what = model, full_target, full_prefix, "model"
    elif enc_cover >= 1.0:
        module, target, prefix, what = model.encoder, enc_target, enc_prefix, "encoder"
    else:
        module, target, prefix = model.encoder, enc_target, enc_prefix
        missing = [k for k in target if prefix + k not in state and "num_batches" not in k]
        raise ConfigError(
            f"{p}: weights do not fit this encoder/model: {len(missing)} of {len(target)} encoder "
            f"tensors missing (e.g. {', '.join(missing[:3])}); was the file saved for another "
            "encoder?"
        )
    new_state: dict[str, Tensor] = {}
    for key, ref in target.items():
        value = state.get(prefix + key)
        if value is None:  # only num_batches_tracked can be absent
            new_state[key] = ref
            continue
        if value.shape != ref.shape:
            if (
                value.ndim == 4
                and ref.ndim == 4
                and value.shape[0] == ref.shape[0]
                and value.shape[2:] == ref.shape[2:]
            ):
                value = adapt_conv_weight(value, ref.shape[1], init)
            else:
                raise ConfigError(
                    f"{p}: {what} tensor {key} has shape {tuple(value.shape)}, the model needs "
                    f"{tuple(ref.shape)}"
                )
        new_state[key] = value.to(ref.dtype)
    module.load_state_dict(new_state, strict=True)
    return model


# ---------------------------------------------------------------------------------------------
# size constraints and description


@functools.lru_cache(maxsize=64)
def _meta_stride(arch: str, encoder: str) -> int:
    with torch.device("meta"):
        model = _create(arch, encoder, 4, 1)
    return int(getattr(model.encoder, "output_stride", 32))


def required_multiple(arch: str, encoder: str) -> int:
    """Input height and width must be a multiple of this (the encoder's output stride).

    Typically 32 (5-stage encoders, DPT on a ViT with 16 px patches), 16 (deeplabv3plus, pan)
    or 8 (pspnet, deeplabv3). Unet tolerates other sizes but 32 keeps its skip connections
    aligned.
    """
    name = _check_arch(arch)
    _check_encoder(encoder)
    stride = _meta_stride(name, encoder)
    # DPT's reassemble stage halves the 1/stride token grid once more before fusing it with
    # the other levels: sides must divide by 2 x stride (16 px patches: 32, not 16)
    return 2 * stride if name == "dpt" else stride


def min_input_size(arch: str, encoder: str) -> int:
    """Smallest input side the architecture accepts (a multiple of :func:`required_multiple`)."""
    mult = required_multiple(arch, encoder)
    need = max(_MIN_SIZE.get(arch.lower(), mult), mult)
    return -(-need // mult) * mult
