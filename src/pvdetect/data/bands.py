"""Which bands of a raster file the model gets, and in which order.

**Band identities.** Every band of a file is matched to a Sentinel-2 band id (``B01`` ..
``B12``, ``B8A``) from, in this order, its ``BANDNAME`` metadata (what GDAL's Sentinel-2 driver
writes), its description (``B4``, ``B04``, ``B4, central wavelength 665 nm``,
``T33UXP_20220105T101321_B04_10m``, ``red``, ``Red``, ``NIR``, ``near infrared``, STAC common
names such as ``nir08`` or ``swir16``), its ``WAVELENGTH`` metadata (within 10 nm), and its GDAL
colour interpretation (red, green, blue, nir). Case does not matter. pvdetect's own names map
to Sentinel-2 bands: Red = B04, Green = B03, Blue = B02, NIR = B08 (the broad 10 m NIR band,
842 nm, that the Solar-Plants-Brazil chips carry). **B8A is not B08**: the narrow 20 m NIR band
(865 nm) has other statistics and half the resolution, so it is never picked for NIR by
itself; name it in ``--bands`` to use it anyway.

:func:`resolve_bands` picks the file's bands for a wanted order (a bundle's ``band_order``):
from ``--bands`` (names or 1-based indices), else from the identities when every wanted band is
found exactly once (so a 5- or 13-band file in any order works by its descriptions alone), else
from descriptions equal to the wanted names (names other than Sentinel-2's), else
the file's bands in order when it has exactly as many as wanted and no identity contradicts that.
:func:`resolve_band_order` gives the same as 0-based indices for the packed cache (training and
evaluation).

How the values become reflectance x 10000: :mod:`pvdetect.data.radiometry`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pvdetect.data.raster import BAND_NAMES, RasterInfo, raster_info
from pvdetect.errors import ConfigError, DataError

__all__ = [
    "S2_WAVELENGTH_NM",
    "BandSelection",
    "band_id",
    "file_band_ids",
    "parse_band_spec",
    "resolve_band_order",
    "resolve_bands",
]

#: central wavelength (nm) of every Sentinel-2 MSI band, by band id
S2_WAVELENGTH_NM: dict[str, float] = {
    "B01": 443, "B02": 490, "B03": 560, "B04": 665, "B05": 705, "B06": 740, "B07": 783,
    "B08": 842, "B8A": 865, "B09": 945, "B10": 1375, "B11": 1610, "B12": 2190,
}  # fmt: skip
#: band names (lower case, spaces removed) -> Sentinel-2 band id; pvdetect's and STAC's names
NAMES: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04",
    "rededge1": "B05", "rededge2": "B06", "rededge3": "B07", "re1": "B05", "re2": "B06",
    "re3": "B07", "nir": "B08", "nir08": "B8A", "nirnarrow": "B8A", "narrownir": "B8A",
    "nir09": "B09", "watervapour": "B09", "watervapor": "B09", "cirrus": "B10",
    "swir16": "B11", "swir1": "B11", "swir22": "B12", "swir2": "B12",
}  # fmt: skip
#: the 0-based ``band_id`` of Sentinel-2 product metadata (MTD_MSIL2A.xml), in this order
PRODUCT_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                    "B10", "B11", "B12")  # fmt: skip
#: a band matches a wavelength within this many nanometres
WAVELENGTH_TOLERANCE_NM = 10.0

_CODE = re.compile(r"^b0?(\d{1,2})(a?)$")


def _words(text: str) -> list[str]:
    """Lower-case words of a name, multi-word band names joined (``red edge 1`` ...)."""
    s = text.strip().lower()
    s = re.sub(r"red[\s_-]*edge[\s_-]*(\d)", r"rededge\1", s)
    s = re.sub(r"near[\s_-]*infra[\s_-]*red", "nir", s)
    s = re.sub(r"nir[\s_-]*narrow|narrow[\s_-]*nir", "nirnarrow", s)
    s = re.sub(r"water[\s_-]*vapou?r", "watervapour", s)
    return [w for w in re.split(r"[^0-9a-z]+", s) if w]


def band_id(text: str | None) -> str | None:
    """The Sentinel-2 band id a band name or description stands for; None when unknown.

    Band codes (``B4``, ``B04``, ``b8a``) win over names (``red``, ``NIR``), so
    ``"B8A, central wavelength 865 nm"`` is B8A and ``"NIR (B8)"`` is B08.
    """
    if not text:
        return None
    words = _words(text)
    for w in words:
        m = _CODE.match(w)
        if m:
            n, narrow = int(m.group(1)), bool(m.group(2))
            code = "B8A" if narrow and n == 8 else f"B{n:02d}"
            if code in S2_WAVELENGTH_NM and (not narrow or n == 8):
                return code
    if "edge" in words or "rededge" in words:  # red edge without its number: which one?
        return None
    found = {NAMES[w] for w in words if w in NAMES}
    joined = "".join(words)
    if not found and joined in NAMES:
        found = {NAMES[joined]}
    return found.pop() if len(found) == 1 else None


def _wavelength_id(tags: Mapping[str, str]) -> str | None:
    """Band id from ``WAVELENGTH`` (+ ``WAVELENGTH_UNIT``) or ENVI-style ``wavelength`` tags."""
    lower = {k.lower(): v for k, v in tags.items()}
    raw = lower.get("wavelength")
    if raw is None:
        return None
    try:
        value = float(str(raw).split()[0])
    except (ValueError, IndexError):
        return None
    unit = str(lower.get("wavelength_unit") or lower.get("wavelength_units") or "").lower()
    if unit in ("um", "µm", "micrometers", "micrometres", "microns") or value < 5:
        value *= 1000.0
    best = min(S2_WAVELENGTH_NM, key=lambda b: abs(S2_WAVELENGTH_NM[b] - value))
    return best if abs(S2_WAVELENGTH_NM[best] - value) <= WAVELENGTH_TOLERANCE_NM else None


def file_band_ids(info: RasterInfo) -> list[str | None]:
    """The Sentinel-2 band id of each band of a file (None where nothing tells)."""
    ids: list[str | None] = []
    for i in range(info.count):
        tags = info.band_tags[i] if i < len(info.band_tags) else {}
        desc = info.descriptions[i] if i < len(info.descriptions) else None
        name = next((v for k, v in tags.items() if k.upper() == "BANDNAME"), None)
        found = band_id(name) or band_id(desc) or _wavelength_id(tags)
        if found is None and i < len(info.colorinterp):
            found = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B08"}.get(
                info.colorinterp[i]
            )
        ids.append(found)
    return ids


def parse_band_spec(spec: str | Sequence[str | int], option: str = "--bands") -> list[str | int]:
    """``"B04,B03,B02,B08"`` or ``"3,2,1,7"`` (or a list) -> names and 1-based indices."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str | int] = []
    for item in items:
        if isinstance(item, int | np.integer):
            out.append(operator.index(item))
            continue
        text = str(item).strip()
        if not text:
            raise ConfigError(f"{option} {spec}: empty band name; give names or 1-based indices")
        out.append(int(text) if text.isdigit() else text)
    if not out:
        raise ConfigError(f"{option}: no bands given")
    for item in out:
        if isinstance(item, int) and item < 1:
            raise ConfigError(f"{option} {spec}: band indices start at 1")
    return out


