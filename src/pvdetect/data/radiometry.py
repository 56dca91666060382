"""How the stored values of a file become reflectance x 10000, the model's values.

The model works on reflectance x 10000 (the Sentinel-2 L2A digital numbers before
processing baseline 04.00). :func:`radiometry_for` finds how to get there, per band, as
``value = stored * gain + bias``, from (first match wins):

1. ``--offset`` / ``--scale`` (GDAL's convention: physical = stored * scale + offset);
2. the file's GDAL band scale / offset;
3. ``BOA_ADD_OFFSET`` (L2A) or ``RADIO_ADD_OFFSET`` (L1C) metadata, per band
   (``BOA_ADD_OFFSET`` in a band's own metadata, or ``BOA_ADD_OFFSET_B4`` / ``_B04`` / ``_B8A``
   / the product's 0-based ``band_id`` in the dataset's, or one ``BOA_ADD_OFFSET`` for all
   bands; ``.aux.xml`` files count), with ``BOA_QUANTIFICATION_VALUE`` (default 10000):
   value = (stored + offset) * 10000 / quantification.

Units: a scale of at most 1e-3 means the physical values are reflectance in 0..1, so they are
multiplied by 10000: ``value = 10000 * (stored * scale + offset)``. Hence ``--offset -1000``,
``--scale 0.0001 --offset -0.1`` and ``BOA_ADD_OFFSET=-1000`` all turn a post-2022 product into
the values of a pre-2022 one, and ``--scale 10000`` reads a file of reflectance in 0..1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pvdetect.data.bands import PRODUCT_BAND_IDS, file_band_ids
from pvdetect.data.raster import RasterInfo
from pvdetect.errors import ConfigError

__all__ = ["Radiometry", "RadiometryOptions", "parse_numbers", "radiometry_for"]

#: a scale at most this small means the physical values are reflectance in 0..1
REFLECTANCE_SCALE_MAX = 1e-3
#: reflectance x this = the model's values
REFLECTANCE_FACTOR = 10000.0


def parse_numbers(text: str | float | Sequence[float] | None, option: str) -> tuple[float, ...]:
    """``"-1000"`` or ``"-1000,-1000,-1000,-1000"`` (or numbers) -> floats; () for None."""
    if text is None:
        return ()
    if isinstance(text, int | float):
        items: list = [text]
    elif isinstance(text, str):
        items = [t for t in text.split(",")]
    else:
        items = list(text)
    try:
        values = tuple(float(str(v).strip()) for v in items)
    except ValueError:
        raise ConfigError(f"{option} {text}: expected a number or one number per band") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{option} {text}: expected finite numbers")
    return values


@dataclass(frozen=True)
class RadiometryOptions:
    """``--offset`` / ``--scale`` as given (one value for every band, or one per band).

    When either is given, the file's own scale, offset and metadata are not used.
    """

    offset: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()

    @property
    def given(self) -> bool:
        """True when ``--offset`` or ``--scale`` was given."""
        return bool(self.offset or self.scale)

    def to_json(self) -> dict[str, list[float]]:
        """Plain form (part of the packed cache's fingerprint)."""
        return {"offset": list(self.offset), "scale": list(self.scale)}

    @classmethod
    def parse(cls, offset: object = None, scale: object = None) -> RadiometryOptions:
        """From command-line text (``"-1000"``, ``"0.0001"``, ``"a,b,c,d"``) or numbers."""
        scales = parse_numbers(scale, "--scale")  # type: ignore[arg-type]
        if any(s == 0 for s in scales):
            raise ConfigError(f"--scale {scale}: must not be 0")
        return cls(parse_numbers(offset, "--offset"), scales)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Radiometry:
    """Per selected band: model value (reflectance x 10000) = stored * gain + bias.

    Attributes:
        gain, bias: one per selected band.
        source: where they come from (for messages and logs).
    """

    gain: tuple[float, ...]
    bias: tuple[float, ...]
    source: str = "none"

    @property
    def identity(self) -> bool:
        """True when values are used as stored."""
        return all(g == 1.0 for g in self.gain) and all(b == 0.0 for b in self.bias)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``data`` (float32 ``[C, H, W]``, changed in place) as model values."""
        if self.identity:
            return data
        gain = np.asarray(self.gain, np.float32)[:, None, None]
        bias = np.asarray(self.bias, np.float32)[:, None, None]
        data *= gain
        data += bias
        return data

    def describe(self) -> str:
        """``"x1 -1000 (BOA_ADD_OFFSET metadata)"`` style text."""
        if self.identity:
            return "values as stored"
        pairs = sorted({(g, b) for g, b in zip(self.gain, self.bias, strict=True)})
        text = "; ".join(f"x{g:g} {b:+g}" for g, b in pairs)
        return f"{text} ({self.source})"


def _x10000(scale: float, offset: float) -> tuple[float, float]:
    """(gain, bias) to reflectance x 10000 of physical = stored * scale + offset."""
    if 0 < abs(scale) <= REFLECTANCE_SCALE_MAX:
        return scale * REFLECTANCE_FACTOR, offset * REFLECTANCE_FACTOR
    return scale, offset


def _per_band(values: tuple[float, ...], n: int, option: str, default: float) -> list[float]:
    if not values:
        return [default] * n
    if len(values) == 1:
        return [values[0]] * n
    if len(values) != n:
        raise ConfigError(f"{option}: gives {len(values)} values for {n} bands; give 1 or {n}")
    return list(values)


def _number(value: object) -> float | None:
    try:
        v = float(str(value).strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _lookup(tags: Mapping[str, str], keys: Sequence[str]) -> tuple[str, float] | None:
    """First of ``keys`` (case-insensitive) with a numeric value in ``tags``."""
    upper = {k.upper(): v for k, v in tags.items()}
    for key in keys:
        if key in upper and (v := _number(upper[key])) is not None:
            return key, v
    return None


def _common_offset(tags: Mapping[str, str]) -> tuple[str, float] | None:
    """The value of every ``*_ADD_OFFSET*`` key of the dataset, when they all agree."""
    found = {
        (k.upper().startswith("BOA") and "BOA_ADD_OFFSET" or "RADIO_ADD_OFFSET", v)
        for k, raw in tags.items()
        if re.fullmatch(r"(BOA|RADIO)_ADD_OFFSET(_\w+)?", k.upper())
        and (v := _number(raw)) is not None
    }
    return found.pop() if len(found) == 1 else None


def _metadata_offsets(info: RasterInfo, bands: Sequence[int]) -> Radiometry | None:
    """Gain and bias from ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` metadata, if any.

    A band's own metadata comes first, then the dataset's key for its band id; a band that is
    not identified gets the dataset's value when all its per-band keys agree (in practice they
    are all -1000).
    """
    ids = file_band_ids(info)
    quant = _lookup(info.tags, ("BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE"))
    common = _common_offset(info.tags)
    gains, biases, keys = [], [], set()
    for b in bands:
        tags = info.band_tags[b - 1] if b - 1 < len(info.band_tags) else {}
        found = _lookup(tags, ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET"))
        bid = ids[b - 1]
        if found is None and bid is not None:
            short = f"B{int(bid[1:3])}" if bid[1:3].isdigit() else bid  # B04 -> B4
            suffixes = dict.fromkeys((bid, short, str(PRODUCT_BAND_IDS.index(bid))))
            found = _lookup(
                info.tags,
                [f"{p}_{s}" for p in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") for s in suffixes],
            )
        if found is None:
            found = _lookup(info.tags, ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")) or common
        band_quant = _lookup(tags, ("BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE")) or quant
        q = band_quant[1] if band_quant and band_quant[1] > 0 else REFLECTANCE_FACTOR
        if found:
            keys.add("BOA_ADD_OFFSET" if found[0].startswith("BOA") else "RADIO_ADD_OFFSET")
        gains.append(REFLECTANCE_FACTOR / q)
        biases.append((found[1] if found else 0.0) * REFLECTANCE_FACTOR / q)
    if not keys and all(g == 1.0 for g in gains):
        return None
    return Radiometry(
        tuple(gains), tuple(biases), f"{'/'.join(sorted(keys)) or 'QUANTIFICATION_VALUE'} metadata"
    )


def radiometry_for(
    info: RasterInfo, bands: Sequence[int], options: RadiometryOptions | None = None
) -> Radiometry:
    """How the chosen ``bands`` (1-based) of a file become reflectance x 10000.

    Raises:
        ConfigError: ``--offset``/``--scale`` give another number of values than bands.
    """
    n = len(bands)
    if options is not None and options.given:
        scales = _per_band(options.scale, n, "--scale", 1.0)
        offsets = _per_band(options.offset, n, "--offset", 0.0)
        pairs = [_x10000(s, o) for s, o in zip(scales, offsets, strict=True)]
        return Radiometry(
            tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), "--offset/--scale"
        )
    scales = [info.scales[b - 1] if b - 1 < len(info.scales) else 1.0 for b in bands]
    offsets = [info.offsets[b - 1] if b - 1 < len(info.offsets) else 0.0 for b in bands]
    if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
        pairs = [_x10000(s, o) for s, o in zip(scales, offsets, strict=True)]
        return Radiometry(
            tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), "GDAL band scale/offset"
        )
    meta = _metadata_offsets(info, bands)
    if meta is not None:
        return meta
    return Radiometry((1.0,) * n, (0.0,) * n)
