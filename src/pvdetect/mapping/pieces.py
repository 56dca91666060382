"""Plant pieces as columns: geometries plus whatever attributes ``predict`` wrote.

The map does not assume which attributes ``predict`` writes beyond the statistics it merges
(``area_m2``, ``area_ha``, ``mean_prob``, ``max_prob``, and ``lon``/``lat`` when present): every
other column is carried as it is, so new per-plant attributes flow through the map unchanged.
A tile's pieces file adds one column, ``edge`` (1: the piece touches the border of the region
its tile owns and may continue in a neighbour).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from pvdetect.errors import DataError, OutputError
from pvdetect.io import atomic_output, first_line

__all__ = ["EDGE", "Pieces", "read_pieces", "write_pieces"]

EDGE = "edge"


@dataclass
class Pieces:
    """Polygons with attribute columns (numpy arrays of one length)."""

    geoms: np.ndarray  # shapely geometries (object)
    names: list[str]
    columns: list[np.ndarray]
    edge: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        if len(self.edge) != len(self.geoms):
            self.edge = np.zeros(len(self.geoms), dtype=bool)

    def __len__(self) -> int:
        return len(self.geoms)

    def column(self, name: str) -> np.ndarray | None:
        """The column ``name``, or None."""
        return self.columns[self.names.index(name)] if name in self.names else None

    def area_m2(self) -> np.ndarray:
        """Areas in m2 (from ``area_m2``, else ``area_ha``; else the planar area)."""
        a = self.column("area_m2")
        if a is not None:
            return a.astype(np.float64)
        ha = self.column("area_ha")
        if ha is not None:
            return ha.astype(np.float64) * 10000.0
        return shapely.area(self.geoms).astype(np.float64)

    def take(self, idx: np.ndarray, geoms: np.ndarray | None = None) -> Pieces:
        """Rows ``idx`` (with new geometries when given)."""
        idx = np.asarray(idx, dtype=np.int64)
        g = self.geoms[idx] if geoms is None else geoms
        return Pieces(g, list(self.names), [c[idx] for c in self.columns], self.edge[idx])

    def set(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Set ``values`` in column ``name`` (when the column exists) at ``rows``."""
        col = self.column(name)
        if col is not None:
            col[rows] = np.asarray(values).astype(col.dtype)

    def set_stats(
        self, rows: np.ndarray, areas: np.ndarray, means: np.ndarray, maxes: np.ndarray
    ) -> None:
        """New area and probability statistics for ``rows``."""
        self.set("area_m2", rows, np.round(areas, 2))
        self.set("area_ha", rows, np.round(areas / 10000.0, 4))
        self.set("mean_prob", rows, means)
        self.set("max_prob", rows, maxes)


def read_pieces(path: str | os.PathLike) -> Pieces:
    """Plants or pieces from a vector file (``edge`` read into :attr:`Pieces.edge`)."""
    import pyogrio.raw

    p = Path(path)
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(str(p))]
        layer = "plants" if "plants" in layers else None  # beside it: QGIS's layer_styles
        meta, _, wkb, data = pyogrio.raw.read(str(p), layer=layer)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises its own and GDAL's types
        raise DataError(f"{p}: cannot read plants ({first_line(exc)})") from None
    names = [str(n) for n in meta["fields"]]
    columns = [np.asarray(c) for c in data]
    geoms = shapely.from_wkb(wkb) if wkb is not None and len(wkb) else np.array([], object)
    edge = np.zeros(len(geoms), dtype=bool)
    if EDGE in names:
        i = names.index(EDGE)
        edge = columns.pop(i).astype(bool)
        names.pop(i)
    return Pieces(np.asarray(geoms, dtype=object), names, columns, edge)


def write_pieces(
    path: str | os.PathLike,
    pieces: Pieces,
    crs: object,
    *,
    edge: bool = True,
    style_qml: str | None = None,
) -> Path:
    """Write pieces as a GeoPackage layer ``plants`` (with the ``edge`` column), atomically.

    ``style_qml``: a QGIS style stored as the layer's default (``layer_styles``).
    """
    import pyogrio.raw
    import pyproj

    final = Path(path)
    names, columns = list(pieces.names), list(pieces.columns)
    if edge:
        names.append(EDGE)
        columns.append(pieces.edge.astype(np.int32))
    wkb = (
        np.array(shapely.to_wkb(pieces.geoms), dtype=object)
        if len(pieces)
        else np.array([], dtype=object)
    )
    wkt = pyproj.CRS.from_user_input(crs).to_wkt()
    with atomic_output(final) as tmp:
        try:
            pyogrio.raw.write(
                str(tmp),
                wkb,
                columns,
                names,
                layer="plants",
                driver="GPKG",
                geometry_type="Polygon",
                crs=wkt,
            )
        except OSError as exc:
            raise OutputError(f"{final}: cannot write ({exc})") from None
        if style_qml is not None:
            from pvdetect.inference.styles import store_layer_style

            store_layer_style(tmp, "plants", style_qml)
    return final