@dataclass(frozen=True)
class BandSelection:
    """The file bands chosen for a wanted band order.

    Attributes:
        indices: 1-based file bands, in the wanted order.
        labels: what each chosen band is (its Sentinel-2 id, description or number).
        source: how they were chosen: ``--bands``, ``band names`` or ``file order``.
    """

    indices: list[int]
    labels: list[str]
    source: str


def _label(info: RasterInfo, ids: list[str | None], i: int) -> str:
    """How a 0-based file band is named in messages."""
    if ids[i]:
        return str(ids[i])
    desc = info.descriptions[i] if i < len(info.descriptions) else None
    return desc.strip() if desc and desc.strip() else f"band {i + 1}"


def _describe(info: RasterInfo, ids: list[str | None]) -> str:
    return ", ".join(_label(info, ids, i) for i in range(info.count))


def _from_spec(
    info: RasterInfo, ids: list[str | None], spec: str | Sequence[str | int], option: str
) -> list[int]:
    items = parse_band_spec(spec, option)
    shown = spec if isinstance(spec, str) else ",".join(map(str, spec))
    chosen: list[int] = []
    for item in items:
        if isinstance(item, int):
            if item > info.count:
                raise DataError(
                    f"{info.path}: {option} {shown}: band {item} does not exist (the file has "
                    f"{info.count} bands: {_describe(info, ids)})"
                )
            chosen.append(item)
            continue
        wanted = band_id(item)
        hits = [i for i, b in enumerate(ids) if wanted is not None and b == wanted]
        if not hits:  # a description the band-name rules do not know, e.g. "mynir"
            key = item.lower()
            hits = [i for i, d in enumerate(info.descriptions) if (d or "").strip().lower() == key]
        if not hits:
            raise DataError(
                f"{info.path}: {option} {shown}: no band is {item} (bands: "
                f"{_describe(info, ids)}); give 1-based indices instead"
            )
        if len(hits) > 1:
            where = ", ".join(str(i + 1) for i in hits)
            raise DataError(
                f"{info.path}: {option} {shown}: bands {where} are all {item}; give 1-based "
                f"indices instead"
            )
        chosen.append(hits[0] + 1)
    return chosen


