"""Synthetic Sentinel-2-like PV dataset: labelled chips and large scenes (``pvdetect synth``).

Everything is drawn from vector primitives and coordinate-hashed noise in the pixel grid of a
site or scene, so any window can be rendered on its own and windows join without seams: a
4096 px scene is written block by block, and rendering it with other block sizes gives the
same pixels. Reflectance levels follow ``shared/data/REFLECTANCE.md`` (Brazilian dry season:
red soil, dry grass, gallery forest; green temperate farmland), PV plants are rotated blocks
of panel rows (a periodic mixed panel/ground texture at 10 m) with service roads, and dark
look-alikes (water, dark roofs, asphalt lots, burned areas, cloud shadows) overlap PV per
pixel so that only shape and texture separate them.

Layout written (Solar-Plants-Brazil): ``OUT/{train,val,test}/input/img(N).tif``,
``OUT/{train,val,test}/labels/target(N).tif`` (float32 1/0, -9999 where the image is nodata),
``OUT/sites.csv`` (``split,n,site,date``) and ``OUT/scenes/<name>.tif`` + ``<name>_mask.tif``
(uint8 0/1, nodata 255). This module does not import torch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from scipy import ndimage

from pvdetect.data.raster import (
    BAND_NAMES,
    DEFAULT_NODATA,
    atomic_output,
    geotiff_profile,
    write_raster,
)
from pvdetect.errors import ConfigError, OutputError

__all__ = [
    "REGIONS",
    "SceneSummary",
    "SynthSummary",
    "generate_dataset",
    "generate_scene",
]

REGIONS = ("brazil", "temperate")
PIXEL_SIZE = 10.0
MASK_NODATA = 255
SPLITS = ("train", "val", "test")
_CRS = {"brazil": "EPSG:31983", "temperate": "EPSG:32633"}  # SIRGAS 2000 / UTM 23S; WGS84 / 33N
_PAD = 4  # render margin (px) so that the PSF blur never sees a window border
_SIGMA = 0.6  # Gaussian PSF (px)
_REF_AREA = 256 * 256  # object densities are given per 256 x 256 px (2.56 km x 2.56 km)
_PV_TARGET = 0.03  # wanted share of PV pixels

# --------------------------------------------------------------------------------------------
# Spectra (Red, Green, Blue, NIR), surface reflectance x 10000
# --------------------------------------------------------------------------------------------
_S = {
    # Brazil, dry season
    "dry_grass": (1150, 880, 520, 2250),
    "red_soil": (1750, 1150, 680, 2400),
    "cerrado": (650, 640, 380, 2350),
    "gallery": (320, 520, 260, 2900),
    "dirt_road": (1800, 1250, 800, 2200),
    "burned": (420, 400, 330, 950),
    "pivot_crop": (350, 700, 330, 4200),
    "bare_field": (1600, 1150, 720, 2100),
    "sand": (2100, 1850, 1500, 2450),
    "pv_ground_br": (1500, 1100, 750, 1450),
    # temperate, growing season
    "pasture": (420, 760, 360, 3500),
    "dense_crop": (300, 650, 300, 4600),
    "medium_crop": (600, 800, 450, 3000),
    "bare_soil": (1350, 1100, 850, 1900),
    "wet_soil": (650, 600, 480, 1050),
    "ripe_cereal": (1250, 1150, 800, 2700),
    "forest": (250, 450, 230, 2900),
    "track": (1200, 1150, 1000, 1600),
    "grass": (400, 720, 340, 3300),
    "gravel": (1300, 1200, 1000, 1600),
    "greenhouse": (1900, 2000, 2100, 2600),
    # both
    "clear_water": (260, 420, 380, 160),
    "turbid_water": (750, 880, 640, 520),
    "dark_water": (170, 260, 260, 90),
    "bright_roof": (2100, 2000, 1900, 2300),
    "red_tile": (1700, 1050, 800, 2000),
    "dark_roof": (520, 540, 560, 620),
    "asphalt": (900, 860, 790, 1050),
    "urban_green": (500, 750, 450, 3000),
    "panel": (560, 600, 620, 740),
}
SPECTRA: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.float64) for k, v in _S.items()}

# temperate parcel classes and their probabilities
_PARCELS = ("pasture", "dense_crop", "medium_crop", "bare_soil", "wet_soil", "ripe_cereal")
_PARCEL_P = np.cumsum([0.28, 0.2, 0.15, 0.13, 0.09, 0.15])
_PARCEL_TABLE = np.stack([SPECTRA[k] for k in _PARCELS], axis=1)  # [4, K]
_URBAN = ("bright_roof", "red_tile", "dark_roof", "asphalt", "urban_green")
_URBAN_P = {
    "brazil": np.cumsum([0.25, 0.3, 0.12, 0.2, 0.13]),
    "temperate": np.cumsum([0.3, 0.2, 0.15, 0.2, 0.15]),
}
_URBAN_TABLE = np.stack([SPECTRA[k] for k in _URBAN], axis=1)


# --------------------------------------------------------------------------------------------
# Coordinate hashing and value noise (identical for a pixel whatever window contains it)
# --------------------------------------------------------------------------------------------
_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)
_C3 = np.uint64(0xBF58476D1CE4E5B9)
_C4 = np.uint64(0x94D049BB133111EB)


def _key(*parts: object) -> int:
    """A 64-bit key from any printable parts (stable across runs and platforms)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _hash(iy: np.ndarray, ix: np.ndarray, key: int) -> np.ndarray:
    """uint64 hash of integer coordinates (broadcasting)."""
    y = np.asarray(iy).astype(np.int64).astype(np.uint64)
    x = np.asarray(ix).astype(np.int64).astype(np.uint64)
    h = (x * _C1) ^ (y * _C2) ^ np.uint64(key)
    h ^= h >> np.uint64(31)
    h *= _C3
    h ^= h >> np.uint64(29)
    h *= _C4
    h ^= h >> np.uint64(32)
    return h


