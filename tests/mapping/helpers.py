"""A region of 4 overlapping scenes in two UTM zones, painted plants and a pixel-wise bundle.

The scenes lie at 15.5 S on both sides of the 48 W meridian (UTM zones 22 and 23): A and B in
EPSG:32722 (B reaches 0.5 km into zone 23), C and D in EPSG:32723. Background pixels have a
bright NIR band; plants are rectangles of dark NIR. The bundle is an ONNX graph that turns the
normalised NIR band into logits pixel by pixel, so the mask is exactly where plants are painted
(NIR < 1600 is PV) and probabilities vary with the NIR value inside a plant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

STATS = {
    "mean": [900.0, 850.0, 700.0, 2500.0],
    "std": [500.0, 450.0, 400.0, 900.0],
    "p2": [100.0] * 4,
    "p98": [4000.0] * 4,
}
#: logits = GAIN * (CUT - normalised NIR): PV where NIR < 2500 - 900 = 1600
GAIN, CUT = 6.0, -1.0
BACKGROUND = (800.0, 750.0, 600.0, 3000.0)
NODATA = -9999.0


@dataclass(frozen=True)
class Scene:
    name: str  # file stem
    epsg: int
    x0: float
    y1: float  # top
    width: int
    height: int
    date_tag: str | None = None


# A, B: zone 22; C, D: zone 23 (file-name dates for A and B, tags for C and D)
SCENES = (
    Scene("A_20230110", 32722, 816_640, 8_284_160, 384, 320),
    Scene("B_20230301", 32722, 819_200, 8_283_520, 320, 320),
    Scene("C", 32723, 178_560, 8_284_160, 320, 320, "2023-02-01"),
    Scene("D", 32723, 180_480, 8_282_880, 320, 320, "2023-02-15"),
)

#: painted plants: name -> (scenes that hold it, x0, y0, x1, y1 in the scenes' CRS)
PLANTS = {
    "P1": (("A_20230110",), 817_000, 8_283_700, 817_300, 8_283_900),  # inside one tile
    "P2": (("A_20230110",), 817_700, 8_282_000, 818_200, 8_282_500),  # on a corner of 4 tiles
    "P3": (("A_20230110", "B_20230301"), 819_600, 8_282_600, 819_900, 8_282_900),  # A and B
    "P8": (("A_20230110",), 820_000, 8_281_500, 820_200, 8_281_700),  # hidden by newer B
    "P9": (("A_20230110",), 819_300, 8_283_350, 819_500, 8_283_500),  # where B is nodata
    "P4": (("B_20230301",), 821_600, 8_281_300, 822_100, 8_281_600),  # across 48 W
    "P5": (("C",), 179_000, 8_283_600, 179_400, 8_283_900),  # across a tile border
    "P6": (("C", "D"), 181_000, 8_281_500, 181_300, 8_281_800),  # in C and D
    "P7": (("C",), 180_000, 8_282_700, 180_030, 8_282_730),  # 900 m2: below the minimum
    "P10": (("D",), 182_500, 8_280_800, 182_800, 8_281_100),  # across a tile border
}
#: a hole of 3 x 3 pixels in P2 (filled: smaller than the largest hole filled)
HOLE = (817_800, 8_282_400, 817_830, 8_282_430)
#: B's nodata corner (A shows through)
B_NODATA = (819_200, 8_283_320, 819_600, 8_283_520)
#: the plants the map must find once each
EXPECTED = ("P1", "P2", "P3", "P9", "P4", "P5", "P6", "P10")


def _box_px(scene: Scene, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
    c0, c1 = round((x0 - scene.x0) / 10), round((x1 - scene.x0) / 10)
    r0, r1 = round((scene.y1 - y1) / 10), round((scene.y1 - y0) / 10)
    return slice(max(r0, 0), max(r1, 0)), slice(max(c0, 0), max(c1, 0))


def write_scenes(root: Path) -> list[Path]:
    """Write the 4 scenes into ``root``; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in SCENES:
        img = np.empty((4, s.height, s.width), np.float32)
        rng = np.random.default_rng(len(s.name))
        for b, v in enumerate(BACKGROUND):
            img[b] = v + rng.uniform(-50, 50, (s.height, s.width))
        for name, (where, *bounds) in PLANTS.items():
            if s.name not in where:
                continue
            rows, cols = _box_px(s, *bounds)
            h, w = rows.stop - rows.start, cols.stop - cols.start
            # NIR from 700 to 1300 across the plant (probabilities 0.9 .. 0.999), the same
            # at the same place in every scene that holds the plant
            ramp = np.linspace(700, 1300, max(w, 1), dtype=np.float32)[None, :]
            img[3, rows, cols] = np.broadcast_to(ramp, (h, w))
            if name == "P2":
                hr, hc = _box_px(s, *HOLE)
                img[3, hr, hc] = BACKGROUND[3]
        if s.name.startswith("B"):
            rows, cols = _box_px(s, *B_NODATA)
            img[:, rows, cols] = NODATA
        path = root / f"{s.name}.tif"
        with rasterio.open(
            path, "w", driver="GTiff", width=s.width, height=s.height, count=4,
            dtype="float32", crs=f"EPSG:{s.epsg}", nodata=NODATA,
            transform=Affine(10, 0, s.x0, 0, -10, s.y1), tiled=True, blockxsize=128,
            blockysize=128,
        ) as dst:  # fmt: skip
            dst.write(img)
            for i, n in enumerate(("Red", "Green", "Blue", "NIR"), start=1):
                dst.set_band_description(i, n)
            if s.date_tag:
                dst.update_tags(ACQUISITION_DATE=s.date_tag)
        paths.append(path)
    return paths


def pixel_bundle(path: Path, tile: int = 128, overlap: int = 16) -> Path:
    """An ONNX bundle whose logits are GAIN * (CUT - normalised NIR), pixel by pixel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    inits = [
        const("starts", np.array([3], np.int64)),
        const("ends", np.array([4], np.int64)),
        const("axes", np.array([1], np.int64)),
        const("cut", np.array(CUT, np.float32)),
        const("gain", np.array(GAIN, np.float32)),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["nir"]),
        helper.make_node("Sub", ["cut", "nir"], ["d"]),
        helper.make_node("Mul", ["d", "gain"], ["logits"]),
    ]
    dims = ["batch", 4, "height", "width"]
    graph = helper.make_graph(
        nodes,
        "pixelwise",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["batch", 1, "height", "width"]
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"))
    meta = {
        "format_version": 1, "arch": "unet", "encoder": "resnet18", "in_channels": 4,
        "band_order": ["Red", "Green", "Blue", "NIR"], "band_stats": STATS, "threshold": 0.5,
        "tile_size": tile, "overlap": overlap, "runtime": "onnx",
    }  # fmt: skip
    (path / "bundle.json").write_text(json.dumps(meta))
    return path
