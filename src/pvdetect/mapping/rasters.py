"""VRT documents of a map: the tile mosaics and a float view of uint8 probabilities.

Mosaics are GDAL VRTs over the tiles' COGs, so they cost no pixel copies: each tile contributes
the pixels of its cell (its COG also holds the margins, which the mosaic leaves out). Tiles of
one UTM zone share its pixel grid (north and south of the equator differ only by the false
northing, so one VRT holds both); with several zones, each zone's mosaic is warped by GDAL
(nearest neighbour) onto one grid in the map's output CRS, later zones drawn over earlier ones
where they overlap at a zone border. GDAL reads the tiles' overviews through the mosaics for
decimated reads (the quick-look).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyproj
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from pvdetect.inference.tiling import PROB_NODATA, PROB_U8_NODATA, PROB_U8_STEPS
from pvdetect.io import write_text
from pvdetect.mapping.grid import EQUATOR_SOUTH, utm_epsg

__all__ = ["MosaicTile", "float_view_xml", "write_mosaic"]

_GDAL_TYPES = {"float32": "Float32", "uint8": "Byte", "float64": "Float64"}


@dataclass(frozen=True)
class MosaicTile:
    """One tile's raster as a mosaic sees it."""

    path: Path  # the tile's COG (margins included)
    zone: int
    south: bool
    cell_bounds: tuple[float, float, float, float]  # in the tile's CRS
    margin: int
    cell_px: int
    res: float


def _src(path: Path, vrt_dir: Path) -> str:
    rel = os.path.relpath(path.resolve(), vrt_dir.resolve())
    return f'<SourceFilename relativeToVRT="1">{html.escape(rel)}</SourceFilename>'


def _band_header(dtype: str, nodata: float | None, scale: float | None, desc: str) -> str:
    parts = [f'<VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="1">']
    parts.append(f"<Description>{html.escape(desc)}</Description>")
    if nodata is not None:
        parts.append(f"<NoDataValue>{nodata!r}</NoDataValue>")
    if scale is not None:
        parts.append(f"<Offset>0</Offset><Scale>{scale!r}</Scale>")
    return "".join(parts)


