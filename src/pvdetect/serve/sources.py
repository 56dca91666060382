"""Where a server's imagery comes from: a STAC catalog, or a folder of local scenes.

``--source`` takes ``bdc``, ``earth-search``, ``planetary-computer``, ``stac:URL`` (any STAC
API; ``--collection`` names the collection) or ``scenes:DIR`` (GeoTIFF scenes in a folder, in
any CRS, with the bundle's bands). A catalog job fetches the median composite of its date
window; a scenes job cuts the area from the scenes that cover it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from pvdetect.acquire.catalogs import KNOWN_CATALOGS, Catalog, resolve_catalog
from pvdetect.data.raster import raster_info
from pvdetect.errors import ConfigError, DataError
from pvdetect.inference.predict import expand_inputs

__all__ = [
    "CatalogSource",
    "SceneFootprint",
    "ScenesSource",
    "Source",
    "footprint_of",
    "parse_source",
]


@dataclass(frozen=True)
class CatalogSource:
    """A STAC catalog and the collection searched in it."""

    catalog: Catalog
    collection: str

    kind = "catalog"

    @property
    def label(self) -> str:
        """A short description for the page and the report."""
        return f"{self.collection} on {self.catalog.url}"


@dataclass(frozen=True)
class SceneFootprint:
    """One local scene and where it lies.

    Attributes:
        path: The GeoTIFF.
        crs: Its CRS.
        bounds: ``(left, bottom, right, top)`` in its CRS.
        bbox: ``(west, south, east, north)`` in WGS 84.
        count: Number of bands.
    """

    path: Path
    crs: CRS
    bounds: tuple[float, float, float, float]
    bbox: tuple[float, float, float, float]
    count: int


@dataclass(frozen=True)
class ScenesSource:
    """A folder of georeferenced scenes (every ``.tif`` but ``*_mask`` and ``*_prob``)."""

    folder: Path

    kind = "scenes"

    @property
    def label(self) -> str:
        """A short description for the page and the report."""
        return f"scenes in {self.folder}"

    def footprints(self) -> tuple[list[SceneFootprint], list[str]]:
        """The scenes of the folder now, and a warning per file that cannot be used."""
        found: list[SceneFootprint] = []
        skipped: list[str] = []
        try:
            paths = expand_inputs([self.folder])
        except DataError as exc:
            return [], [str(exc)]
        for path in paths:
            try:
                st = path.stat()
                found.append(_cached_footprint(path, st.st_mtime_ns, st.st_size))
            except DataError as exc:
                skipped.append(f"{exc}; skipped")
        return found, skipped


Source = CatalogSource | ScenesSource


@functools.lru_cache(maxsize=4096)
def _cached_footprint(path: Path, mtime_ns: int, size: int) -> SceneFootprint:
    """:func:`footprint_of`, once per version of a file (the folder is listed for every job)."""
    return footprint_of(path)


def footprint_of(path: Path) -> SceneFootprint:
    """Where a georeferenced raster lies.

    Raises:
        DataError: Not a readable raster, or one without CRS or geotransform.
    """
    info = raster_info(path)
    if info.crs is None or not info.georeferenced:
        raise DataError(f"{path}: no CRS or geotransform")
    t = info.transform
    xs = (t.c, t.c + t.a * info.width)
    ys = (t.f, t.f + t.e * info.height)
    bounds = (min(xs), min(ys), max(xs), max(ys))
    w, s, e, n = transform_bounds(info.crs, "EPSG:4326", *bounds, densify_pts=21)
    return SceneFootprint(path, info.crs, bounds, (w, s, e, n), info.count)


def parse_source(text: str, collection: str | None = None) -> Source:
    """The source named by ``--source`` (see the module docstring).

    Raises:
        ConfigError: Unknown name, a missing folder, a collection with a scenes source.
    """
    value = text.strip()
    if value.startswith("scenes:"):
        if collection:
            raise ConfigError("--collection: only with a catalog source, not scenes:DIR")
        folder = Path(value[len("scenes:") :]).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"--source {text}: {folder} is not a folder")
        return ScenesSource(folder.resolve())
    if value.startswith("stac:"):
        url = value[len("stac:") :]
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--source {text}: expected stac:http(s)://ADDRESS of a STAC API")
        catalog, chosen = resolve_catalog(url, collection)
        return CatalogSource(catalog, chosen)
    if value.lower() in KNOWN_CATALOGS:
        catalog, chosen = resolve_catalog(value, collection)
        return CatalogSource(catalog, chosen)
    known = ", ".join(KNOWN_CATALOGS)
    raise ConfigError(f"--source {text!r}: give {known}, stac:URL or scenes:DIR")
