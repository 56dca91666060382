"""The landscape model of a synthetic site or scene and the rendering of any window of it.

A :class:`Landscape` is a set of background fields (hashed noise over world pixel
coordinates: soils, shrubs, rivers, parcels, towns) plus the vector objects painted over
them. :func:`render_window` renders any window of it: background, objects, plants, shadows,
radiometric gain, a Gaussian PSF, sensor noise and nodata cuts. A margin of ``_PAD`` pixels
keeps the PSF from seeing the window border, so windows join without seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pvdetect.data.raster import DEFAULT_NODATA
from pvdetect.synth.noise import fbm, hash_normal, hash_uniform, tri
from pvdetect.synth.shapes import Canvas
from pvdetect.synth.spectra import (
    PARCEL_P,
    PARCEL_TABLE,
    PARCELS,
    SPECTRA,
    URBAN,
    URBAN_P,
    URBAN_TABLE,
)

__all__ = ["PIXEL_SIZE", "REGIONS", "REGION_CRS", "Landscape", "new_landscape", "render_window"]

REGIONS = ("brazil", "temperate")
#: CRS of each region: SIRGAS 2000 / UTM 23S; WGS84 / UTM 33N
REGION_CRS = {"brazil": "EPSG:31983", "temperate": "EPSG:32633"}
PIXEL_SIZE = 10.0  # m
_PAD = 4  # render margin (px) so that the PSF blur never sees a window border
_SIGMA = 0.6  # Gaussian PSF (px)


@dataclass
class Landscape:
    """Background fields of a site or scene plus its vector objects, in world pixel coords."""

    region: str
    key: int
    soil_bias: float = 0.0
    shrub: float = 0.5
    town_thr: float = 0.3
    forest_thr: float = 0.2
    parcel_angle: float = 0.0
    parcel_u: float = 30.0
    parcel_v: float = 60.0
    town_angle: float = 0.0
    gain: np.ndarray = field(default_factory=lambda: np.ones(4))
    objects: list = field(default_factory=list)  # painted in order (before plants)
    plants: list = field(default_factory=list)
    shadows: list = field(default_factory=list)  # painted after plants
    cuts: list = field(default_factory=list)  # (a, b, c): nodata where a*x + b*y > c


def new_landscape(region: str, rng: np.random.Generator, key: int) -> Landscape:
    """A landscape of ``region`` with background parameters drawn from ``rng``, no objects."""
    return Landscape(
        region=region,
        key=key,
        soil_bias=float(rng.uniform(-0.25, 0.1)),
        shrub=float(rng.uniform(0.2, 0.9)),
        town_thr=float(rng.uniform(0.38, 0.55)),
        forest_thr=float(rng.uniform(0.1, 0.3)),
        parcel_angle=float(rng.uniform(0, math.pi)),
        parcel_u=float(rng.uniform(18, 40)),
        parcel_v=float(rng.uniform(35, 90)),
        town_angle=float(rng.uniform(0, math.pi)),
        gain=rng.uniform(0.93, 1.07) * rng.uniform(0.97, 1.03, size=4),
    )


def _mix(base: np.ndarray, w: np.ndarray, spec: np.ndarray) -> None:
    """In place: base = base + w * (spec - base); spec [4] or [4, H, W]."""
    s = spec if spec.ndim == 3 else spec[:, None, None]
    base += w[None] * (s - base)


def _brazil_ground(land: Landscape, cv: Canvas) -> None:
    """Dry grass, red soil, cerrado shrubs and gallery forest along rivers."""
    yi, xi, k = cv.yi, cv.xi, land.key
    img = cv.img
    img[:] = SPECTRA["dry_grass"][:, None, None]
    soil = fbm(yi, xi, 192, 3, k + 11)
    _mix(img, np.clip(0.5 + 2.0 * (soil + land.soil_bias), 0.0, 1.0), SPECTRA["red_soil"])
    shrub = fbm(yi, xi, 40, 2, k + 12)
    _mix(img, np.clip((shrub - 0.1) * 4.0, 0.0, 1.0) * land.shrub, SPECTRA["cerrado"])
    river = fbm(yi, xi, 384, 2, k + 13)
    width = 0.045 + 0.03 * shrub
    _mix(img, np.clip((width - np.abs(river)) / 0.012, 0.0, 1.0), SPECTRA["gallery"])


def _temperate_ground(land: Landscape, cv: Canvas) -> None:
    """Rotated staggered parcels of crops and soils, furrows, hedges, tracks and forest."""
    k = land.key
    img = cv.img
    c, s = math.cos(land.parcel_angle), math.sin(land.parcel_angle)
    x = cv.xc[None, :]
    y = cv.yc[:, None]
    u = x * c + y * s
    v = y * c - x * s
    a = np.floor(u / land.parcel_u)
    shift = hash_uniform(a, np.zeros_like(a), k + 21) * land.parcel_v
    vv = v + shift
    b = np.floor(vv / land.parcel_v)
    r = hash_uniform(a, b, k + 22)
    cls = np.searchsorted(PARCEL_P, r * PARCEL_P[-1], side="right")
    cls = np.minimum(cls, len(PARCELS) - 1)
    img[:] = PARCEL_TABLE[:, cls]
    gain = 1.0 + 0.24 * (hash_uniform(a, b, k + 23) - 0.5)
    img *= gain[None]
    # furrows on bare parcels
    bare = (cls == 3) | (cls == 4)
    img *= (1.0 + 0.07 * bare * tri(u / 3.7))[None]
    # tracks and hedges on some parcel borders
    du = u - a * land.parcel_u
    du = np.minimum(du, land.parcel_u - du)
    dv = vv - b * land.parcel_v
    dv = np.minimum(dv, land.parcel_v - dv)
    edge = np.clip(0.7 - np.minimum(du, dv), 0.0, 1.0)
    kind = hash_uniform(a, b, k + 24)
    _mix(img, edge * (kind < 0.3), SPECTRA["forest"])
    _mix(img, edge * ((kind >= 0.3) & (kind < 0.55)), SPECTRA["track"])
    forest = fbm(cv.yi, cv.xi, 160, 3, k + 25)
    _mix(img, np.clip((forest - land.forest_thr) * 6.0, 0.0, 1.0), SPECTRA["forest"])


def _towns(land: Landscape, cv: Canvas) -> None:
    """Towns: a rotated grid of ~20 m cells of roofs, streets and gardens."""
    k = land.key
    town = fbm(cv.yi, cv.xi, 256, 2, k + 31)
    wt = np.clip((town - land.town_thr) * 8.0, 0.0, 1.0)
    if not wt.any():
        return
    c, s = math.cos(land.town_angle), math.sin(land.town_angle)
    x = cv.xc[None, :]
    y = cv.yc[:, None]
    tu = np.floor((x * c + y * s) / 2.2)
    tv = np.floor((y * c - x * s) / 2.2)
    r = hash_uniform(tu, tv, k + 32)
    probs = URBAN_P[land.region]
    cls = np.minimum(np.searchsorted(probs, r, side="right"), len(URBAN) - 1)
    urban = URBAN_TABLE[:, cls] * (0.85 + 0.3 * hash_uniform(tu, tv, k + 33))[None]
    _mix(cv.img, wt, urban)


def _background(land: Landscape, cv: Canvas) -> None:
    """Paint the background fields of the landscape on the whole canvas."""
    if land.region == "brazil":
        _brazil_ground(land, cv)
    else:
        _temperate_ground(land, cv)
    _towns(land, cv)
    cv.img *= (1.0 + 0.06 * cv.tex_m + 0.035 * cv.tex_f)[None]


def render_window(
    land: Landscape, y0: int, x0: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render world pixels [y0, y0+h) x [x0, x0+w) of a landscape.

    Returns:
        image float32 ``[4, h, w]`` (reflectance x 10000, nodata -9999), label bool ``[h, w]``
        and valid bool ``[h, w]``.
    """
    cv = Canvas(y0 - _PAD, x0 - _PAD, h + 2 * _PAD, w + 2 * _PAD, land.key)
    _background(land, cv)
    for obj in land.objects:
        obj.paint(cv)
    for plant in land.plants:
        plant.paint(cv)
    for shadow in land.shadows:
        shadow.paint(cv)
    img = cv.img
    img *= land.gain[:, None, None]
    for b in range(4):
        img[b] = ndimage.gaussian_filter(img[b], _SIGMA, mode="nearest", truncate=4.0)
    img = img[:, _PAD:-_PAD, _PAD:-_PAD]
    label = cv.label[_PAD:-_PAD, _PAD:-_PAD].copy()
    yi = cv.yi[_PAD:-_PAD, None]
    xi = cv.xi[None, _PAD:-_PAD]
    out = np.empty((4, h, w), dtype=np.float32)
    for b in range(4):
        noise = hash_normal(yi, xi, land.key + 101 + b)
        band = img[b] + noise * (12.0 + 0.015 * img[b])
        out[b] = np.rint(np.clip(band, 1.0, 10000.0))
    valid = np.ones((h, w), dtype=bool)
    xc = cv.xc[None, _PAD:-_PAD]
    yc = cv.yc[_PAD:-_PAD, None]
    for a, b, c in land.cuts:
        valid &= ~(a * xc + b * yc > c)
    out[:, ~valid] = DEFAULT_NODATA
    label &= valid
    return out, label, valid