def float_view_xml(path: Path, vrt_dir: Path) -> str:
    """A Float32 VRT of a uint8 probability raster: stored / 250, nodata -9999."""
    with rasterio.open(path) as ds:
        w, h, crs, t = ds.width, ds.height, ds.crs, ds.transform
    parts = [f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">']
    if crs is not None:
        parts.append(f"<SRS>{html.escape(crs.to_wkt())}</SRS>")
    parts.append(f"<GeoTransform>{', '.join(repr(v) for v in t.to_gdal())}</GeoTransform>")
    parts.append(_band_header("float32", PROB_NODATA, None, "PV probability"))
    parts.append(
        f"<ComplexSource>{_src(path, vrt_dir)}<SourceBand>1</SourceBand>"
        f"<ScaleOffset>0</ScaleOffset><ScaleRatio>{1.0 / PROB_U8_STEPS!r}</ScaleRatio>"
        f"<NODATA>{PROB_U8_NODATA}</NODATA></ComplexSource>"
    )
    parts.append("</VRTRasterBand></VRTDataset>")
    return "".join(parts)


def _zone_xml(
    tiles: Sequence[MosaicTile], vrt_dir: Path, dtype: str, nodata: float | None, desc: str
) -> tuple[str, int]:
    """VRT of one zone's tiles on their common grid; returns it and its EPSG code."""
    south = any(t.south for t in tiles)
    zone = tiles[0].zone
    res = tiles[0].res

    def y_of(t: MosaicTile, y: float) -> float:  # into the zone VRT's CRS
        return y + EQUATOR_SOUTH if south and not t.south else y

    minx = min(t.cell_bounds[0] for t in tiles)
    maxy = max(y_of(t, t.cell_bounds[3]) for t in tiles)
    maxx = max(t.cell_bounds[2] for t in tiles)
    miny = min(y_of(t, t.cell_bounds[1]) for t in tiles)
    width, height = round((maxx - minx) / res), round((maxy - miny) / res)
    epsg = utm_epsg(zone, south)
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    parts.append(f"<SRS>{html.escape(CRS.from_epsg(epsg).to_wkt())}</SRS>")
    parts.append(f"<GeoTransform>{minx!r}, {res!r}, 0.0, {maxy!r}, 0.0, {-res!r}</GeoTransform>")
    scale = 1.0 / PROB_U8_STEPS if dtype == "uint8" and desc.startswith("PV prob") else None
    parts.append(_band_header(dtype, nodata, scale, desc))
    for t in tiles:
        x0 = round((t.cell_bounds[0] - minx) / res)
        y0 = round((maxy - y_of(t, t.cell_bounds[3])) / res)
        n, m = t.cell_px, t.margin
        parts.append(
            f"<SimpleSource>{_src(t.path, vrt_dir)}<SourceBand>1</SourceBand>"
            f'<SrcRect xOff="{m}" yOff="{m}" xSize="{n}" ySize="{n}"/>'
            f'<DstRect xOff="{x0}" yOff="{y0}" xSize="{n}" ySize="{n}"/></SimpleSource>'
        )
    parts.append("</VRTRasterBand></VRTDataset>")
    return "".join(parts), epsg


def _top_grid(zone_vrts: Sequence[Path], crs: CRS) -> tuple[Affine, int, int]:
    """One grid in ``crs`` covering every zone mosaic, at the finest suggested pixel size."""
    boxes, sizes = [], []
    for path in zone_vrts:
        with rasterio.open(path) as src, WarpedVRT(src, crs=crs) as vrt:
            b = vrt.bounds
            boxes.append((b.left, b.bottom, b.right, b.top))
            sizes.append(min(abs(vrt.transform.a), abs(vrt.transform.e)))
    res = min(sizes)
    minx, miny = min(b[0] for b in boxes), min(b[1] for b in boxes)
    maxx, maxy = max(b[2] for b in boxes), max(b[3] for b in boxes)
    width, height = math.ceil((maxx - minx) / res), math.ceil((maxy - miny) / res)
    return Affine(res, 0.0, minx, 0.0, -res, maxy), width, height


def write_mosaic(
    tiles: Sequence[MosaicTile],
    dst: Path,
    out_crs: str,
    description: str,
    resampling: Resampling = Resampling.nearest,
) -> Path:
    """Write the mosaic VRT ``dst`` of the tiles' COGs (one raster kind: prob or mask).

    One zone: the zone's VRT itself. Several: per-zone VRTs and their warps into ``out_crs``
    under ``dst.parent / "mosaic"``, and ``dst`` drawing them in zone order.
    """
    with rasterio.open(tiles[0].path) as ds:
        dtype, nodata = ds.dtypes[0], ds.nodata
    by_zone: dict[int, list[MosaicTile]] = {}
    for t in tiles:
        by_zone.setdefault(t.zone, []).append(t)
    if len(by_zone) == 1:
        xml, _ = _zone_xml(tiles, dst.parent, dtype, nodata, description)
        return write_text(dst, xml)
    sub = dst.parent / "mosaic"
    sub.mkdir(exist_ok=True)
    stem = dst.stem
    zone_paths: list[Path] = []
    for zone, zt in sorted(by_zone.items()):
        xml, _ = _zone_xml(zt, sub, dtype, nodata, description)
        zone_paths.append(write_text(sub / f"{stem}_{zone:02d}.vrt", xml))
    crs = CRS.from_user_input(pyproj.CRS.from_user_input(out_crs).to_wkt())
    transform, width, height = _top_grid(zone_paths, crs)
    res = transform.a
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    parts.append(f"<SRS>{html.escape(crs.to_wkt())}</SRS>")
    parts.append(f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>")
    scale = 1.0 / PROB_U8_STEPS if dtype == "uint8" and description.startswith("PV prob") else None
    parts.append(_band_header(dtype, nodata, scale, description))
    for zpath in zone_paths:
        with rasterio.open(zpath) as src, WarpedVRT(src, crs=crs) as probe:
            b = probe.bounds
        c0 = max(0, math.floor((b.left - transform.c) / res))
        r0 = max(0, math.floor((transform.f - b.top) / res))
        c1 = min(width, math.ceil((b.right - transform.c) / res))
        r1 = min(height, math.ceil((transform.f - b.bottom) / res))
        sub_t = transform @ Affine.translation(c0, r0)
        warped = zpath.with_suffix(".warped.vrt")
        with (
            rasterio.open(zpath) as src,
            WarpedVRT(
                src,
                crs=crs,
                transform=sub_t,
                width=c1 - c0,
                height=r1 - r0,
                resampling=resampling,
                src_nodata=nodata,
                nodata=nodata,
            ) as vrt,
        ):
            tmp = warped.with_name(f".{warped.name}.part")
            rasterio.shutil.copy(vrt, str(tmp), driver="VRT")
            os.replace(tmp, warped)
        nd = f"<NODATA>{nodata!r}</NODATA>" if nodata is not None else ""
        parts.append(
            f"<ComplexSource>{_src(warped, dst.parent)}<SourceBand>1</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{c1 - c0}" ySize="{r1 - r0}"/>'
            f'<DstRect xOff="{c0}" yOff="{r0}" xSize="{c1 - c0}" ySize="{r1 - r0}"/>'
            f"{nd}</ComplexSource>"
        )
    parts.append("</VRTRasterBand></VRTDataset>")
    return write_text(dst, "".join(parts))
