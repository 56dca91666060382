"""GeoTIFF read and write: metadata, whole and windowed reads, nodata, atomic writes.

Every read failure becomes a :class:`~pvdetect.errors.DataError` whose message names the file,
and every write goes to a temporary name in the target folder that is renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from pvdetect.errors import DataError
from pvdetect.io import atomic_output, first_line

if TYPE_CHECKING:
    import pyproj

DEFAULT_NODATA = -9999.0
BAND_NAMES = ("Red", "Green", "Blue", "NIR")
#: label value of a pixel that is ignored by losses and metrics (mask nodata, invalid image)
IGNORE_INDEX = 255


@dataclass(frozen=True)
class RasterInfo:
    """Metadata of one raster file."""

    path: Path
    count: int
    height: int
    width: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    descriptions: tuple[str | None, ...]
    #: per band: GDAL scale and offset (physical value = stored value * scale + offset)
    scales: tuple[float, ...] = field(default=(), compare=False)
    offsets: tuple[float, ...] = field(default=(), compare=False)
    #: dataset metadata (default domain, including a ``.aux.xml``) and each band's metadata
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    band_tags: tuple[dict[str, str], ...] = field(default=(), compare=False, hash=False)
    #: per band: GDAL colour interpretation ("red", "nir", "gray", "undefined" ...)
    colorinterp: tuple[str, ...] = field(default=(), compare=False)

    @property
    def georeferenced(self) -> bool:
        """True when the file has a CRS and a non-identity transform."""
        return self.crs is not None and self.transform != Affine.identity()

    @property
    def nodata_value(self) -> float:
        """The file's nodata value, or :data:`DEFAULT_NODATA` when it declares none."""
        return float(self.nodata) if self.nodata is not None else DEFAULT_NODATA

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units."""
        return (abs(self.transform.a), abs(self.transform.e))


@contextlib.contextmanager
def open_raster(path: str | os.PathLike) -> Iterator[rasterio.DatasetReader]:
    """Open a raster for reading; any failure becomes a one-line :class:`DataError`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except (RasterioIOError, rasterio.errors.RasterioError) as exc:
        raise DataError(f"{p}: not a readable raster ({first_line(exc)})") from None
    try:
        yield ds
    finally:
        ds.close()


def raster_info(path: str | os.PathLike) -> RasterInfo:
    """Read the metadata of a raster without its pixels."""
    with open_raster(path) as ds:
        return _info(Path(path), ds)


def _info(path: Path, ds: rasterio.DatasetReader) -> RasterInfo:
    return RasterInfo(
        path=path,
        count=ds.count,
        height=ds.height,
        width=ds.width,
        dtype=ds.dtypes[0],
        crs=ds.crs,
        transform=ds.transform,
        nodata=ds.nodata,
        descriptions=tuple(ds.descriptions),
        scales=tuple(float(v) for v in ds.scales),
        offsets=tuple(float(v) for v in ds.offsets),
        tags=dict(ds.tags()),
        band_tags=tuple(dict(ds.tags(i)) for i in range(1, ds.count + 1)),
        colorinterp=tuple(c.name for c in ds.colorinterp),
    )


def read_raster(
    path: str | os.PathLike,
    window: Window | None = None,
    bands: Sequence[int] | None = None,
    boundless: bool = False,
    fill_value: float | None = None,
) -> tuple[np.ndarray, RasterInfo]:
    """Read bands (1-based indices, default all) as float32 ``[C, H, W]`` plus the metadata.

    Truncated or corrupt files raise :class:`DataError` naming the file. With ``boundless``
    the window may reach past the raster; such pixels get ``fill_value`` (default: nodata).
    """
    p = Path(path)
    with open_raster(p) as ds:
        info = _info(p, ds)
        idx = list(bands) if bands is not None else list(range(1, ds.count + 1))
        fill = fill_value if fill_value is not None else info.nodata_value
        try:
            arr = ds.read(
                idx,
                window=window,
                out_dtype="float32",
                boundless=boundless,
                fill_value=fill if boundless else None,
            )
        except Exception as exc:  # noqa: BLE001 - GDAL raises many types for broken files
            problem = f"cannot read pixels, file truncated or corrupt ({first_line(exc)})"
            raise DataError(f"{p}: {problem}") from None
    return arr, info


def valid_pixels(image: np.ndarray, nodata: float | None) -> np.ndarray:
    """Boolean ``[H, W]``: True where every band is finite and differs from nodata."""
    ok = np.isfinite(image).all(axis=0)
    if nodata is not None:
        if np.isnan(nodata):
            return ok
        ok &= (image != nodata).all(axis=0)
    return ok


def geotiff_profile(
    *,
    height: int,
    width: int,
    count: int,
    dtype: str,
    crs: CRS | None,
    transform: Affine,
    nodata: float | None,
    tiled: bool = True,
    compress: str | None = "deflate",
    blocksize: int = 256,
) -> dict:
    """A rasterio GTiff profile; tiled and compressed by default (tiles need >= 16 px)."""
    profile: dict = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if tiled and height >= 16 and width >= 16:
        bs = max(16, min(blocksize, 16 * (min(height, width) // 16)))
        profile.update(tiled=True, blockxsize=bs, blockysize=bs)
    if compress:
        profile["compress"] = compress
        if dtype.startswith("float"):
            profile["predictor"] = 3
        elif dtype.startswith(("uint", "int")):
            profile["predictor"] = 2
    return profile


def write_raster(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    crs: CRS | str | None,
    transform: Affine,
    nodata: float | None = DEFAULT_NODATA,
    descriptions: Sequence[str] | None = None,
    compress: str | None = "deflate",
) -> Path:
    """Write a ``[C, H, W]`` (or ``[H, W]``) array as a GeoTIFF, atomically."""
    arr = array[None] if array.ndim == 2 else array
    crs_obj = CRS.from_user_input(crs) if crs is not None else None
    profile = geotiff_profile(
        height=arr.shape[1],
        width=arr.shape[2],
        count=arr.shape[0],
        dtype=str(arr.dtype),
        crs=crs_obj,
        transform=transform,
        nodata=nodata,
        compress=compress,
    )
    final = Path(path)
    with atomic_output(final) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr)
                if descriptions:
                    for i, d in enumerate(descriptions[: arr.shape[0]], start=1):
                        dst.set_band_description(i, d)
    return final


def pyproj_crs(crs: object) -> pyproj.CRS:
    """A pyproj CRS from a rasterio CRS, a pyproj CRS, or anything pyproj accepts."""
    import pyproj

    if isinstance(crs, pyproj.CRS):
        return crs
    to_wkt = getattr(crs, "to_wkt", None)
    return pyproj.CRS.from_wkt(to_wkt()) if callable(to_wkt) else pyproj.CRS.from_user_input(crs)
