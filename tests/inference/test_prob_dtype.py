"""``PredictOptions.prob_dtype="uint8"``: probabilities stored in a quarter of the bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from pvdetect.inference.options import PredictOptions
from pvdetect.inference.predict import predict_scene
from pvdetect.mapping.pieces import read_pieces
from pvdetect.model.bundle import load_bundle

pytest.importorskip("onnxruntime")


def test_uint8_probabilities_read_back_as_probabilities(tmp_path: Path) -> None:
    from tests.mapping.helpers import pixel_bundle, write_scenes

    scenes = write_scenes(tmp_path / "scenes")
    scene = next(p for p in scenes if p.stem.startswith("B"))  # has a nodata corner
    bundle = load_bundle(pixel_bundle(tmp_path / "bundle"))
    runs = {}
    for dtype in ("float32", "uint8"):
        opts = PredictOptions(prob_dtype=dtype, overlay=False)
        runs[dtype] = predict_scene(bundle, scene, tmp_path / dtype, opts)
    with rasterio.open(runs["float32"].prob_path) as f, rasterio.open(runs["uint8"].prob_path) as q:
        assert q.dtypes[0] == "uint8" and q.nodata == 255 and f.dtypes[0] == "float32"
        assert q.scales[0] == pytest.approx(1 / 250) and q.offsets[0] == 0
        pf, pq = f.read(1), q.read(1)
        assert np.array_equal(pf == -9999, pq == 255) and (pq == 255).any()
        ok = pq != 255
        assert np.abs(pq[ok] * q.scales[0] - pf[ok]).max() <= 0.5 / 250 + 1e-6
        # overview levels: the mean of the stored values, rounded
        assert q.overviews(1) == f.overviews(1) == [2]
        level = q.read(1, out_shape=(pq.shape[0] // 2, pq.shape[1] // 2))
        stored = pq.astype(np.float64)
        blocks = stored.reshape(level.shape[0], 2, level.shape[1], 2)
        valid = (pq != 255).reshape(blocks.shape)
        full = valid.all(axis=(1, 3))
        mean = np.rint(blocks.sum(axis=(1, 3)) / 4)
        assert np.array_equal(level[full], mean[full])
    assert runs["uint8"].prob_path.stat().st_size < runs["float32"].prob_path.stat().st_size
    # plant statistics come from the float probabilities in both cases
    a, b = read_pieces(runs["float32"].plants_path), read_pieces(runs["uint8"].plants_path)
    assert len(a) == len(b) > 0
    for ca, cb in zip(a.columns, b.columns, strict=True):
        np.testing.assert_array_equal(ca, cb)
