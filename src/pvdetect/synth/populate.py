"""Placing the vector objects of a landscape: look-alikes, roads, PV plants, cloud shadows.

:func:`populate` fills a window of a :class:`~pvdetect.synth.landscape.Landscape` with one
function per object family, each drawing from the same random stream in a fixed order (so
the same seed gives the same objects). Densities are given per 256 x 256 px (2.56 km x
2.56 km) and scaled to the window's area. Dark look-alikes (water, dark roofs, asphalt lots,
burned areas, cloud shadows) overlap PV per pixel, so only shape and texture separate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pvdetect.synth.landscape import Landscape
from pvdetect.synth.shapes import Blob, Pivot, Plant, Rect, Road
from pvdetect.synth.spectra import SPECTRA

__all__ = ["PV_TARGET", "corner_cut", "mean_plant_area", "populate"]

PV_TARGET = 0.03  # wanted share of PV pixels
_REF_AREA = 256 * 256  # object densities are given per 256 x 256 px (2.56 km x 2.56 km)
S = SPECTRA


@dataclass
class _Placer:
    """The random stream and the window (x0, y0, w, h) objects are placed in."""

    rng: np.random.Generator
    x0: float
    y0: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return self.w * self.h

    def count(self, per_ref: float) -> int:
        """A Poisson number of objects for ``per_ref`` objects per reference area."""
        return int(self.rng.poisson(per_ref * self.area / _REF_AREA))

    def pos(self, margin: float = 0.0) -> tuple[float, float]:
        """A uniform position in the window grown by ``margin`` px on every side."""
        rng = self.rng
        return (
            float(self.x0 - margin + rng.random() * (self.w + 2 * margin)),
            float(self.y0 - margin + rng.random() * (self.h + 2 * margin)),
        )

    def key(self) -> int:
        """A fresh noise key for an object."""
        return int(self.rng.integers(0, 2**62))


def _jitter(rng: np.random.Generator, spec: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``spec`` scaled by a brightness in [lo, hi) and a small per-band factor."""
    return spec * rng.uniform(lo, hi) * rng.uniform(0.94, 1.06, size=4)


# ------------------------------------------------------------------ Brazil: pivots, burns, sand
def _pivots(objs: list, p: _Placer) -> None:
    """Centre-pivot circles, green or bare, sometimes half and half."""
    rng = p.rng
    for _ in range(p.count(0.9)):
        cx, cy = p.pos(40)
        r = rng.uniform(15, 45)
        a, b = (S["pivot_crop"], S["bare_field"])
        s1 = a if rng.random() < 0.6 else b
        s2 = s1 if rng.random() < 0.7 else (b if s1 is a else a)
        objs.append(Pivot(cx, cy, r, _jitter(rng, s1, 0.85, 1.15), _jitter(rng, s2, 0.85, 1.15)))


def _burns(objs: list, p: _Placer) -> None:
    """Burned areas, patchy (dry grass mixed in by noise)."""
    rng = p.rng
    for _ in range(p.count(1.0)):
        cx, cy = p.pos(60)
        a = rng.uniform(12, 70)
        objs.append(
            Blob(
                cx,
                cy,
                a,
                a * rng.uniform(0.4, 1.0),
                rng.uniform(0, math.pi),
                _jitter(rng, S["burned"], 0.75, 1.4),
                p.key(),
                0.35,
                mix_spec=_jitter(rng, S["dry_grass"], 0.6, 0.8),
            )
        )


def _sand(objs: list, p: _Placer) -> None:
    """Sand pits and quarries."""
    rng = p.rng
    for _ in range(p.count(0.3)):
        cx, cy = p.pos()
        objs.append(
            Rect(
                cx,
                cy,
                rng.uniform(4, 20),
                rng.uniform(4, 20),
                rng.uniform(0, math.pi),
                _jitter(rng, S["sand"], 0.85, 1.1),
            )
        )


# ----------------------------------------------------------- temperate: greenhouses, vineyards
def _greenhouses(objs: list, p: _Placer) -> None:
    """Greenhouses: bright striped halls."""
    rng = p.rng
    for _ in range(p.count(0.35)):
        cx, cy = p.pos()
        objs.append(
            Rect(
                cx,
                cy,
                rng.uniform(3, 14),
                rng.uniform(3, 12),
                rng.uniform(0, math.pi),
                _jitter(rng, S["greenhouse"], 0.8, 1.15),
                stripes=float(rng.uniform(2.5, 4.0)),
            )
        )


