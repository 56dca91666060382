"""Requests and answers of the ``pvdetect serve`` API, as pydantic models.

A job's area is a point with the sides of a rectangle around it (``point``), a box of WGS 84
degrees (``bbox``) or a GeoJSON Polygon or MultiPolygon (``geojson``). Every check that needs
no server setting is a validator here, with a message that says what is wrong; the size limit
and the source's needs (dates for a catalog, scenes that cover the area) are checked by
:func:`check_for_server`, which raises :class:`AreaError` with the field it is about.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Any, Literal

import shapely
import shapely.geometry
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pyproj import Geod

__all__ = [
    "AreaError",
    "BoxArea",
    "JobFile",
    "JobInfo",
    "JobList",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "Layer",
    "PointArea",
    "PolygonArea",
    "Progress",
    "SourceInfo",
    "check_for_server",
]

_GEOD = Geod(ellps="WGS84")
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
#: states a job never leaves
FINAL_STATES = ("done", "failed", "cancelled")


class AreaError(ValueError):
    """An area or date window the server cannot take; ``field`` is the request key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _lon(value: float, name: str = "longitude") -> float:
    if not -180.0 <= value <= 180.0:
        raise ValueError(f"{name} {value:g} is outside [-180, 180]")
    return value


def _lat(value: float, name: str = "latitude") -> float:
    if not -90.0 <= value <= 90.0:
        raise ValueError(f"{name} {value:g} is outside [-90, 90]")
    return value


