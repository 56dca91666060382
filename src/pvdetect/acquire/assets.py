"""Which asset of a STAC item holds each band, and how to turn its numbers into reflectance.

Bands are found by their ``eo:bands`` common names (``red``, ``green``, ``blue``, ``nir``; STAC
1.1 ``bands`` with ``eo:common_name`` too), else by the keys catalogs use (``B04 B03 B02 B08``
on the Brazil Data Cube and Planetary Computer, ``red green blue nir`` on Earth Search). Where
several assets qualify (Earth Search lists a JPEG 2000 copy of each band beside the COG) a
cloud-optimised GeoTIFF wins; JPEG 2000 is read only where nothing else exists (slower: GDAL
fetches more of it). The scene classification is the ``SCL``/``scl`` asset.

The output of an acquisition is surface reflectance x 10000. :func:`radiometry` finds, per
item and asset, the ``scale`` and ``offset`` with ``reflectance = DN * scale + offset``:

1. ``earthsearch:boa_offset_applied: true``: Earth Search already removed the +1000 of
   processing baseline 04.00 from these pixels, though their ``raster:bands`` still list
   ``offset: -0.1``; the offset is 0 (the maintainers call this flag the truth).
2. ``raster:bands`` (or STAC 1.1 ``raster:scale`` / ``raster:offset``) scale and offset.
3. Otherwise: ``scale`` from ``eo:bands`` (the Brazil Data Cube puts it there) or 0.0001, and
   offset of -1000 DN (-0.1 at scale 0.0001) when ``s2:processing_baseline`` is 04.00 or
   later (ESA's ``BOA_ADD_OFFSET``, -1000 for every band since 25 January 2022), else 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pystac

from pvdetect.acquire.http import public_url

BANDS: tuple[str, ...] = ("red", "green", "blue", "nir")
#: asset keys catalogs use for each band, in order of preference
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "red": ("B04", "B4", "b04", "red"),
    "green": ("B03", "B3", "b03", "green"),
    "blue": ("B02", "B2", "b02", "blue"),
    "nir": ("B08", "B8", "b08", "nir"),
}
SCL_KEYS: tuple[str, ...] = ("SCL", "scl")
DEFAULT_SCALE = 1e-4
#: ESA's BOA_ADD_OFFSET of processing baseline 04.00 and later, in stored numbers (DN)
BASELINE_OFFSET_DN = -1000.0
_BASELINE_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?")


class AssetError(ValueError):
    """An item lacks something an acquisition needs; the message says what."""


@dataclass(frozen=True)
class BandAsset:
    """One asset to read.

    Attributes:
        band: ``red``, ``green``, ``blue``, ``nir`` or ``scl``.
        key: The asset key in the item.
        href: The asset address (unsigned).
        scale: Reflectance per stored number (1 for the SCL).
        offset: Reflectance of a stored 0 (0 for the SCL).
        nodata: Nodata the metadata declares (the file's own nodata wins when it has one).
        source: Where scale and offset come from, for the sidecar.
    """

    band: str
    key: str
    href: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    source: str = ""

    @property
    def gain(self) -> float:
        """Multiplier from stored numbers to reflectance x 10000."""
        return self.scale * 10000.0

    @property
    def bias(self) -> float:
        """Addend after :attr:`gain`, in reflectance x 10000."""
        return self.offset * 10000.0

    def to_json(self) -> dict[str, Any]:
        """The asset as the JSON sidecar records it (the address without any query string)."""
        out: dict[str, Any] = {"key": self.key, "href": public_url(self.href)}
        if self.band != "scl":
            out.update(scale=self.scale, offset=self.offset, source=self.source)
        return out


@dataclass(frozen=True)
class ItemAssets:
    """What an acquisition reads from one item.

    Attributes:
        item_id: The STAC item id.
        datetime: Acquisition time (UTC; ``start_datetime`` for composites without one).
        solar_day: Local solar date at the item's centre (for a composite: its period's first
            date); items of one day are one observation.
        bbox: The item's WGS 84 bbox, if it has one.
        bands: Red, green, blue and NIR assets, in this order.
        scl: The scene classification asset, or None.
        properties: The item properties the sidecar keeps.
    """

    item_id: str
    datetime: datetime
    solar_day: str
    bbox: tuple[float, float, float, float] | None
    bands: tuple[BandAsset, BandAsset, BandAsset, BandAsset]
    scl: BandAsset | None
    properties: dict[str, Any]

    def hrefs(self) -> list[str]:
        """Addresses of every asset read from this item."""
        assets = [*self.bands, *([self.scl] if self.scl else [])]
        return [a.href for a in assets]


def _eo_bands(asset: pystac.Asset) -> list[dict[str, Any]]:
    fields = asset.extra_fields
    bands = fields.get("eo:bands")
    if isinstance(bands, list):
        return [b for b in bands if isinstance(b, dict)]
    bands = fields.get("bands")  # STAC 1.1
    if isinstance(bands, list):
        return [
            {**b, "common_name": b.get("eo:common_name", b.get("common_name"))}
            for b in bands
            if isinstance(b, dict)
        ]
    return []


def _raster_band(asset: pystac.Asset) -> dict[str, Any]:
    """The first ``raster:bands`` entry, or STAC 1.1 ``raster:*`` fields of the asset/band."""
    fields = asset.extra_fields
    rb = fields.get("raster:bands")
    if isinstance(rb, list) and rb and isinstance(rb[0], dict):
        return rb[0]
    out: dict[str, Any] = {}
    bands = fields.get("bands")
    if isinstance(bands, list) and len(bands) == 1 and isinstance(bands[0], dict):
        src = {**fields, **bands[0]}
    else:
        src = fields
    for name in ("scale", "offset"):
        if f"raster:{name}" in src:
            out[name] = src[f"raster:{name}"]
    if "nodata" in src:
        out["nodata"] = src["nodata"]
    return out


def _media_rank(asset: pystac.Asset) -> int:
    media = (asset.media_type or "").lower()
    href = asset.href.split("?", 1)[0].lower()
    if "cloud-optimized" in media:
        return 0
    if "tiff" in media or href.endswith((".tif", ".tiff")):
        return 1
    if not media:
        return 2
    if "jp2" in media or href.endswith(".jp2"):
        return 4
    return 3


def _is_data(asset: pystac.Asset) -> bool:
    roles = asset.roles or []
    return not roles or "data" in roles or "reflectance" in roles


def _find_band(item: pystac.Item, band: str) -> tuple[str, pystac.Asset] | None:
    candidates: list[tuple[int, int, str, pystac.Asset]] = []
    keys = KNOWN_KEYS[band]
    for key, asset in item.assets.items():
        if not _is_data(asset) or _media_rank(asset) == 3:  # not a raster format
            continue
        eo = _eo_bands(asset)
        by_name = len(eo) == 1 and str(eo[0].get("common_name") or "").lower() == band
        by_key = key in keys
        if by_name or by_key:
            order = keys.index(key) if by_key else len(keys)
            candidates.append((_media_rank(asset), order, key, asset))
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    return candidates[0][2], candidates[0][3]


def _find_scl(item: pystac.Item) -> tuple[str, pystac.Asset] | None:
    for key in SCL_KEYS:
        asset = item.assets.get(key)
        if asset is not None and _media_rank(asset) != 3:
            return key, asset
    for key, asset in item.assets.items():
        eo = _eo_bands(asset)
        if len(eo) == 1 and str(eo[0].get("name") or "").upper() == "SCL":
            if _media_rank(asset) != 3:
                return key, asset
    return None


def processing_baseline(properties: dict[str, Any]) -> float | None:
    """``s2:processing_baseline`` (or ``sentinel:processing_baseline``) as a number."""
    for name in ("s2:processing_baseline", "sentinel:processing_baseline"):
        value = properties.get(name)
        if value is None:
            continue
        m = _BASELINE_RE.match(str(value))
        if m:
            return float(f"{m.group(1)}.{m.group(2) or '0'}")
    return None


def _number(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def radiometry(properties: dict[str, Any], asset: pystac.Asset) -> tuple[float, float, str]:
    """``(scale, offset, source)`` with ``reflectance = DN * scale + offset`` (module rules)."""
    rb = _raster_band(asset)
    eo = _eo_bands(asset)
    eo_scale = _number(eo[0].get("scale")) if len(eo) == 1 else None
    rb_scale = _number(rb.get("scale"))
    rb_offset = _number(rb.get("offset"))
    scale = rb_scale if rb_scale is not None else (eo_scale or DEFAULT_SCALE)
    if properties.get("earthsearch:boa_offset_applied") is True:
        return scale, 0.0, "earthsearch:boa_offset_applied: the +1000 is removed already"
    if rb_offset is not None:
        return scale, rb_offset, "raster:bands"
    baseline = processing_baseline(properties)
    where = (
        "raster:bands scale"
        if rb_scale is not None
        else ("eo:bands scale" if eo_scale else "default scale 0.0001")
    )
    if baseline is not None and baseline >= 4.0:
        offset = BASELINE_OFFSET_DN * scale
        return scale, offset, f"{where}; processing baseline {baseline:05.2f}: -1000 DN"
    if baseline is not None:
        return scale, 0.0, f"{where}; processing baseline {baseline:05.2f}, no offset"
    return scale, 0.0, f"{where}; no offset"


def _nodata(asset: pystac.Asset) -> float | None:
    rb = _raster_band(asset)
    value = _number(rb.get("nodata"))
    if value is None:
        eo = _eo_bands(asset)
        value = _number(eo[0].get("nodata")) if len(eo) == 1 else None
    return value


def item_datetime(item: pystac.Item) -> datetime:
    """The item's time: ``datetime``, else ``start_datetime`` (composites), in UTC."""
    when = item.datetime
    if when is None:
        start = item.properties.get("start_datetime")
        if not start:
            raise AssetError("no datetime or start_datetime")
        when = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def solar_day(when: datetime, lon: float) -> str:
    """Local solar date of a UTC time at a longitude (15 degrees an hour)."""
    return (when + timedelta(hours=lon / 15.0)).date().isoformat()