def _uniform(iy: np.ndarray, ix: np.ndarray, key: int) -> np.ndarray:
    """Uniform [0, 1) float64 from coordinates."""
    return (_hash(iy, ix, key) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _normal(iy: np.ndarray, ix: np.ndarray, key: int) -> np.ndarray:
    """Approximately standard-normal float64 from coordinates (sum of four 16-bit uniforms)."""
    h = _hash(iy, ix, key)
    m = np.uint64(0xFFFF)
    s = (h & m).astype(np.float64)
    s += ((h >> np.uint64(16)) & m).astype(np.float64)
    s += ((h >> np.uint64(32)) & m).astype(np.float64)
    s += (h >> np.uint64(48)).astype(np.float64)
    return (s * (1.0 / 65536.0) - 2.0) * math.sqrt(3.0)


def _value_noise(yi: np.ndarray, xi: np.ndarray, cell: int, key: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] on the integer pixel rows ``yi`` and columns ``xi``."""
    cell = max(1, int(cell))
    gy, fy = np.divmod(yi, cell)
    gx, fx = np.divmod(xi, cell)
    ty = fy / cell
    tx = fx / cell
    wy = ty * ty * (3.0 - 2.0 * ty)
    wx = tx * tx * (3.0 - 2.0 * tx)
    ly = np.arange(gy.min(), gy.max() + 2)
    lx = np.arange(gx.min(), gx.max() + 2)
    lattice = _uniform(ly[:, None], lx[None, :], key) * 2.0 - 1.0
    rx = gx - lx[0]
    rows = lattice[:, rx] * (1.0 - wx) + lattice[:, rx + 1] * wx  # [Ly, W]
    ry = gy - ly[0]
    return rows[ry] * (1.0 - wy)[:, None] + rows[ry + 1] * wy[:, None]


def _fbm(yi: np.ndarray, xi: np.ndarray, cell: int, octaves: int, key: int) -> np.ndarray:
    """Fractal sum of value noise, roughly in [-1, 1] (most values within +-0.6)."""
    out = np.zeros((yi.size, xi.size))
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(1, cell >> o)
        out += amp * _value_noise(yi, xi, c, key + o * 7919)
        total += amp
        amp *= 0.5
    return out / total


def _tri(t: np.ndarray) -> np.ndarray:
    """Triangle wave in [-1, 1] with period 1 (no transcendental functions: exact everywhere)."""
    return np.abs(2.0 * (t - np.floor(t)) - 1.0) * 2.0 - 1.0


# --------------------------------------------------------------------------------------------
# Canvas and landscape objects
# --------------------------------------------------------------------------------------------
class _Canvas:
    """A padded window of the world pixel grid being rendered."""

    def __init__(self, y0: int, x0: int, h: int, w: int, key: int) -> None:
        self.y0, self.x0, self.h, self.w = y0, x0, h, w
        self.yi = np.arange(y0, y0 + h, dtype=np.int64)
        self.xi = np.arange(x0, x0 + w, dtype=np.int64)
        self.yc = self.yi + 0.5
        self.xc = self.xi + 0.5
        self.img = np.zeros((4, h, w))
        self.label = np.zeros((h, w), dtype=bool)
        self.tex_f = _value_noise(self.yi, self.xi, 3, key + 1)
        self.tex_m = _fbm(self.yi, self.xi, 16, 2, key + 2)

    def window(self, bbox: tuple[float, float, float, float]) -> tuple[int, int, int, int] | None:
        """Rows and columns (r0, r1, c0, c1) of the canvas inside ``bbox`` = (x0, y0, x1, y1)."""
        c0 = max(0, math.floor(bbox[0]) - 1 - self.x0)
        r0 = max(0, math.floor(bbox[1]) - 1 - self.y0)
        c1 = min(self.w, math.ceil(bbox[2]) + 2 - self.x0)
        r1 = min(self.h, math.ceil(bbox[3]) + 2 - self.y0)
        if r0 >= r1 or c0 >= c1:
            return None
        return r0, r1, c0, c1

    def local(
        self, win: tuple[int, int, int, int], cx: float, cy: float, cos: float, sin: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rotated coordinates (u along the object's axis, v across) of pixel centres."""
        r0, r1, c0, c1 = win
        dx = (self.xc[c0:c1] - cx)[None, :]
        dy = (self.yc[r0:r1] - cy)[:, None]
        return dx * cos + dy * sin, dy * cos - dx * sin

    def blend(self, win: tuple[int, int, int, int], alpha: np.ndarray, spec: np.ndarray) -> None:
        """Alpha-composite ``spec`` ([4], or [4, h, w]) over the window."""
        r0, r1, c0, c1 = win
        view = self.img[:, r0:r1, c0:c1]
        s = spec if spec.ndim == 3 else spec[:, None, None]
        view += alpha[None] * (s - view)


def _rect_sd(u: np.ndarray, v: np.ndarray, hw: float, hh: float) -> np.ndarray:
    """Signed distance (px, Chebyshev-like) to an axis-aligned rectangle centred at 0."""
    return np.maximum(np.abs(u) - hw, np.abs(v) - hh)


def _cover(sd: np.ndarray) -> np.ndarray:
    """Approximate area coverage of a pixel from the signed distance of its centre."""
    return np.clip(0.5 - sd, 0.0, 1.0)


@dataclass(frozen=True)
class _Rect:
    """Rotated rectangle look-alike: asphalt lot, dark or bright hall roof, pond, greenhouse."""

    cx: float
    cy: float
    hw: float
    hh: float
    angle: float
    spec: np.ndarray
    stripes: float = 0.0  # period of a strong stripe texture (greenhouses); 0 = none
    cover: float = 1.0  # < 1: share of ``spec`` mixed with the ground below (yards, car lots)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        r = math.hypot(self.hw, self.hh) + 1.0
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    def paint(self, cv: _Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        u, v = cv.local(win, self.cx, self.cy, math.cos(self.angle), math.sin(self.angle))
        alpha = _cover(_rect_sd(u, v, self.hw, self.hh))
        r0, r1, c0, c1 = win
        tex = 1.0 + 0.05 * cv.tex_f[r0:r1, c0:c1]
        spec = self.spec[:, None, None] * tex[None]
        if self.stripes > 0:
            spec = spec * (1.0 + 0.25 * _tri(v / self.stripes))[None]
        if self.cover < 1.0:
            f = np.clip(self.cover * (1.0 + 0.3 * cv.tex_f[r0:r1, c0:c1]), 0.0, 1.0)
            below = cv.img[:, r0:r1, c0:c1]
            spec = below + f[None] * (spec - below)
        cv.blend(win, alpha, spec)


@dataclass(frozen=True)
class _Blob:
    """Irregular ellipse: lake, burned area, cloud shadow (``shade`` > 0 multiplies instead)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    spec: np.ndarray
    key: int
    wobble: float = 0.25
    shade: float = 0.0  # > 0: multiply the reflectance by this (shadow) instead of painting
    mix_spec: np.ndarray | None = None  # second spectrum mixed in by noise (patchy burns)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        r = max(self.a, self.b) * (1.0 + self.wobble) + 2.0
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    def paint(self, cv: _Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        r0, r1, c0, c1 = win
        u, v = cv.local(win, self.cx, self.cy, math.cos(self.angle), math.sin(self.angle))
        d = np.sqrt((u / self.a) ** 2 + (v / self.b) ** 2)
        cell = max(3, int(min(self.a, self.b) / 1.5))
        d = d + self.wobble * _fbm(cv.yi[r0:r1], cv.xi[c0:c1], cell, 2, self.key)
        edge = 1.0 if self.shade <= 0 else max(2.0, 0.15 * min(self.a, self.b))
        alpha = np.clip((1.0 - d) * min(self.a, self.b) / edge + 0.5, 0.0, 1.0)
        view = cv.img[:, r0:r1, c0:c1]
        if self.shade > 0:
            factor = 1.0 - alpha * (1.0 - self.shade)
            view *= factor[None]
            view[2] += alpha * 40.0  # diffuse blue skylight in shadow
            return
        spec = self.spec[:, None, None] * (1.0 + 0.06 * cv.tex_m[r0:r1, c0:c1])[None]
        if self.mix_spec is not None:
            w = np.clip(0.5 + 1.5 * cv.tex_m[r0:r1, c0:c1], 0.0, 1.0)
            spec = spec + w[None] * (self.mix_spec[:, None, None] - spec)
        cv.blend(win, alpha, spec)


@dataclass(frozen=True)
class _Pivot:
    """Centre-pivot irrigation circle (Brazil), green crop or bare, sometimes half and half."""

    cx: float
    cy: float
    r: float
    spec: np.ndarray
    spec2: np.ndarray

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (
            self.cx - self.r - 1,
            self.cy - self.r - 1,
            self.cx + self.r + 1,
            self.cy + self.r + 1,
        )

    def paint(self, cv: _Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        u, v = cv.local(win, self.cx, self.cy, 1.0, 0.0)
        rad = np.sqrt(u * u + v * v)
        alpha = _cover(rad - self.r)
        half = (u > 0)[None]
        spec = np.where(half, self.spec[:, None, None], self.spec2[:, None, None])
        spec = spec * (1.0 + 0.04 * _tri(rad / 3.0))[None]
        cv.blend(win, alpha, spec)


@dataclass(frozen=True)
class _Road:
    """Straight road segment of width ``width`` px (sub-pixel roads are faint mixed lines)."""

    x0: float
    y0: float
    x1: float
    y1: float
    width: float
    spec: np.ndarray

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        m = self.width + 1.0
        return (
            min(self.x0, self.x1) - m,
            min(self.y0, self.y1) - m,
            max(self.x0, self.x1) + m,
            max(self.y0, self.y1) + m,
        )

    def paint(self, cv: _Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        length = math.hypot(self.x1 - self.x0, self.y1 - self.y0)
        if length <= 0:
            return
        cos, sin = (self.x1 - self.x0) / length, (self.y1 - self.y0) / length
        u, v = cv.local(win, self.x0, self.y0, cos, sin)
        along = np.maximum(np.maximum(-u, u - length), 0.0)
        dist = np.sqrt(v * v + along * along)
        alpha = np.clip(self.width / 2.0 + 0.5 - dist, 0.0, 1.0) * min(1.0, self.width)
        cv.blend(win, alpha, self.spec)


@dataclass(frozen=True)
class _Plant:
    """A PV plant: rotated rectangles (one, or two for an L shape) of panel rows.

    Rows are sub-pixel at 10 m, so a pixel holds a share ``fill`` of panels and the rest is
    ground; aliasing of the row pitch makes a stripe texture (period ``period`` px) across
    the rows. Service roads cross the plant every ``road_every`` px. The label is the
    footprint (pixel centre inside a rectangle), gaps and margins included.
    """

    cx: float
    cy: float
    angle: float
    rects: tuple[tuple[float, float, float, float], ...]  # (cu, cv, hw, hh) in plant axes
    panel: np.ndarray
    ground: np.ndarray
    road: np.ndarray
    fill: float
    period: float
    amp: float
    phase: float
    road_every: float
    road_width: float
    margin: float
    rows_along_u: bool
    gains: tuple[float, ...]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        r = max(math.hypot(abs(cu) + hw, abs(cv) + hh) for cu, cv, hw, hh in self.rects) + 1.0
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    @property
    def area(self) -> float:
        return sum(4.0 * hw * hh for _, _, hw, hh in self.rects)

    def paint(self, cv: _Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        r0, r1, c0, c1 = win
        u, v = cv.local(win, self.cx, self.cy, math.cos(self.angle), math.sin(self.angle))
        across = v if self.rows_along_u else u
        stripes = _tri(across / self.period + self.phase)
        grain = 0.04 * cv.tex_f[r0:r1, c0:c1]
        for (cu, cvv, hw, hh), gain in zip(self.rects, self.gains, strict=True):
            lu, lv = u - cu, v - cvv
            sd = _rect_sd(lu, lv, hw, hh)
            inside = sd < 0.0
            if not inside.any() and not (sd < 0.5).any():
                continue
            cv.label[r0:r1, c0:c1] |= inside
            alpha = _cover(sd)
            zone = _cover(sd + self.margin)  # panels stop a margin inside the fence
            # service roads: lines along v every road_every px of u (and along u, sparser)
            if self.road_every > 0:
                m1 = np.mod(lu + hw, self.road_every)
                d1 = np.minimum(m1, self.road_every - m1)
                m2 = np.mod(lv + hh, 2.0 * self.road_every)
                d2 = np.minimum(m2, 2.0 * self.road_every - m2)
                road = np.clip(self.road_width / 2.0 + 0.5 - np.minimum(d1, d2), 0.0, 1.0)
                road *= min(1.0, self.road_width)
            else:
                road = np.zeros_like(sd)
            p = self.fill * (1.0 + self.amp * stripes + grain) * zone * (1.0 - road)
            ground = (1.0 - road)[None] * self.ground[:, None, None]
            ground = ground + road[None] * self.road[:, None, None]
            spec = p[None] * (self.panel * gain)[:, None, None] + (1.0 - p)[None] * ground
            cv.blend(win, alpha, spec)


# --------------------------------------------------------------------------------------------
# Landscapes
# --------------------------------------------------------------------------------------------
@dataclass
class _Landscape:
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


def _new_landscape(region: str, rng: np.random.Generator, key: int) -> _Landscape:
    return _Landscape(
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


def _background(land: _Landscape, cv: _Canvas) -> None:
    yi, xi, k = cv.yi, cv.xi, land.key
    S = SPECTRA
    img = cv.img
    if land.region == "brazil":
        img[:] = S["dry_grass"][:, None, None]
        soil = _fbm(yi, xi, 192, 3, k + 11)
        _mix(img, np.clip(0.5 + 2.0 * (soil + land.soil_bias), 0.0, 1.0), S["red_soil"])
        shrub = _fbm(yi, xi, 40, 2, k + 12)
        _mix(img, np.clip((shrub - 0.1) * 4.0, 0.0, 1.0) * land.shrub, S["cerrado"])
        river = _fbm(yi, xi, 384, 2, k + 13)
        width = 0.045 + 0.03 * shrub
        _mix(img, np.clip((width - np.abs(river)) / 0.012, 0.0, 1.0), S["gallery"])
    else:
        c, s = math.cos(land.parcel_angle), math.sin(land.parcel_angle)
        x = cv.xc[None, :]
        y = cv.yc[:, None]
        u = x * c + y * s
        v = y * c - x * s
        a = np.floor(u / land.parcel_u)
        shift = _uniform(a, np.zeros_like(a), k + 21) * land.parcel_v
        vv = v + shift
        b = np.floor(vv / land.parcel_v)
        r = _uniform(a, b, k + 22)
        cls = np.searchsorted(_PARCEL_P, r * _PARCEL_P[-1], side="right")
        cls = np.minimum(cls, len(_PARCELS) - 1)
        img[:] = _PARCEL_TABLE[:, cls]
        gain = 1.0 + 0.24 * (_uniform(a, b, k + 23) - 0.5)
        img *= gain[None]
        # furrows on bare parcels
        bare = (cls == 3) | (cls == 4)
        img *= (1.0 + 0.07 * bare * _tri(u / 3.7))[None]
        # tracks and hedges on some parcel borders
        du = u - a * land.parcel_u
        du = np.minimum(du, land.parcel_u - du)
        dv = vv - b * land.parcel_v
        dv = np.minimum(dv, land.parcel_v - dv)
        edge = np.clip(0.7 - np.minimum(du, dv), 0.0, 1.0)
        kind = _uniform(a, b, k + 24)
        _mix(img, edge * (kind < 0.3), S["forest"])
        _mix(img, edge * ((kind >= 0.3) & (kind < 0.55)), S["track"])
        forest = _fbm(yi, xi, 160, 3, k + 25)
        _mix(img, np.clip((forest - land.forest_thr) * 6.0, 0.0, 1.0), S["forest"])
    # towns: a rotated grid of ~20 m cells of roofs, streets and gardens
    town = _fbm(yi, xi, 256, 2, k + 31)
    wt = np.clip((town - land.town_thr) * 8.0, 0.0, 1.0)
    if wt.any():
        c, s = math.cos(land.town_angle), math.sin(land.town_angle)
        x = cv.xc[None, :]
        y = cv.yc[:, None]
        tu = np.floor((x * c + y * s) / 2.2)
        tv = np.floor((y * c - x * s) / 2.2)
        r = _uniform(tu, tv, k + 32)
        probs = _URBAN_P[land.region]
        cls = np.minimum(np.searchsorted(probs, r, side="right"), len(_URBAN) - 1)
        urban = _URBAN_TABLE[:, cls] * (0.85 + 0.3 * _uniform(tu, tv, k + 33))[None]
        _mix(img, wt, urban)
    img *= (1.0 + 0.06 * cv.tex_m + 0.035 * cv.tex_f)[None]


def render_window(
    land: _Landscape, y0: int, x0: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render world pixels [y0, y0+h) x [x0, x0+w) of a landscape.

    Returns:
        image float32 ``[4, h, w]`` (reflectance x 10000, nodata -9999), label bool ``[h, w]``
        and valid bool ``[h, w]``.
    """
    cv = _Canvas(y0 - _PAD, x0 - _PAD, h + 2 * _PAD, w + 2 * _PAD, land.key)
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
        noise = _normal(yi, xi, land.key + 101 + b)
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


# --------------------------------------------------------------------------------------------
# Populating landscapes with objects
# --------------------------------------------------------------------------------------------
def _poisson(rng: np.random.Generator, per_ref: float, area: float) -> int:
    return int(rng.poisson(per_ref * area / _REF_AREA))


def _jitter(rng: np.random.Generator, spec: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return spec * rng.uniform(lo, hi) * rng.uniform(0.94, 1.06, size=4)


def _make_plant(rng: np.random.Generator, region: str, cx: float, cy: float, area: float) -> _Plant:
    S = SPECTRA
    aspect = rng.uniform(1.0, 3.0)
    angle = float(rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.35))
    if rng.random() < 0.3 and area > 300:  # L shape: main block plus a side block
        a1 = area * rng.uniform(0.55, 0.8)
        a2 = area - a1
        hw1 = math.sqrt(a1 * aspect) / 2
        hh1 = a1 / (4 * hw1)
        hh2 = rng.uniform(0.5, 1.0) * hh1
        hw2 = a2 / (4 * hh2)
        side = rng.choice([-1.0, 1.0])
        rects = ((0.0, 0.0, hw1, hh1), (side * (hw1 - hw2), hh1 + hh2, hw2, hh2))
    else:
        hw = math.sqrt(area * aspect) / 2
        rects = ((0.0, 0.0, hw, area / (4 * hw)),)
    panel = _jitter(rng, S["panel"], 0.8, 1.25)
    if region == "brazil":
        g = rng.uniform(0.0, 0.45)
        ground = S["pv_ground_br"] * (1 - g) + S["dry_grass"] * g
        road = S["dirt_road"]
    else:
        g = rng.beta(1.2, 1.5)
        ground = S["grass"] * (1 - g) + S["gravel"] * g
        road = S["gravel"]
    small = area < 600
    return _Plant(
        cx=cx,
        cy=cy,
        angle=angle,
        rects=rects,
        panel=panel,
        ground=_jitter(rng, ground, 0.9, 1.1),
        road=_jitter(rng, road, 0.9, 1.1),
        fill=float(rng.uniform(0.38, 0.62)),
        period=float(rng.uniform(2.6, 4.2)),
        amp=float(rng.uniform(0.18, 0.32)),
        phase=float(rng.random()),
        road_every=0.0 if small else float(rng.uniform(12, 30)),
        road_width=float(rng.uniform(0.5, 1.2)),
        margin=float(rng.uniform(0.3, 1.2)),
        rows_along_u=bool(rng.random() < 0.8),
        gains=tuple(float(rng.uniform(0.92, 1.08)) for _ in rects),
    )


def _plant_area(rng: np.random.Generator, max_area: float) -> float:
    hi = max(150.0, min(6000.0, max_area))
    return float(math.exp(rng.uniform(math.log(100.0), math.log(hi))))


def _mean_plant_area(max_area: float) -> float:
    hi = max(150.0, min(6000.0, max_area))
    return (hi - 100.0) / math.log(hi / 100.0)


def _populate(
    land: _Landscape,
    rng: np.random.Generator,
    x0: float,
    y0: float,
    w: float,
    h: float,
    n_plants: int,
    max_plant_area: float,
) -> None:
    """Add look-alikes, roads, plants and shadows inside the window (x0, y0, w, h)."""
    S = SPECTRA
    region = land.region
    area = w * h
    objs = land.objects

    def pos(margin: float = 0.0) -> tuple[float, float]:
        return (
            float(x0 - margin + rng.random() * (w + 2 * margin)),
            float(y0 - margin + rng.random() * (h + 2 * margin)),
        )

    def okey() -> int:
        return int(rng.integers(0, 2**62))

    # region-specific land cover objects
    if region == "brazil":
        for _ in range(_poisson(rng, 0.9, area)):
            cx, cy = pos(40)
            r = rng.uniform(15, 45)
            a, b = (S["pivot_crop"], S["bare_field"])
            s1 = a if rng.random() < 0.6 else b
            s2 = s1 if rng.random() < 0.7 else (b if s1 is a else a)
            objs.append(
                _Pivot(cx, cy, r, _jitter(rng, s1, 0.85, 1.15), _jitter(rng, s2, 0.85, 1.15))
            )
        for _ in range(_poisson(rng, 1.0, area)):  # burned areas, patchy
            cx, cy = pos(60)
            a = rng.uniform(12, 70)
            objs.append(
                _Blob(
                    cx,
                    cy,
                    a,
                    a * rng.uniform(0.4, 1.0),
                    rng.uniform(0, math.pi),
                    _jitter(rng, S["burned"], 0.75, 1.4),
                    okey(),
                    0.35,
                    mix_spec=_jitter(rng, S["dry_grass"], 0.6, 0.8),
                )
            )
        for _ in range(_poisson(rng, 0.3, area)):  # sand / quarry
            cx, cy = pos()
            objs.append(
                _Rect(
                    cx,
                    cy,
                    rng.uniform(4, 20),
                    rng.uniform(4, 20),
                    rng.uniform(0, math.pi),
                    _jitter(rng, S["sand"], 0.85, 1.1),
                )
            )
    else:
        for _ in range(_poisson(rng, 0.35, area)):  # greenhouses: bright striped halls
            cx, cy = pos()
            objs.append(
                _Rect(
                    cx,
                    cy,
                    rng.uniform(3, 14),
                    rng.uniform(3, 12),
                    rng.uniform(0, math.pi),
                    _jitter(rng, S["greenhouse"], 0.8, 1.15),
                    stripes=float(rng.uniform(2.5, 4.0)),
                )
            )
    # water: natural lakes and rectangular ponds / reservoirs
    for _ in range(_poisson(rng, 0.9, area)):
        water = S[
            str(rng.choice(["clear_water", "turbid_water", "dark_water"], p=[0.4, 0.35, 0.25]))
        ]
        cx, cy = pos(20)
        if rng.random() < 0.35:
            objs.append(
                _Rect(
                    cx,
                    cy,
                    rng.uniform(4, 35),
                    rng.uniform(3, 25),
                    rng.uniform(0, math.pi),
                    _jitter(rng, water, 0.8, 1.2),
                )
            )
        else:
            a = rng.uniform(5, 40)
            objs.append(
                _Blob(
                    cx,
                    cy,
                    a,
                    a * rng.uniform(0.3, 1.0),
                    rng.uniform(0, math.pi),
                    _jitter(rng, water, 0.8, 1.2),
                    okey(),
                    0.3,
                )
            )
    # dark and grey rectangles: asphalt lots and industrial halls
    for _ in range(_poisson(rng, 2.0, area)):
        cx, cy = pos()
        hw, hh = rng.uniform(2, 28), rng.uniform(2, 18)
        angle = float(rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.4))
        kind = rng.random()
        if kind < 0.45:
            spec = _jitter(rng, S["asphalt"], 0.6, 1.3)
        elif kind < 0.85:
            spec = _jitter(rng, S["dark_roof"], 0.7, 1.8)
        else:
            spec = _jitter(rng, S["bright_roof"], 0.8, 1.1)
        objs.append(_Rect(cx, cy, hw, hh, angle, spec))
        if rng.random() < 0.4:  # a second hall beside it
            c, s = math.cos(angle), math.sin(angle)
            off = hh * 2 + rng.uniform(1.0, 3.0)
            hh2 = rng.uniform(0.5, 1.2) * hh
            objs.append(
                _Rect(
                    cx - s * (off - hh + hh2),
                    cy + c * (off - hh + hh2),
                    hw * rng.uniform(0.6, 1.0),
                    hh2,
                    angle,
                    spec * rng.uniform(0.85, 1.15, size=4),
                )
            )
    # yards, car lots and building sites: dark material mixed with the ground, no rows
    for _ in range(_poisson(rng, 1.3, area)):
        cx, cy = pos()
        base = S["dark_roof"] if rng.random() < 0.5 else S["asphalt"]
        objs.append(
            _Rect(
                cx,
                cy,
                rng.uniform(3, 22),
                rng.uniform(3, 16),
                rng.uniform(0, math.pi),
                _jitter(rng, base, 0.7, 1.3),
                cover=float(rng.uniform(0.35, 0.75)),
            )
        )
    if region == "temperate":  # vineyards and orchards: rows of plants over soil
        for _ in range(_poisson(rng, 0.6, area)):
            cx, cy = pos()
            g = rng.uniform(0.3, 0.7)
            spec = S["dense_crop"] * g + S["bare_soil"] * (1 - g)
            objs.append(
                _Rect(
                    cx,
                    cy,
                    rng.uniform(4, 25),
                    rng.uniform(4, 18),
                    rng.uniform(0, math.pi),
                    _jitter(rng, spec, 0.85, 1.15),
                    stripes=float(rng.uniform(2.5, 4.5)),
                )
            )
    # roads crossing the window
    for _ in range(_poisson(rng, 2.5, area)):
        cx, cy = pos()
        ang = rng.uniform(0, math.pi)
        length = rng.uniform(0.3, 1.5) * min(max(w, h), 256.0)
        dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
        paved = rng.random() < (0.4 if region == "brazil" else 0.7)
        spec = S["asphalt"] if paved else (S["dirt_road"] if region == "brazil" else S["track"])
        width = rng.uniform(1.5, 3.0) if paved and rng.random() < 0.25 else rng.uniform(0.4, 1.4)
        objs.append(
            _Road(cx - dx, cy - dy, cx + dx, cy + dy, width, _jitter(rng, spec, 0.85, 1.15))
        )
    # PV plants
    for _ in range(n_plants):
        a = _plant_area(rng, max_plant_area)
        cx, cy = pos(-math.sqrt(a) * 0.3)
        land.plants.append(_make_plant(rng, region, cx, cy, a))
    # cloud shadows
    for _ in range(_poisson(rng, 0.45, area)):
        cx, cy = pos(40)
        a = rng.uniform(10, 50)
        land.shadows.append(
            _Blob(
                cx,
                cy,
                a,
                a * rng.uniform(0.4, 1.0),
                rng.uniform(0, math.pi),
                S["panel"],
                okey(),
                0.3,
                shade=float(rng.uniform(0.35, 0.6)),
            )
        )


def _corner_cut(
    rng: np.random.Generator, x0: float, y0: float, w: float, h: float, share: float
) -> tuple[float, float, float]:
    """A half-plane (a, b, c) cutting roughly ``share`` of the window off one corner."""
    corner = int(rng.integers(4))
    sx = 1.0 if corner in (1, 2) else -1.0  # corner on the right (+x) or left
    sy = 1.0 if corner in (2, 3) else -1.0  # corner at the bottom (+y) or top
    # triangle with legs lx, ly at the corner has area lx*ly/2
    ratio = rng.uniform(0.5, 2.0)
    lx = math.sqrt(2 * share * w * h * ratio)
    ly = 2 * share * w * h / lx
    lx, ly = min(lx, 2 * w), min(ly, 2 * h)
    cxp = x0 + (w if sx > 0 else 0.0)
    cyp = y0 + (h if sy > 0 else 0.0)
    # line through (cxp - sx*lx, cyp) and (cxp, cyp - sy*ly); cut side contains the corner
    a, b = sx / lx, sy / ly
    c = a * cxp + b * cyp - 1.0
    return (a, b, c)


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneSummary:
    """What :func:`generate_scene` wrote."""

    image: Path
    mask: Path
    region: str
    size: int
    plants: int
    pv_fraction: float  # PV share of valid pixels
    nodata_fraction: float
    crs: str


def _scene_landscape(size: int, seed: int, region: str) -> tuple[_Landscape, Affine]:
    rng = np.random.default_rng([seed, 7, REGIONS.index(region)])
    land = _new_landscape(region, rng, _key("scene", seed, region))
    area = float(size * size)
    max_area = 0.12 * area
    mean = _mean_plant_area(max_area)
    n_plants = int(rng.poisson(_PV_TARGET * area / mean))
    _populate(land, rng, 0.0, 0.0, float(size), float(size), n_plants, max_area)
    land.cuts.append(_corner_cut(rng, 0.0, 0.0, float(size), float(size), rng.uniform(0.04, 0.12)))
    if region == "brazil":
        east = 150_000 + 10 * int(rng.integers(0, 20_000)) + 400_000
        north = 8_200_000 - 10 * int(rng.integers(0, 20_000))
    else:
        east = 420_000 + 10 * int(rng.integers(0, 20_000))
        north = 5_400_000 - 10 * int(rng.integers(0, 10_000))
    transform = Affine(PIXEL_SIZE, 0.0, float(east), 0.0, -PIXEL_SIZE, float(north))
    return land, transform


def generate_scene(
    path_image: str | Path,
    path_mask: str | Path,
    size: int,
    seed: int,
    *,
    region: str = "brazil",
    block_size: int = 512,
) -> SceneSummary:
    """Write one ``size`` x ``size`` scene and its mask, block by block (bounded memory).

    Args:
        path_image: output image GeoTIFF (4 bands float32, nodata -9999).
        path_mask: output mask GeoTIFF (uint8 0/1, nodata 255), same grid.
        size: width and height in pixels (10 m).
        seed: random seed; the same seed and region give the same pixels for any block size.
        region: ``"brazil"`` (dry season, EPSG:31983) or ``"temperate"`` (EPSG:32633).
        block_size: rows and columns rendered at once.

    Returns:
        A :class:`SceneSummary`.
    """
    if region not in REGIONS:
        raise ConfigError(f"unknown region {region!r} (choose from {', '.join(REGIONS)})")
    if size < 16:
        raise ConfigError(f"scene size must be at least 16 px, got {size}")
    if block_size < 16:
        raise ConfigError(f"block size must be at least 16 px, got {block_size}")
    land, transform = _scene_landscape(size, seed, region)
    crs = CRS.from_user_input(_CRS[region])
    img_profile = geotiff_profile(
        height=size,
        width=size,
        count=4,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=DEFAULT_NODATA,
    )
    mask_profile = geotiff_profile(
        height=size,
        width=size,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=MASK_NODATA,
    )
    pv = valid_n = 0
    with atomic_output(path_image) as tmp_img, atomic_output(path_mask) as tmp_mask:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with (
                rasterio.open(tmp_img, "w", **img_profile) as dst_img,
                rasterio.open(tmp_mask, "w", **mask_profile) as dst_mask,
            ):
                for i, name in enumerate(BAND_NAMES, start=1):
                    dst_img.set_band_description(i, name)
                dst_mask.set_band_description(1, "PV")
                for by in range(0, size, block_size):
                    for bx in range(0, size, block_size):
                        h = min(block_size, size - by)
                        w = min(block_size, size - bx)
                        img, label, valid = render_window(land, by, bx, h, w)
                        mask = np.where(valid, label.astype(np.uint8), np.uint8(MASK_NODATA))
                        win = Window(bx, by, w, h)
                        dst_img.write(img, window=win)
                        dst_mask.write(mask[None], window=win)
                        pv += int(label.sum())
                        valid_n += int(valid.sum())
    return SceneSummary(
        image=Path(path_image),
        mask=Path(path_mask),
        region=region,
        size=size,
        plants=len(land.plants),
        pv_fraction=pv / max(1, valid_n),
        nodata_fraction=1.0 - valid_n / (size * size),
        crs=_CRS[region],
    )


# --------------------------------------------------------------------------------------------
# Chips
# --------------------------------------------------------------------------------------------
@dataclass
class SynthSummary:
    """What :func:`generate_dataset` wrote."""

    out: Path
    chips: dict[str, int]
    sites: dict[str, int]
    chip_size: int
    pv_fraction: float  # PV share of labelled (valid) chip pixels
    chips_without_pv: int
    nodata_fraction: float
    scenes: list[SceneSummary]
    seconds: float

    def format(self) -> str:
        """Human-readable multi-line summary."""
        total = sum(self.chips.values())
        lines = [f"synthetic dataset written to {self.out}"]
        if total:
            per = ", ".join(f"{s} {self.chips[s]} ({self.sites[s]} sites)" for s in SPLITS)
            lines.append(f"  chips: {total} of {self.chip_size} px: {per}")
            lines.append(
                f"  PV pixels {100 * self.pv_fraction:.2f}% of labelled pixels; "
                f"{self.chips_without_pv} chips without PV; "
                f"nodata {100 * self.nodata_fraction:.2f}% of pixels"
            )
            lines.append(f"  sites: {self.out / 'sites.csv'}")
        for s in self.scenes:
            lines.append(
                f"  scene {s.image} ({s.size} x {s.size} px, {s.region}, {s.crs}, "
                f"{s.plants} plants, PV {100 * s.pv_fraction:.2f}%), mask {s.mask.name}"
            )
        lines.append(f"  done in {self.seconds:.1f} s")
        return "\n".join(lines)


@dataclass(frozen=True)
class _ChipPlan:
    split: str
    n: int
    site: int
    index_in_site: int


def _plan_chips(chips: int, rng: np.random.Generator) -> tuple[list[_ChipPlan], dict[int, str]]:
    """Assign chips to splits (~70/15/15) and sites (about 6 chips each, never across splits)."""
    n_val = max(1, round(0.15 * chips))
    n_test = max(1, round(0.15 * chips))
    counts = {"train": chips - n_val - n_test, "val": n_val, "test": n_test}
    plans: list[_ChipPlan] = []
    site_split: dict[int, str] = {}
    site = 0
    for split in SPLITS:
        n_chips = counts[split]
        n_sites = max(1, math.ceil(n_chips / 6))
        order = rng.permutation(n_chips)
        per_site = [0] * n_sites
        for i in range(n_chips):
            s = int(order[i]) % n_sites
            plans.append(_ChipPlan(split, i + 1, site + s, per_site[s]))
            per_site[s] += 1
        for s in range(n_sites):
            site_split[site + s] = split
        site += n_sites
    return plans, site_split


def _site_meta(seed: int, site: int) -> tuple[str, str, int, int, list[str]]:
    """Region, CRS, origin easting/northing (m) and candidate dates of a synthetic site."""
    rng = np.random.default_rng([seed, 3, site])
    region = REGIONS[int(rng.integers(2))] if site >= 2 else REGIONS[(site + seed) % 2]
    if region == "brazil":
        east = 170_000 + 20_000 * int(rng.integers(0, 32)) + 10 * int(rng.integers(0, 500))
        north = 8_350_000 - 25_000 * int(rng.integers(0, 28)) - 10 * int(rng.integers(0, 500))
        start = date(2023, 6, 1)
        span = 110
    else:
        east = 300_000 + 20_000 * int(rng.integers(0, 30)) + 10 * int(rng.integers(0, 500))
        north = 5_420_000 - 25_000 * int(rng.integers(0, 12)) - 10 * int(rng.integers(0, 500))
        start = date(2022, 5, 1)
        span = 120
    offsets = sorted(int(x) for x in rng.choice(span, size=3, replace=False))
    dates = [(start + timedelta(days=o)).isoformat() for o in offsets]
    return region, _CRS[region], east, north, dates


def _chip_arrays(
    seed: int, plan: _ChipPlan, chip_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Affine, str, str, str]:
    """Image, label, valid, transform, CRS, region and date of one chip."""
    region, crs, east, north, dates = _site_meta(seed, plan.site)
    site_rng = np.random.default_rng([seed, 5, plan.site])
    site_key = _key("site", seed, plan.site)
    base = _new_landscape(region, site_rng, site_key)
    rng = np.random.default_rng([seed, 9, plan.site, plan.index_in_site])
    date_i = int(rng.integers(len(dates)))
    land = replace(
        base,
        gain=base.gain * rng.uniform(0.96, 1.04, size=4) * (1.0 + 0.03 * (date_i - 1)),
        objects=[],
        plants=[],
        shadows=[],
        cuts=[],
    )
    step = int(chip_size * 1.25) + 8
    x0 = plan.index_in_site * step
    y0 = (plan.index_in_site % 3) * step // 2
    area = float(chip_size * chip_size)
    max_area = 0.12 * area
    if rng.random() < 0.15:
        n_plants = 0
    else:
        lam = _PV_TARGET * area / _mean_plant_area(max_area) / 0.85
        n_plants = 1 + int(rng.poisson(lam - 1.0)) if lam >= 1.0 else int(rng.random() < lam)
    _populate(
        land, rng, float(x0), float(y0), float(chip_size), float(chip_size), n_plants, max_area
    )
    u = rng.random()
    if u < 0.2:
        land.cuts.append(_corner_cut(rng, x0, y0, chip_size, chip_size, rng.uniform(0.03, 0.3)))
    elif u < 0.25:  # straight tile edge along one side
        depth = chip_size * rng.uniform(0.05, 0.3)
        side = int(rng.integers(4))
        cut = [
            (-1.0, 0.0, -(x0 + depth)),
            (1.0, 0.0, x0 + chip_size - depth),
            (0.0, -1.0, -(y0 + depth)),
            (0.0, 1.0, y0 + chip_size - depth),
        ][side]
        land.cuts.append(cut)
    img, label, valid = render_window(land, y0, x0, chip_size, chip_size)
    transform = Affine(
        PIXEL_SIZE,
        0.0,
        float(east + PIXEL_SIZE * x0),
        0.0,
        -PIXEL_SIZE,
        float(north - PIXEL_SIZE * y0),
    )
    return img, label, valid, transform, crs, region, dates[date_i]


def _site_name(seed: int, site: int) -> str:
    region = _site_meta(seed, site)[0]
    return f"{'br' if region == 'brazil' else 'te'}{site + 1:03d}"


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    existing = [out / s for s in SPLITS if (out / s).exists()] + [
        p for p in (out / "sites.csv", out / "scenes") if p.exists()
    ]
    if existing and not overwrite:
        raise OutputError(
            f"{out}: already holds a dataset ({existing[0].name}); use --overwrite or a new folder"
        )
    if overwrite:
        for s in SPLITS:
            for sub, pattern in (("input", "img(*).tif"), ("labels", "target(*).tif")):
                folder = out / s / sub
                if folder.is_dir():
                    for p in folder.glob(pattern):
                        p.unlink()
        if (out / "sites.csv").exists():
            (out / "sites.csv").unlink()


def generate_dataset(
    out: Path,
    chips: int = 300,
    scenes: int = 2,
    scene_size: int = 1024,
    seed: int = 0,
    chip_size: int = 256,
    *,
    overwrite: bool = False,
    verbose: bool = False,
) -> SynthSummary:
    """Write a synthetic chip dataset (Solar-Plants-Brazil layout) and large scenes.

    Args:
        out: output folder.
        chips: number of labelled chips (0, or at least 3: one per split).
        scenes: number of large scenes under ``out/scenes`` (alternately Brazil, temperate).
        scene_size: scene width and height in pixels.
        seed: random seed; the same arguments give byte-identical pixels.
        chip_size: chip width and height in pixels.
        overwrite: replace a dataset already in ``out`` (else raise :class:`OutputError`).
        verbose: print progress.

    Returns:
        A :class:`SynthSummary`.
    """
    out = Path(out)
    if chips < 0 or 0 < chips < 3:
        raise ConfigError(f"--chips must be 0 or at least 3 (one per split), got {chips}")
    if scenes < 0:
        raise ConfigError(f"--scenes must be >= 0, got {scenes}")
    if chip_size < 32:
        raise ConfigError(f"--chip-size must be at least 32 px, got {chip_size}")
    if scenes and scene_size < 32:
        raise ConfigError(f"--scene-size must be at least 32 px, got {scene_size}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    _check_out(out, overwrite)
    t0 = time.perf_counter()
    plans, site_split = _plan_chips(chips, np.random.default_rng([seed, 1])) if chips else ([], {})
    counts = dict.fromkeys(SPLITS, 0)
    pv = valid_n = total_n = 0
    no_pv = 0
    rows: list[tuple[str, int, str, str]] = []
    for i, plan in enumerate(plans):
        img, label, valid, transform, crs, _, day = _chip_arrays(seed, plan, chip_size)
        target = np.where(valid, label.astype(np.float32), np.float32(DEFAULT_NODATA))
        base = out / plan.split
        write_raster(
            base / "input" / f"img({plan.n}).tif",
            img,
            crs=crs,
            transform=transform,
            nodata=DEFAULT_NODATA,
            descriptions=BAND_NAMES,
        )
        write_raster(
            base / "labels" / f"target({plan.n}).tif",
            target[None],
            crs=crs,
            transform=transform,
            nodata=DEFAULT_NODATA,
            descriptions=("PV",),
        )
        counts[plan.split] += 1
        n_pv = int(label.sum())
        pv += n_pv
        no_pv += n_pv == 0
        valid_n += int(valid.sum())
        total_n += valid.size
        rows.append((plan.split, plan.n, _site_name(seed, plan.site), day))
        if verbose and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(plans)} chips", flush=True)
    if rows:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["split", "n", "site", "date"])
        writer.writerows(sorted(rows, key=lambda r: (SPLITS.index(r[0]), r[1])))
        with atomic_output(out / "sites.csv") as tmp:
            tmp.write_text(buf.getvalue())
    scene_summaries: list[SceneSummary] = []
    for k in range(scenes):
        region = REGIONS[k % 2]
        name = f"scene{k + 1:02d}_{region}"
        s = generate_scene(
            out / "scenes" / f"{name}.tif",
            out / "scenes" / f"{name}_mask.tif",
            scene_size,
            seed * 1000 + k,
            region=region,
        )
        scene_summaries.append(s)
        if verbose:
            print(f"  scene {k + 1}/{scenes} written: {s.image}", flush=True)
    sites = {s: sum(1 for v in site_split.values() if v == s) for s in SPLITS}
    return SynthSummary(
        out=out,
        chips=counts,
        sites=sites,
        chip_size=chip_size,
        pv_fraction=pv / max(1, valid_n),
        chips_without_pv=no_pv,
        nodata_fraction=1.0 - valid_n / max(1, total_n),
        scenes=scene_summaries,
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
