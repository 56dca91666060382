"""Tests of pvdetect.synth.shapes: painted objects and the PV label."""

from __future__ import annotations

import math

import numpy as np

from pvdetect.synth.shapes import Blob, Canvas, Plant, Rect, Road
from pvdetect.synth.spectra import SPECTRA


def _plant(**kw: object) -> Plant:
    args = {
        "cx": 40.0,
        "cy": 30.0,
        "angle": 0.3,
        "rects": ((0.0, 0.0, 20.0, 10.0),),
        "panel": SPECTRA["panel"],
        "ground": SPECTRA["pv_ground_br"],
        "road": SPECTRA["dirt_road"],
        "fill": 0.5,
        "period": 3.0,
        "amp": 0.25,
        "phase": 0.1,
        "road_every": 15.0,
        "road_width": 0.8,
        "margin": 0.5,
        "rows_along_u": True,
        "gains": (1.0,),
    }
    return Plant(**(args | kw))


def _paint(objs: list, y0: int, x0: int, h: int, w: int) -> Canvas:
    cv = Canvas(y0, x0, h, w, key=5)
    cv.img[:] = SPECTRA["dry_grass"][:, None, None]
    for obj in objs:
        obj.paint(cv)
    return cv


def test_plant_label_is_its_footprint() -> None:
    plant = _plant()
    cv = _paint([plant], 0, 0, 64, 80)
    assert plant.area == 800.0
    assert abs(int(cv.label.sum()) - 800) < 30
    inside = cv.img[:, cv.label]
    # panels (grey, low NIR) mixed with ground: NIR well below the dry grass around
    assert inside[3].mean() < 0.8 * SPECTRA["dry_grass"][3]
    l_shape = _plant(rects=((0.0, 0.0, 20.0, 10.0), (10.0, 15.0, 10.0, 5.0)), gains=(1.0, 0.9))
    assert l_shape.area == 1000.0
    assert abs(int(_paint([l_shape], -10, -10, 90, 100).label.sum()) - 1000) < 40


def test_objects_paint_the_same_pixels_in_any_window() -> None:
    objs = [
        Rect(30.0, 20.0, 12.0, 6.0, 0.4, SPECTRA["dark_roof"], stripes=3.0),
        Rect(50.0, 40.0, 8.0, 8.0, 1.0, SPECTRA["asphalt"], cover=0.5),
        Blob(20.0, 45.0, 14.0, 8.0, 0.2, SPECTRA["clear_water"], key=3),
        Blob(45.0, 25.0, 20.0, 12.0, 0.0, SPECTRA["panel"], key=4, shade=0.5),
        Road(0.0, 60.0, 70.0, 5.0, 1.2, SPECTRA["asphalt"]),
        _plant(cx=35.0, cy=35.0),
    ]
    whole = _paint(objs, 0, 0, 70, 70)
    part = _paint(objs, 17, 23, 30, 41)
    assert np.allclose(part.img, whole.img[:, 17:47, 23:64], rtol=0, atol=1e-9)
    assert np.array_equal(part.label, whole.label[17:47, 23:64])
    assert math.isclose(whole.label.mean(), _paint(objs[-1:], 0, 0, 70, 70).label.mean())