def _period_start(properties: dict[str, Any]) -> str | None:
    """First date of a composite's period (``start_datetime`` a day or more before
    ``end_datetime``), or None for a single acquisition."""
    try:
        start = datetime.fromisoformat(str(properties["start_datetime"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(properties["end_datetime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return start.date().isoformat() if end - start >= timedelta(days=1) else None


def resolve_item(item: pystac.Item) -> ItemAssets:
    """The four band assets, the SCL and their radiometry of one item.

    Raises:
        AssetError: A band is missing or the item has no time.
    """
    props = dict(item.properties)
    found: list[BandAsset] = []
    missing = []
    for band in BANDS:
        hit = _find_band(item, band)
        if hit is None:
            missing.append(band)
            continue
        key, asset = hit
        scale, offset, source = radiometry(props, asset)
        found.append(BandAsset(band, key, asset.href, scale, offset, _nodata(asset), source))
    if missing:
        raise AssetError(f"no asset for {', '.join(missing)} (keys: {', '.join(item.assets)})")
    scl_hit = _find_scl(item)
    scl = None
    if scl_hit is not None:
        scl = BandAsset("scl", scl_hit[0], scl_hit[1].href, nodata=_nodata(scl_hit[1]))
    when = item_datetime(item)
    bbox = tuple(float(v) for v in item.bbox[:4]) if item.bbox else None
    lon = (bbox[0] + bbox[2]) / 2 if bbox else 0.0
    period = _period_start(props)
    keep = {
        k: props[k]
        for k in (
            "eo:cloud_cover",
            "s2:processing_baseline",
            "earthsearch:boa_offset_applied",
            "platform",
        )
        if k in props
    }
    return ItemAssets(
        item_id=item.id,
        datetime=when,
        solar_day=period or solar_day(when, lon),
        bbox=bbox,  # type: ignore[arg-type]
        bands=tuple(found),  # type: ignore[arg-type]
        scl=scl,
        properties=keep,
    )
