"""QGIS styles of the prediction outputs, so that every layer opens ready to read.

- rasters: a QML file beside each (``<stem>_prob.qml``, ``<stem>_mask.qml``), which QGIS loads
  as the default style of the raster of the same name: the probability as a colour ramp over
  0..1 (transparent at 0, opaque at 1; nodata transparent), the mask with PV in the outline
  colour and the background transparent;
- plants: the QML stored in the GeoPackage's ``layer_styles`` table (the convention QGIS uses
  for styles kept in a database: ``useAsDefault`` = true), so the layer opens styled; written
  through OGR, so the table is registered in ``gpkg_contents`` as an attributes table. A
  GeoJSON gets the same style as ``<stem>_plants.qml`` beside it.

The XML follows QGIS 3 project files (``<prop k= v=>`` symbol properties, which every QGIS 3
reads).
"""

from __future__ import annotations

import datetime as _dt
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pvdetect.errors import OutputError
from pvdetect.inference.colours import OUTLINE_RGB
from pvdetect.io import first_line

__all__ = [
    "OUTLINE_HEX",
    "PROB_RAMP",
    "mask_qml",
    "plants_qml",
    "probability_qml",
    "store_layer_style",
]

#: colour of PV: plant outlines and mask pixels, as in the overlay
OUTLINE_HEX = "#{:02x}{:02x}{:02x}".format(*OUTLINE_RGB)
#: probability ramp: (value, colour, alpha), magma-like, transparent at 0
PROB_RAMP = (
    (0.0, "#000004", 0),
    (0.25, "#51127c", 110),
    (0.5, "#b73779", 190),
    (0.75, "#fc8961", 230),
    (1.0, "#fcfdbf", 255),
)
QGIS_VERSION = "3.28.0-Firenze"
_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _root(categories: str) -> ET.Element:
    return ET.Element(
        "qgis",
        {
            "version": QGIS_VERSION,
            "styleCategories": categories,
            "hasScaleBasedVisibilityFlag": "0",
            "minScale": "1e+08",
            "maxScale": "0",
        },
    )


def _text(root: ET.Element) -> str:
    ET.indent(root)
    return _DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"


def _raster_pipe(root: ET.Element, renderer: dict[str, str]) -> ET.Element:
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(
        provider,
        "resampling",
        {
            "enabled": "false",
            "zoomedInResamplingMethod": "nearestNeighbour",
            "zoomedOutResamplingMethod": "nearestNeighbour",
            "maxOversampling": "2",
        },
    )
    attrs = {"band": "1", "opacity": "1", "alphaBand": "-1", "nodataColor": "", **renderer}
    r = ET.SubElement(pipe, "rasterrenderer", attrs)
    ET.SubElement(r, "rasterTransparency")
    return r


def _raster_tail(root: ET.Element) -> None:
    pipe = root.find("pipe")
    assert pipe is not None
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(
        pipe,
        "huesaturation",
        {"saturation": "0", "grayscaleMode": "0", "colorizeOn": "0", "colorizeRed": "255",
         "colorizeGreen": "128", "colorizeBlue": "128", "colorizeStrength": "100"},
    )  # fmt: skip
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(root, "blendMode").text = "0"


def probability_qml() -> str:
    """QML of a probability raster: an interpolated colour ramp over 0..1."""
    root = _root("Symbology")
    r = _raster_pipe(
        root,
        {"type": "singlebandpseudocolor", "classificationMin": "0", "classificationMax": "1"},
    )
    origin = ET.SubElement(r, "minMaxOrigin")
    for tag, value in (("limits", "None"), ("extent", "WholeRaster"),
                       ("statAccuracy", "Estimated"), ("cumulativeCutLower", "0.02"),
                       ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):  # fmt: skip
        ET.SubElement(origin, tag).text = value
    shader = ET.SubElement(ET.SubElement(r, "rastershader"), "colorrampshader")
    shader.attrib.update(
        {"colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0",
         "minimumValue": "0", "maximumValue": "1"}
    )  # fmt: skip
    for value, colour, alpha in PROB_RAMP:
        ET.SubElement(
            shader,
            "item",
            {"value": f"{value:g}", "color": colour, "alpha": str(alpha), "label": f"{value:g}"},
        )
    _raster_tail(root)
    return _text(root)


