"""What an acquisition is asked for: the area, dates, grid, mask, chips and name.

:class:`AcquireRequest` checks the options together (one error naming the option) and is
recorded in the JSON sidecar by :meth:`AcquireRequest.to_json`: a rerun whose request compares
equal reuses the complete output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from rasterio.crs import CRS

from pvdetect.acquire.catalogs import Catalog
from pvdetect.acquire.composite import DEFAULT_MASK_CLASSES
from pvdetect.acquire.grid import Grid, grid_for_bbox, grid_for_point, utm_crs
from pvdetect.errors import ConfigError
from pvdetect.io import clean_json

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$")


@dataclass(frozen=True)
class AcquireRequest:
    """Everything that decides an acquisition's output.

    Attributes:
        catalog: The STAC API.
        collection: Collection to search.
        bbox: WGS 84 ``(W, S, E, N)``, or None with ``point``.
        point: WGS 84 ``(lon, lat)``, or None with ``bbox``.
        size_km: Side of the square around ``point``.
        start: First date (included).
        end: Last date (included).
        crs: Output CRS; None for the UTM zone of the area's centre.
        resolution: Pixel size in metres.
        max_items: Items used at most (the least cloudy when more match).
        mask_classes: Scene classification classes masked as invalid.
        chips: Chips to cut around ``point`` (0: none).
        chip_size: Chip side in pixels.
        seed: Seed of the chip windows.
        name: Output name (file stem and chip prefix).
    """

    catalog: Catalog
    collection: str
    bbox: tuple[float, float, float, float] | None
    point: tuple[float, float] | None
    size_km: float | None
    start: date
    end: date
    name: str
    crs: CRS | None = None
    resolution: float = 10.0
    max_items: int = 60
    mask_classes: tuple[int, ...] = DEFAULT_MASK_CLASSES
    chips: int = 0
    chip_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.bbox is None) == (self.point is None):
            raise ConfigError("--bbox or --point: give exactly one of them")
        if self.start > self.end:
            raise ConfigError(f"--start: {self.start} is after --end {self.end}")
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                f"--name: {self.name!r} must start with a letter or digit and hold only "
                f"letters, digits, '.', '+', '_' and '-'"
            )
        if self.max_items < 1:
            raise ConfigError(f"--max-items: must be at least 1, got {self.max_items}")
        if self.chips:
            if self.point is None:
                raise ConfigError("--chips: needs --point (chips are cut around a point)")
            if not 16 <= self.chip_size <= 4096:
                raise ConfigError(f"--chip-size: must lie in [16, 4096], got {self.chip_size}")
        elif self.point is not None and self.size_km is None:
            raise ConfigError("--size-km: needed with --point (the side of the square)")

    @property
    def centre(self) -> tuple[float, float]:
        """``(lon, lat)`` of the area's centre."""
        if self.point is not None:
            return self.point
        assert self.bbox is not None
        w, s, e, n = self.bbox
        return ((w + e) / 2, (s + n) / 2)

    def output_crs(self) -> CRS:
        """``crs``, or the UTM zone of the centre."""
        return self.crs if self.crs is not None else utm_crs(*self.centre)

    def area_m(self) -> float:
        """Side of the square around ``point``: ``size_km``, at least two chips wide."""
        size = (self.size_km or 0.0) * 1000.0
        if self.chips:
            size = max(size, 2 * self.chip_size * self.resolution)
        return size

    def grid(self) -> Grid:
        """The output grid."""
        crs = self.output_crs()
        if self.bbox is not None:
            return grid_for_bbox(self.bbox, crs, self.resolution)
        assert self.point is not None
        return grid_for_point(*self.point, self.area_m(), crs, self.resolution)

    def to_json(self) -> dict[str, Any]:
        """The request as the sidecar records it (and a rerun compares)."""
        crs = self.output_crs()
        epsg = crs.to_epsg()
        area: dict[str, Any] = (
            {"bbox": list(self.bbox)}
            if self.bbox is not None
            else {"point": list(self.point or ()), "size_km": self.area_m() / 1000.0}
        )
        return clean_json(
            {
                "catalog": self.catalog.url,
                "collection": self.collection,
                **area,
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "crs": f"EPSG:{epsg}" if epsg else crs.to_wkt(),
                "resolution": self.resolution,
                "max_items": self.max_items,
                "mask_classes": list(self.mask_classes),
                "chips": self.chips,
                "chip_size": self.chip_size if self.chips else None,
                "seed": self.seed if self.chips else None,
                "name": self.name,
            }
        )
