"""Cloud-optimised GeoTIFF outputs whose overviews are built while the rows are written.

GDAL's COG driver can only copy a finished raster, and when it has to make the overviews
itself it reads the whole raster back, resamples it into a temporary file and copies that too:
half of the copy's time. :class:`Pyramid` instead reduces each block of rows to every overview
level as the prediction writes them (2 x 2 average, maximum or nearest pixel, cascaded level by
level, nodata-aware), into small temporary GeoTIFFs. :func:`write_cog` then hands the full
raster and its levels to the COG driver through a VRT, which it copies as they are, with a
colour table when given (the mask's palette).

Masks use the maximum of the valid pixels of each 2 x 2 block: a pixel of an overview is PV
when any pixel under it is, so even a one-pixel plant stays visible in the coarsest overview
(every second pixel, "nearest", would drop three plants out of four at each level).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from pvdetect.errors import OutputError

#: overview levels stop once the raster fits this block size (as the COG driver does)
BLOCK = 256
#: how :class:`Pyramid` halves a level
RESAMPLINGS = ("average", "max", "nearest")
#: a colour table: pixel value -> (red, green, blue, alpha)
ColorMap = dict[int, tuple[int, int, int, int]]


def overview_sizes(width: int, height: int, block: int = BLOCK) -> list[tuple[int, int]]:
    """(width, height) of each overview level: halved (rounded up) until it fits one block."""
    sizes: list[tuple[int, int]] = []
    w, h = width, height
    while max(w, h) > block:
        w, h = math.ceil(w / 2), math.ceil(h / 2)
        sizes.append((w, h))
    return sizes


def _halve_average(rows: np.ndarray, nodata: float) -> np.ndarray:
    """2 x 2 mean of the valid pixels of an even number of rows (nodata where none is valid)."""
    h, w = rows.shape
    if w % 2:
        rows = np.concatenate([rows, np.full((h, 1), nodata, rows.dtype)], axis=1)
    valid = rows != nodata
    blocks = np.where(valid, rows, 0).astype(np.float64).reshape(h // 2, 2, -1, 2)
    total = blocks.sum(axis=(1, 3))
    count = valid.reshape(h // 2, 2, -1, 2).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    if np.issubdtype(rows.dtype, np.integer):
        mean = np.rint(mean)  # stored integers (uint8 probabilities): nearest, not truncated
    return np.where(count > 0, mean, nodata).astype(rows.dtype)


def _halve_max(rows: np.ndarray, nodata: float) -> np.ndarray:
    """2 x 2 maximum of the valid pixels of an even number of rows (nodata where none is)."""
    h, w = rows.shape
    if w % 2:
        rows = np.concatenate([rows, np.full((h, 1), nodata, rows.dtype)], axis=1)
    valid = rows != nodata
    low = np.iinfo(rows.dtype).min if rows.dtype.kind in "iu" else -np.inf
    blocks = np.where(valid, rows, low).reshape(h // 2, 2, -1, 2)
    peak = blocks.max(axis=(1, 3))
    count = valid.reshape(h // 2, 2, -1, 2).any(axis=(1, 3))
    return np.where(count, peak, nodata).astype(rows.dtype)


def _halve_nearest(rows: np.ndarray) -> np.ndarray:
    """Every second pixel of an even number of rows: pixel (2i + 1, 2j + 1), or the last one."""
    picked = rows[1::2]
    cols = np.minimum(np.arange(math.ceil(rows.shape[1] / 2)) * 2 + 1, rows.shape[1] - 1)
    return picked[:, cols]


class _Level:
    """One overview level: takes rows of the level above and writes its own, halved."""

    def __init__(self, path: Path, profile: dict, size: tuple[int, int], resampling: str) -> None:
        self.path = path
        self.width, self.height = size
        self.resampling = resampling
        self.nodata = profile["nodata"]
        self.ds = rasterio.open(
            path, "w", **{**profile, "width": self.width, "height": self.height}
        )
        self.row = 0
        self.carry: np.ndarray | None = None  # an odd row waiting for its pair

    def add(self, rows: np.ndarray, last: bool) -> np.ndarray | None:
        """Take rows of the level above; returns the rows written here (None: none yet)."""
        if self.carry is not None:
            rows = np.concatenate([self.carry, rows])
            self.carry = None
        if len(rows) % 2:
            if last:  # odd height: the last row pairs with itself
                rows = np.concatenate([rows, rows[-1:]])
                if self.resampling == "average":
                    rows[-1] = self.nodata
            else:
                self.carry, rows = rows[-1:].copy(), rows[:-1]
        if not len(rows):
            return None
        if self.resampling == "average":
            out = _halve_average(rows, self.nodata)
        elif self.resampling == "max":
            out = _halve_max(rows, self.nodata)
        else:
            out = _halve_nearest(rows)
        try:
            self.ds.write(out, 1, window=Window(0, self.row, self.width, len(out)))
        except (OSError, rasterio.errors.RasterioError) as exc:
            raise OutputError(f"{self.path.parent}: cannot write output ({exc})") from None
        self.row += len(out)
        return out

    def close(self) -> None:
        self.ds.close()


class Pyramid:
    """Overview levels of a single-band raster, built from its rows as they are written.

    Args:
        work: folder for the levels' temporary files.
        name: stem of those files.
        profile: GeoTIFF profile of the full-resolution raster (needs ``nodata`` for average
            and max).
        resampling: "average" (probabilities: mean of the valid pixels), "max" (masks: the
            maximum of the valid pixels) or "nearest" (the pixel at (2i + 1, 2j + 1)).
    """

    def __init__(self, work: Path, name: str, profile: dict, resampling: str) -> None:
        if resampling not in RESAMPLINGS:
            raise ValueError(f"resampling {resampling!r}: must be one of {', '.join(RESAMPLINGS)}")
        self.width, self.height = int(profile["width"]), int(profile["height"])
        self.next_row = 0
        transform: Affine = profile["transform"]
        self.levels: list[_Level] = []
        for k, size in enumerate(overview_sizes(self.width, self.height), start=1):
            scale = Affine.scale(self.width / size[0], self.height / size[1])
            prof = {**profile, "transform": transform @ scale}
            path = work / f"{name}.ovr{k}.tif"
            self.levels.append(_Level(path, prof, size, resampling))

    def add_rows(self, row0: int, rows: np.ndarray) -> None:
        """Take full-resolution rows ``row0 ..`` (in order, top to bottom)."""
        if row0 != self.next_row:
            raise ValueError(f"rows must come in order: got row {row0}, expected {self.next_row}")
        self.next_row += len(rows)
        last = self.next_row >= self.height
        out: np.ndarray | None = rows
        for level in self.levels:
            if out is None:
                break
            out = level.add(out, last)

    def close(self) -> None:
        """Close the levels' files (they are complete once every row was added)."""
        for level in self.levels:
            level.close()

    def __enter__(self) -> Pyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def paths(self) -> list[Path]:
        """The levels' files, largest first."""
        return [level.path for level in self.levels]


