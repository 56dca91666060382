"""What a user can ask of a scene prediction (``pvdetect predict``, ``pvdetect map``)."""

from __future__ import annotations

from dataclasses import dataclass

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
    prob_dtype: str = "float32"