def _km(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ValueError(f"must be a size > 0 km, got {value:g}")
    return value


def _extent_km(west: float, south: float, east: float, north: float) -> tuple[float, float]:
    """West-east side (at the middle latitude) and north-south side of a box, in km."""
    mid_lat, mid_lon = (south + north) / 2, (west + east) / 2
    width = _GEOD.inv(west, mid_lat, east, mid_lat)[2] / 1000.0
    height = _GEOD.inv(mid_lon, south, mid_lon, north)[2] / 1000.0
    return width, height


class PointArea(_Strict):
    """A rectangle centred on a point: ``size_km`` for a square, or both sides."""

    type: Literal["point"] = "point"
    lon: float = Field(description="Longitude of the centre, WGS 84 degrees, in [-180, 180].")
    lat: float = Field(description="Latitude of the centre, WGS 84 degrees, in [-90, 90].")
    size_km: float | None = Field(None, description="Side of a square, km.")
    width_km: float | None = Field(None, description="West-east side, km (default size_km).")
    height_km: float | None = Field(None, description="North-south side, km (default size_km).")

    @field_validator("lon")
    @classmethod
    def _check_lon(cls, value: float) -> float:
        return _lon(value)

    @field_validator("lat")
    @classmethod
    def _check_lat(cls, value: float) -> float:
        return _lat(value)

    @field_validator("size_km", "width_km", "height_km")
    @classmethod
    def _check_km(cls, value: float | None) -> float | None:
        return _km(value)

    @model_validator(mode="after")
    def _sides(self) -> PointArea:
        if self.size_km is None and (self.width_km is None or self.height_km is None):
            raise ValueError("give size_km (a square), or width_km and height_km")
        half = self.sides_km()[1] / 2 / 110.0  # degrees of latitude, about
        if self.lat - half <= -90.0 or self.lat + half >= 90.0:
            raise ValueError("the area reaches past a pole; pick a point further from it")
        return self

    def sides_km(self) -> tuple[float, float]:
        """(west-east, north-south) sides in km."""
        width = self.width_km if self.width_km is not None else self.size_km
        height = self.height_km if self.height_km is not None else self.size_km
        assert width is not None and height is not None
        return float(width), float(height)

    def is_square(self) -> bool:
        """True when both sides are equal."""
        w, h = self.sides_km()
        return math.isclose(w, h)

    def bbox(self) -> tuple[float, float, float, float]:
        """WGS 84 ``(W, S, E, N)`` of the rectangle (geodesic offsets from the centre)."""
        w, h = self.sides_km()
        east = _GEOD.fwd(self.lon, self.lat, 90.0, w * 500.0)[0]
        west = _GEOD.fwd(self.lon, self.lat, 270.0, w * 500.0)[0]
        north = _GEOD.fwd(self.lon, self.lat, 0.0, h * 500.0)[1]
        south = _GEOD.fwd(self.lon, self.lat, 180.0, h * 500.0)[1]
        return (west, south, east, north)

    def extent_km(self) -> tuple[float, float]:
        """(west-east, north-south) extent in km."""
        return self.sides_km()

    def polygon(self) -> None:
        """No polygon: the whole rectangle is predicted."""
        return None


class BoxArea(_Strict):
    """A box of WGS 84 degrees (no antimeridian crossing)."""

    type: Literal["bbox"] = "bbox"
    west: float = Field(description="Western longitude, degrees.")
    south: float = Field(description="Southern latitude, degrees.")
    east: float = Field(description="Eastern longitude, degrees (greater than west).")
    north: float = Field(description="Northern latitude, degrees (greater than south).")

    @field_validator("west", "east")
    @classmethod
    def _check_lon(cls, value: float) -> float:
        return _lon(value)

    @field_validator("south", "north")
    @classmethod
    def _check_lat(cls, value: float) -> float:
        return _lat(value)

    @model_validator(mode="after")
    def _order(self) -> BoxArea:
        if self.west >= self.east:
            raise ValueError(f"west {self.west:g} must be below east {self.east:g}")
        if self.south >= self.north:
            raise ValueError(f"south {self.south:g} must be below north {self.north:g}")
        return self

    def bbox(self) -> tuple[float, float, float, float]:
        """WGS 84 ``(W, S, E, N)``."""
        return (self.west, self.south, self.east, self.north)

    def extent_km(self) -> tuple[float, float]:
        """(west-east, north-south) extent in km."""
        return _extent_km(*self.bbox())

    def polygon(self) -> None:
        """No polygon: the whole box is predicted."""
        return None


class PolygonArea(_Strict):
    """A GeoJSON Polygon or MultiPolygon in WGS 84; pixels outside it are not predicted."""

    type: Literal["geojson"] = "geojson"
    geometry: dict[str, Any] = Field(
        description="GeoJSON geometry (type Polygon or MultiPolygon), or a Feature holding one."
    )

    @field_validator("geometry")
    @classmethod
    def _geometry(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") == "Feature":
            value = value.get("geometry") or {}
        kind = value.get("type")
        if kind not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"must be a GeoJSON Polygon or MultiPolygon, got type {kind!r}")
        try:
            shape = shapely.geometry.shape(value)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise ValueError(f"not a valid GeoJSON {kind} ({exc})") from None
        coords = shapely.get_coordinates(shape)
        if coords.size == 0 or shape.is_empty or shape.area <= 0:
            raise ValueError(f"the {kind} is empty or has no area")
        if not (abs(coords[:, 0]) <= 180).all():
            raise ValueError("longitudes must lie in [-180, 180] (GeoJSON order is lon, lat)")
        if not (abs(coords[:, 1]) <= 90).all():
            raise ValueError("latitudes must lie in [-90, 90] (GeoJSON order is lon, lat)")
        if not shape.is_valid:
            why = shapely.is_valid_reason(shape)
            raise ValueError(f"the {kind} is not valid ({why})")
        return shapely.geometry.mapping(shape)

    def shape(self) -> shapely.Geometry:
        """The geometry as a shapely object (WGS 84)."""
        return shapely.geometry.shape(self.geometry)

    def bbox(self) -> tuple[float, float, float, float]:
        """WGS 84 ``(W, S, E, N)`` of the polygon."""
        w, s, e, n = self.shape().bounds
        return (w, s, e, n)

    def extent_km(self) -> tuple[float, float]:
        """(west-east, north-south) extent of its box in km."""
        return _extent_km(*self.bbox())

    def polygon(self) -> shapely.Geometry:
        """The polygon (WGS 84)."""
        return self.shape()


Area = Annotated[PointArea | BoxArea | PolygonArea, Field(discriminator="type")]


class JobRequest(_Strict):
    """A job: the area, and the date window of a catalog's composite."""

    area: Area
    start: date | None = Field(None, description="First date (catalog sources), YYYY-MM-DD.")
    end: date | None = Field(None, description="Last date (catalog sources), YYYY-MM-DD.")
    label: str | None = Field(None, max_length=100, description="A name shown in the job list.")

    @model_validator(mode="after")
    def _dates(self) -> JobRequest:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


def check_for_server(
    request: JobRequest, max_km: float, needs_dates: bool, covered: Any = None
) -> None:
    """The checks that depend on the server: size limit, dates, coverage.

    Args:
        request: A validated request.
        max_km: Largest side in km.
        needs_dates: The source is a catalog (a date window is needed).
        covered: ``covered(bbox, polygon) -> bool`` for a scenes source, else None.

    Raises:
        AreaError: What is wrong, with the request key it is about.
    """
    width, height = request.area.extent_km()
    if width > max_km or height > max_km:
        raise AreaError(
            "area",
            f"the area is {width:.1f} x {height:.1f} km; this server takes at most "
            f"{max_km:g} x {max_km:g} km",
        )
    if needs_dates and request.start is None:
        raise AreaError("start", "a catalog source needs a date window: give start and end")
    if covered is not None and not covered(request.area.bbox(), request.area.polygon()):
        raise AreaError("area", "no scene of this server's source covers the area")


class Progress(BaseModel):
    """Where a running job is."""

    stage: str = Field(description="queued, searching, reading imagery, predicting, ...")
    done: int | None = Field(None, description="Units done in this stage.")
    total: int | None = Field(None, description="Units in this stage.")
    unit: str | None = Field(None, description="What is counted: tiles or blocks.")
    eta_s: float | None = Field(None, description="Seconds left in this stage, estimated.")
    message: str | None = Field(None, description="The last thing the job said.")


class JobFile(BaseModel):
    """One downloadable output of a finished job (``GET /api/jobs/ID/files/NAME``)."""

    name: str = Field(description="Path inside the job folder.")
    kind: str = Field(description="What it is: composite, probability, mask, plants, ...")
    label: str = Field(description="What it is, for people.")
    bytes: int


class Layer(BaseModel):
    """A PNG picture of the map in Web Mercator and its WGS 84 corners."""

    name: str = Field(description="Path of the PNG inside the job folder.")
    bounds: list[list[float]] = Field(description="[[south, west], [north, east]] (Leaflet).")


class JobResult(BaseModel):
    """The manifest of a finished job (only a finished job has one); file names are paths
    inside the job folder, fetched from ``GET /api/jobs/ID/files/NAME``."""

    format: Literal["pvdetect-serve-job/1"] = "pvdetect-serve-job/1"
    id: str
    label: str | None = None
    finished: str
    seconds: float
    plants: int
    total_ha: float
    area: dict[str, Any]
    dates: dict[str, Any] | None = None
    imagery: dict[str, Any]
    model: dict[str, Any]
    files: list[JobFile]
    layers: dict[str, Layer]
    plants_geojson: str = Field(description="The plants in WGS 84 (GeoJSON file name).")
    report: str = Field(description="The HTML report (file name).")
    warnings: list[str] = Field(default_factory=list)


class JobInfo(BaseModel):
    """A job's state; ``result`` only when it is done."""

    id: str
    status: JobStatus
    label: str | None = None
    created: str
    started: str | None = None
    finished: str | None = None
    request: dict[str, Any]
    progress: Progress | None = None
    error: str | None = None
    result: JobResult | None = None


class JobList(BaseModel):
    """Every job of the server, the newest first."""

    jobs: list[JobInfo]


class SourceInfo(BaseModel):
    """What the server offers: its source, limits and model."""

    kind: Literal["catalog", "scenes"]
    label: str
    needs_dates: bool
    max_km: float
    scenes: list[dict[str, Any]] = Field(
        default_factory=list, description="Scenes of a scenes source: name and WGS 84 bbox."
    )
    model: dict[str, Any]
    token_required: bool
    queue: int
    workers: int