def _vrt(
    full: Path,
    levels: list[Path],
    description: str | None,
    colormap: ColorMap | None = None,
    u8_steps: int | None = None,
) -> str:
    """VRT of a single-band GeoTIFF that names ``levels`` as its overviews.

    With ``u8_steps`` the float raster is presented as uint8 ``round(value * u8_steps)``
    (nodata 255) with GDAL scale ``1 / u8_steps``; the levels must already be stored so.
    """
    with rasterio.open(full) as ds:
        width, height, crs, transform = ds.width, ds.height, ds.crs, ds.transform
        dtype, nodata = ds.dtypes[0], ds.nodata
    src_nodata = nodata
    if u8_steps is not None:
        dtype, nodata = "uint8", 255
    gdal_type = {"float32": "Float32", "uint8": "Byte", "float64": "Float64", "int16": "Int16",
                 "uint16": "UInt16", "int32": "Int32"}[dtype]  # fmt: skip

    def source(path: Path, tag: str) -> str:
        name = html.escape(str(path.resolve()))
        return (
            f'<{tag}><SourceFilename relativeToVRT="0">{name}</SourceFilename>'
            f"<SourceBand>1</SourceBand></{tag}>"
        )

    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if crs is not None:
        parts.append(f"<SRS>{html.escape(crs.to_wkt())}</SRS>")
    parts.append(f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>")
    parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="1">')
    if description:
        parts.append(f"<Description>{html.escape(description)}</Description>")
    if nodata is not None:
        parts.append(f"<NoDataValue>{nodata!r}</NoDataValue>")
    if colormap:
        parts.append("<ColorInterp>Palette</ColorInterp><ColorTable>")
        for i in range(max(colormap) + 1):
            c = colormap.get(i, (0, 0, 0, 0))
            parts.append(f'<Entry c1="{c[0]}" c2="{c[1]}" c3="{c[2]}" c4="{c[3]}"/>')
        parts.append("</ColorTable>")
    if u8_steps is None:
        parts.append(source(full, "SimpleSource"))
    else:  # GDAL rounds to the nearest integer when it converts the scaled floats to bytes
        parts.append(f"<Offset>0</Offset><Scale>{1.0 / u8_steps!r}</Scale>")
        scaled = f"<ScaleOffset>0</ScaleOffset><ScaleRatio>{u8_steps}</ScaleRatio>"
        if src_nodata is not None:
            scaled += f"<NODATA>{src_nodata!r}</NODATA>"
        parts.append(
            source(full, "ComplexSource").replace("</ComplexSource>", scaled + "</ComplexSource>")
        )
    parts += [source(p, "Overview") for p in levels]
    parts.append("</VRTRasterBand></VRTDataset>")
    return "".join(parts)


def write_cog(
    full: Path,
    dst: Path,
    *,
    pyramid: Pyramid | None = None,
    resampling: str = "average",
    description: str | None = None,
    colormap: ColorMap | None = None,
    u8_steps: int | None = None,
) -> None:
    """Copy a tiled GeoTIFF to a cloud-optimised GeoTIFF (DEFLATE, 256 px blocks, overviews).

    With ``pyramid`` (closed, every row added) its levels become the overviews as they are,
    and ``colormap`` the colour table of a single-byte raster (palette colour
    interpretation); without, the COG driver computes them with ``resampling``. With
    ``u8_steps`` (and a pyramid whose levels are stored so) a float raster is stored as uint8
    ``round(value * u8_steps)``, nodata 255, GDAL scale ``1 / u8_steps``.
    """
    with rasterio.open(full) as ds:
        dtype = ds.dtypes[0]
    if u8_steps is not None:
        if pyramid is None:
            raise ValueError("u8_steps needs the pyramid of the stored levels")
        dtype = "uint8"
    opts = {
        "compress": "DEFLATE",
        "predictor": "3" if dtype.startswith("float") else "2",
        "blocksize": BLOCK,
        "num_threads": "ALL_CPUS",
        "bigtiff": "IF_SAFER",
    }
    if pyramid is None:
        opts["overview_resampling"] = resampling
        rasterio.shutil.copy(str(full), str(dst), driver="COG", **opts)
        return
    vrt = full.with_suffix(".vrt")
    vrt.write_text(_vrt(full, pyramid.paths, description, colormap, u8_steps))
    opts["overviews"] = "FORCE_USE_EXISTING" if pyramid.paths else "NONE"
    try:
        rasterio.shutil.copy(str(vrt), str(dst), driver="COG", **opts)
    finally:
        vrt.unlink(missing_ok=True)


__all__ = ["Pyramid", "overview_sizes", "write_cog"]
