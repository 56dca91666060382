"""What a user can ask of a scene prediction (``pvdetect predict``, ``pvdetect map``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pvdetect.inference.vectorize import DEFAULT_MAX_HOLE_M2, DEFAULT_MIN_AREA_M2

__all__ = ["PredictOptions"]


@dataclass
class PredictOptions:
    """Options of :func:`predict_scene` (``None`` = take the value from the bundle).

    Attributes:
        tile: tile side in input pixels (multiple of the model's required multiple).
        overlap: overlap between neighbouring tiles in input pixels.
        batch_size: tiles per forward pass (None: :func:`default_batch_size` for the device).
        threshold: probability at or above which a pixel is PV.
        min_area_m2: plants smaller than this are dropped.
        max_hole_m2: holes in plants smaller than this are filled.
        tta: average the 8 flips/rotations (8x slower).
        geojson: also write ``<stem>_plants.geojson`` in EPSG:4326.
        device: "auto", "cpu", "cuda" or "cuda:N".
        upscaled_output: with an upscaling bundle, write rasters at the upscaled resolution.
        overlay: write ``<stem>_overlay.png``.
        overlay_max_side: long side of the overlay in pixels (at most).
        progress: called after each tile row with (tiles done, tiles in all); an exception it
            raises stops the prediction (nothing of the scene is left behind).
        bands: file bands in the bundle's order, names or 1-based indices (``"B04,B03,B02,B08"``,
            ``"3,2,1,7"``); None: by the file's band names, else in file order.
        offset: ``--offset``: added to the stored values (one value, or one per band); with it
            or ``scale`` the file's own scale/offset metadata is ignored.
        scale: ``--scale``: multiplies the stored values first (GDAL's convention; a scale of
            at most 1e-3 means reflectance in 0..1, see :mod:`pvdetect.data.radiometry`).
        strict: refuse a scene whose values look unlike the training data (else: a warning).
        aoi: vector file of polygons; pixels outside are nodata, plants clipped to it.
        prob_dtype: storage of the probability COG: "float32" (nodata -9999) or "uint8"
            (0..250 for 0..1, nodata 255, GDAL scale 0.004: a quarter of the bytes).
    """

    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    threshold: float | None = None
    min_area_m2: float = DEFAULT_MIN_AREA_M2
    max_hole_m2: float = DEFAULT_MAX_HOLE_M2
    tta: bool = False
    geojson: bool = False
    device: str = "auto"
    upscaled_output: bool = False
    overlay: bool = True
    overlay_max_side: int = 2048
    progress: Callable[[int, int], None] | None = None
    bands: str | Sequence[str | int] | None = None
    offset: str | float | Sequence[float] | None = None
    scale: str | float | Sequence[float] | None = None
    strict: bool = False
    aoi: Path | None = None
    prob_dtype: str = "float32"