def mask_qml(threshold: float | None = None) -> str:
    """QML of a mask raster: PV (1) in the outline colour, background (0) transparent."""
    root = _root("Symbology")
    r = _raster_pipe(root, {"type": "paletted"})
    palette = ET.SubElement(r, "colorPalette")
    pv = "PV" if threshold is None else f"PV (probability >= {threshold:g})"
    ET.SubElement(
        palette, "paletteEntry", {"value": "0", "color": "#000000", "alpha": "0", "label": "no PV"}
    )
    ET.SubElement(
        palette, "paletteEntry", {"value": "1", "color": OUTLINE_HEX, "alpha": "255", "label": pv}
    )
    _raster_tail(root)
    return _text(root)


def plants_qml() -> str:
    """QML of the plants layer: outline in the PV colour over a light fill of it."""
    root = _root("Symbology|MapTips")
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        {"type": "singleSymbol", "forceraster": "0", "symbollevels": "0", "enableorderby": "0"},
    )
    symbols = ET.SubElement(renderer, "symbols")
    symbol = ET.SubElement(
        symbols,
        "symbol",
        {"type": "fill", "name": "0", "alpha": "1", "clip_to_extent": "1", "force_rhr": "0"},
    )
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"}
    )
    r, g, b = OUTLINE_RGB
    for k, v in (("color", f"{r},{g},{b},45"), ("style", "solid"),
                 ("outline_color", f"{r},{g},{b},255"), ("outline_style", "solid"),
                 ("outline_width", "0.6"), ("outline_width_unit", "MM"),
                 ("joinstyle", "miter"), ("offset", "0,0"), ("offset_unit", "MM")):  # fmt: skip
        ET.SubElement(layer, "prop", {"k": k, "v": v})
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    ET.SubElement(
        root, "mapTip"
    ).text = 'Plant [% "id" %]: [% round("area_ha", 2) %] ha, mean probability [% "mean_prob" %]'
    return _text(root)


def store_layer_style(
    gpkg: str | os.PathLike,
    layer: str,
    qml: str,
    *,
    name: str = "pvdetect",
    description: str = "pvdetect default style",
) -> None:
    """Add ``qml`` as the default style of ``layer`` to the GeoPackage's ``layer_styles``."""
    import pyogrio
    import pyogrio.raw

    path = Path(gpkg)
    try:
        geom_col = pyogrio.read_info(path, layer=layer).get("geometry_name") or "geom"
    except Exception:  # noqa: BLE001 - older GDAL does not report it
        geom_col = "geom"
    now = np.datetime64(_dt.datetime.now(_dt.UTC).replace(tzinfo=None, microsecond=0))
    row: dict[str, np.ndarray] = {
        "f_table_catalog": np.array([""], object),
        "f_table_schema": np.array([""], object),
        "f_table_name": np.array([layer], object),
        "f_geometry_column": np.array([geom_col], object),
        "styleName": np.array([name], object),
        "styleQML": np.array([qml], object),
        "styleSLD": np.array([""], object),
        "useAsDefault": np.array([True]),
        "description": np.array([description], object),
        "owner": np.array([""], object),
        "ui": np.array([""], object),
        "update_time": np.array([now]),
    }
    try:
        pyogrio.raw.write(
            str(path),
            None,
            list(row.values()),
            list(row),
            layer="layer_styles",
            driver="GPKG",
            append=True,
            layer_options={"FID": "id"},
        )
    except Exception as exc:  # noqa: BLE001 - OGR raises many types
        raise OutputError(f"{path}: cannot store the layer style ({first_line(exc)})") from None