def _vineyards(objs: list, p: _Placer) -> None:
    """Vineyards and orchards: rows of plants over soil (a periodic texture like PV rows)."""
    rng = p.rng
    for _ in range(p.count(0.6)):
        cx, cy = p.pos()
        g = rng.uniform(0.3, 0.7)
        spec = S["dense_crop"] * g + S["bare_soil"] * (1 - g)
        objs.append(
            Rect(
                cx,
                cy,
                rng.uniform(4, 25),
                rng.uniform(4, 18),
                rng.uniform(0, math.pi),
                _jitter(rng, spec, 0.85, 1.15),
                stripes=float(rng.uniform(2.5, 4.5)),
            )
        )


# ------------------------------------------------------------------- both regions: look-alikes
def _water(objs: list, p: _Placer) -> None:
    """Natural lakes (irregular ellipses) and rectangular ponds or reservoirs."""
    rng = p.rng
    for _ in range(p.count(0.9)):
        kind = rng.choice(["clear_water", "turbid_water", "dark_water"], p=[0.4, 0.35, 0.25])
        water = S[str(kind)]
        cx, cy = p.pos(20)
        if rng.random() < 0.35:
            objs.append(
                Rect(
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
                Blob(
                    cx,
                    cy,
                    a,
                    a * rng.uniform(0.3, 1.0),
                    rng.uniform(0, math.pi),
                    _jitter(rng, water, 0.8, 1.2),
                    p.key(),
                    0.3,
                )
            )


def _halls(objs: list, p: _Placer) -> None:
    """Dark and grey rectangles: asphalt lots and industrial halls, some in pairs."""
    rng = p.rng
    for _ in range(p.count(2.0)):
        cx, cy = p.pos()
        hw, hh = rng.uniform(2, 28), rng.uniform(2, 18)
        angle = float(rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.4))
        kind = rng.random()
        if kind < 0.45:
            spec = _jitter(rng, S["asphalt"], 0.6, 1.3)
        elif kind < 0.85:
            spec = _jitter(rng, S["dark_roof"], 0.7, 1.8)
        else:
            spec = _jitter(rng, S["bright_roof"], 0.8, 1.1)
        objs.append(Rect(cx, cy, hw, hh, angle, spec))
        if rng.random() < 0.4:  # a second hall beside it
            c, s = math.cos(angle), math.sin(angle)
            off = hh * 2 + rng.uniform(1.0, 3.0)
            hh2 = rng.uniform(0.5, 1.2) * hh
            objs.append(
                Rect(
                    cx - s * (off - hh + hh2),
                    cy + c * (off - hh + hh2),
                    hw * rng.uniform(0.6, 1.0),
                    hh2,
                    angle,
                    spec * rng.uniform(0.85, 1.15, size=4),
                )
            )


def _yards(objs: list, p: _Placer) -> None:
    """Yards, car lots and building sites: dark material mixed with the ground, no rows."""
    rng = p.rng
    for _ in range(p.count(1.3)):
        cx, cy = p.pos()
        base = S["dark_roof"] if rng.random() < 0.5 else S["asphalt"]
        objs.append(
            Rect(
                cx,
                cy,
                rng.uniform(3, 22),
                rng.uniform(3, 16),
                rng.uniform(0, math.pi),
                _jitter(rng, base, 0.7, 1.3),
                cover=float(rng.uniform(0.35, 0.75)),
            )
        )


def _roads(objs: list, p: _Placer, region: str) -> None:
    """Straight road segments crossing the window, paved or dirt, mostly sub-pixel wide."""
    rng = p.rng
    for _ in range(p.count(2.5)):
        cx, cy = p.pos()
        ang = rng.uniform(0, math.pi)
        length = rng.uniform(0.3, 1.5) * min(max(p.w, p.h), 256.0)
        dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
        paved = rng.random() < (0.4 if region == "brazil" else 0.7)
        spec = S["asphalt"] if paved else (S["dirt_road"] if region == "brazil" else S["track"])
        width = rng.uniform(1.5, 3.0) if paved and rng.random() < 0.25 else rng.uniform(0.4, 1.4)
        objs.append(Road(cx - dx, cy - dy, cx + dx, cy + dy, width, _jitter(rng, spec, 0.85, 1.15)))


