"""The canvas a window is painted on and the vector objects painted on it.

Objects are described in world pixel coordinates (float, pixel centres at ``i + 0.5``) and
paint themselves with area coverage from signed distances, so an object cut by a window
border paints the same pixels as in any other window. Only :class:`Plant` writes the label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pvdetect.synth.noise import fbm, tri, value_noise

__all__ = ["Blob", "Canvas", "Pivot", "Plant", "Rect", "Road"]


class Canvas:
    """A padded window of the world pixel grid being rendered."""

    def __init__(self, y0: int, x0: int, h: int, w: int, key: int) -> None:
        self.y0, self.x0, self.h, self.w = y0, x0, h, w
        self.yi = np.arange(y0, y0 + h, dtype=np.int64)
        self.xi = np.arange(x0, x0 + w, dtype=np.int64)
        self.yc = self.yi + 0.5
        self.xc = self.xi + 0.5
        self.img = np.zeros((4, h, w))
        self.label = np.zeros((h, w), dtype=bool)
        self.tex_f = value_noise(self.yi, self.xi, 3, key + 1)
        self.tex_m = fbm(self.yi, self.xi, 16, 2, key + 2)

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
class Rect:
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

    def paint(self, cv: Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        u, v = cv.local(win, self.cx, self.cy, math.cos(self.angle), math.sin(self.angle))
        alpha = _cover(_rect_sd(u, v, self.hw, self.hh))
        r0, r1, c0, c1 = win
        tex = 1.0 + 0.05 * cv.tex_f[r0:r1, c0:c1]
        spec = self.spec[:, None, None] * tex[None]
        if self.stripes > 0:
            spec = spec * (1.0 + 0.25 * tri(v / self.stripes))[None]
        if self.cover < 1.0:
            f = np.clip(self.cover * (1.0 + 0.3 * cv.tex_f[r0:r1, c0:c1]), 0.0, 1.0)
            below = cv.img[:, r0:r1, c0:c1]
            spec = below + f[None] * (spec - below)
        cv.blend(win, alpha, spec)


@dataclass(frozen=True)
class Blob:
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

    def paint(self, cv: Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        r0, r1, c0, c1 = win
        u, v = cv.local(win, self.cx, self.cy, math.cos(self.angle), math.sin(self.angle))
        d = np.sqrt((u / self.a) ** 2 + (v / self.b) ** 2)
        cell = max(3, int(min(self.a, self.b) / 1.5))
        d = d + self.wobble * fbm(cv.yi[r0:r1], cv.xi[c0:c1], cell, 2, self.key)
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
class Pivot:
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

    def paint(self, cv: Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        u, v = cv.local(win, self.cx, self.cy, 1.0, 0.0)
        rad = np.sqrt(u * u + v * v)
        alpha = _cover(rad - self.r)
        half = (u > 0)[None]
        spec = np.where(half, self.spec[:, None, None], self.spec2[:, None, None])
        spec = spec * (1.0 + 0.04 * tri(rad / 3.0))[None]
        cv.blend(win, alpha, spec)


@dataclass(frozen=True)
class Road:
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

    def paint(self, cv: Canvas) -> None:
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
class Plant:
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

    def paint(self, cv: Canvas) -> None:
        win = cv.window(self.bbox)
        if win is None:
            return
        r0, r1, c0, c1 = win
        u, v = cv.local(win, self.cx, self.cy, math.cos(self.angle), math.sin(self.angle))
        across = v if self.rows_along_u else u
        stripes = tri(across / self.period + self.phase)
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