def resolve_bands(
    info: RasterInfo | str,
    wanted: Sequence[str] = BAND_NAMES,
    spec: str | Sequence[str | int] | None = None,
    *,
    option: str = "--bands",
) -> BandSelection:
    """The bands of a file for a wanted band order (module docstring for the rules).

    Args:
        info: the file (or its path).
        wanted: band names in the order the model takes them (a bundle's ``band_order``).
        spec: ``--bands``: one name or 1-based index per wanted band.
        option: how ``spec`` is called in messages.

    Raises:
        ConfigError: ``spec`` is malformed or names another number of bands.
        DataError: the file does not have the bands (message names the file and its bands).
    """
    if not isinstance(info, RasterInfo):
        info = raster_info(info)
    ids = file_band_ids(info)
    want_ids = [band_id(w) for w in wanted]
    k = len(wanted)
    if spec is not None and (not isinstance(spec, str) or spec.strip()):
        items = parse_band_spec(spec, option)
        if len(items) != k:
            raise ConfigError(
                f"{option} {spec if isinstance(spec, str) else ','.join(map(str, spec))}: gives "
                f"{len(items)} bands, the model takes {k} ({', '.join(wanted)})"
            )
        chosen = _from_spec(info, ids, spec, option)
        return BandSelection(chosen, [_label(info, ids, i - 1) for i in chosen], option)
    if all(w is not None for w in want_ids) and all(ids.count(w) == 1 for w in want_ids):
        chosen = [ids.index(w) + 1 for w in want_ids]
        return BandSelection(chosen, [str(w) for w in want_ids], "band names")
    descs = [(d or "").strip().lower() for d in info.descriptions]
    keys = [w.strip().lower() for w in wanted]
    if all(descs.count(w) == 1 for w in keys):  # other names, given exactly (e.g. "band1")
        chosen = [descs.index(w) + 1 for w in keys]
        return BandSelection(chosen, list(wanted), "band names")
    named = ", ".join(f"{n} ({w})" if w else n for n, w in zip(wanted, want_ids, strict=True))
    if "B08" in want_ids and "B08" not in ids and "B8A" in ids:
        raise DataError(
            f"{info.path}: has B8A (narrow NIR, 865 nm) but no B08 (NIR, 842 nm), which the "
            f"model was trained on; pass {option} with B8A to use it anyway"
        )
    contradicts = [
        i for i in range(min(k, info.count)) if ids[i] and want_ids[i] and ids[i] != want_ids[i]
    ]
    if info.count == k and not contradicts:
        chosen = list(range(1, k + 1))
        return BandSelection(chosen, [_label(info, ids, i) for i in range(k)], "file order")
    if info.count == k:
        raise DataError(
            f"{info.path}: bands look like {_describe(info, ids)}, the model takes {named}; "
            f"pass {option} to choose them (names or 1-based indices)"
        )
    raise DataError(
        f"{info.path}: has {info.count} bands ({_describe(info, ids)}), the model expects {k} "
        f"({named}); name them in the band descriptions or pass {option} (e.g. "
        f"{option} B04,B03,B02,B08 or {option} 3,2,1,7)"
    )


def resolve_band_order(
    path: str | RasterInfo,
    wanted: Sequence[str] = BAND_NAMES,
    spec: str | Sequence[str | int] | None = None,
    *,
    option: str = "--bands",
) -> list[int] | None:
    """0-based file bands for :func:`pvdetect.data.packed.build_cache` (``band_order``).

    None when the file's own bands are taken as they are (exactly the wanted number, in order),
    so the cache keeps the fingerprint it had before band selection existed. Training calls
    this with the first chip, the bundle's band names (default Red, Green, Blue, NIR) and its
    ``--bands``.
    """
    info = path if isinstance(path, RasterInfo) else raster_info(path)
    sel = resolve_bands(info, wanted, spec, option=option)
    if sel.indices == list(range(1, info.count + 1)):
        return None
    return [i - 1 for i in sel.indices]