def _shadows(shadows: list, p: _Placer) -> None:
    """Cloud shadows: soft-edged blobs that darken whatever lies below, PV included."""
    rng = p.rng
    for _ in range(p.count(0.45)):
        cx, cy = p.pos(40)
        a = rng.uniform(10, 50)
        shadows.append(
            Blob(
                cx,
                cy,
                a,
                a * rng.uniform(0.4, 1.0),
                rng.uniform(0, math.pi),
                S["panel"],
                p.key(),
                0.3,
                shade=float(rng.uniform(0.35, 0.6)),
            )
        )


# ------------------------------------------------------------------------------------ PV plants
def _plant_area(rng: np.random.Generator, max_area: float) -> float:
    """A plant area (px) log-uniform between 100 px (1 ha) and ``max_area`` (6000 px at most)."""
    hi = max(150.0, min(6000.0, max_area))
    return float(math.exp(rng.uniform(math.log(100.0), math.log(hi))))


def mean_plant_area(max_area: float) -> float:
    """The mean of the plant area distribution of :func:`_plant_area`."""
    hi = max(150.0, min(6000.0, max_area))
    return (hi - 100.0) / math.log(hi / 100.0)


def _plant_rects(
    rng: np.random.Generator, area: float, aspect: float
) -> tuple[tuple[float, float, float, float], ...]:
    """One block, or (30 % of larger plants) an L shape: main block plus a side block."""
    if rng.random() < 0.3 and area > 300:
        a1 = area * rng.uniform(0.55, 0.8)
        a2 = area - a1
        hw1 = math.sqrt(a1 * aspect) / 2
        hh1 = a1 / (4 * hw1)
        hh2 = rng.uniform(0.5, 1.0) * hh1
        hw2 = a2 / (4 * hh2)
        side = rng.choice([-1.0, 1.0])
        return ((0.0, 0.0, hw1, hh1), (side * (hw1 - hw2), hh1 + hh2, hw2, hh2))
    hw = math.sqrt(area * aspect) / 2
    return ((0.0, 0.0, hw, area / (4 * hw)),)


def _make_plant(rng: np.random.Generator, region: str, cx: float, cy: float, area: float) -> Plant:
    """A PV plant of ``area`` px centred at (cx, cy), with the ground of its region."""
    aspect = rng.uniform(1.0, 3.0)
    angle = float(rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.35))
    rects = _plant_rects(rng, area, aspect)
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
    return Plant(
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


def _plants(plants: list, p: _Placer, region: str, n: int, max_area: float) -> None:
    """``n`` PV plants, mostly inside the window."""
    for _ in range(n):
        a = _plant_area(p.rng, max_area)
        cx, cy = p.pos(-math.sqrt(a) * 0.3)
        plants.append(_make_plant(p.rng, region, cx, cy, a))


# ------------------------------------------------------------------------------------ together
def populate(
    land: Landscape,
    rng: np.random.Generator,
    x0: float,
    y0: float,
    w: float,
    h: float,
    n_plants: int,
    max_plant_area: float,
) -> None:
    """Add look-alikes, roads, ``n_plants`` PV plants and shadows inside the window (x0, y0, w, h).

    The families are drawn in a fixed order from ``rng``; changing the order changes every
    dataset written with a given seed.
    """
    p = _Placer(rng, x0, y0, w, h)
    objs = land.objects
    if land.region == "brazil":
        _pivots(objs, p)
        _burns(objs, p)
        _sand(objs, p)
    else:
        _greenhouses(objs, p)
    _water(objs, p)
    _halls(objs, p)
    _yards(objs, p)
    if land.region == "temperate":
        _vineyards(objs, p)
    _roads(objs, p, land.region)
    _plants(land.plants, p, land.region, n_plants, max_plant_area)
    _shadows(land.shadows, p)


def corner_cut(
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
