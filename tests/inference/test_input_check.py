"""Tests of pvdetect.inference.input_check: sampled values against the training statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from pvdetect.data.raster import write_raster
from pvdetect.inference.input_check import GRID, WINDOW, compare, sample_scene
from pvdetect.inference.options import PredictOptions
from pvdetect.inference.tiling import plan_scene

NAMES = ["Red", "Green", "Blue", "NIR"]
LOW = np.array([100.0, 300.0, 80.0, 1200.0])
HIGH = np.array([1800.0, 1500.0, 1200.0, 4500.0])


def _values(n: int = 20000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(LOW[:, None], HIGH[:, None], (4, n)).astype(np.float32)


def _stats(x: np.ndarray) -> dict[str, list[float]]:
    p2, p98 = np.percentile(x, [2, 98], axis=1)
    return {"mean": x.mean(1).tolist(), "std": x.std(1).tolist(), "p2": p2.tolist(),
            "p98": p98.tolist()}  # fmt: skip


@pytest.fixture(scope="module")
def train() -> dict[str, list[float]]:
    return _stats(_values(seed=1))


def test_same_data_passes(train: dict) -> None:
    check = compare(_values(), train, NAMES)
    assert check.ok and check.summary == "ok" and not check.message


def test_offset_of_1000(train: dict) -> None:
    check = compare(_values() + 1000, train, NAMES)
    assert not check.ok
    assert "an offset of about +1000" in check.cause and "--offset -1000" in check.cause
    assert check.bands[:3] == ["Red", "Green", "Blue"]  # NIR's spread hides +1000 in it
    assert "\n" not in check.message and check.summary.startswith("warning: an offset")


def test_other_offsets_and_scales(train: dict) -> None:
    assert "offset of about -1000" in compare(_values() - 1000, train, NAMES).cause
    assert "offset of about +3000" in compare(_values() + 3000, train, NAMES).cause
    refl = compare(_values() / 10000, train, NAMES)
    assert "about 10000x" in refl.cause and "--scale 10000" in refl.cause
    assert refl.bands == NAMES


def test_swapped_bands(train: dict) -> None:
    x = _values()[[3, 1, 2, 0]]  # NIR where Red belongs
    check = compare(x, train, NAMES, labels=["B08", "B03", "B02", "B04"])
    assert "band order" in check.cause
    assert "Red <- B04" in check.cause and "NIR <- B08" in check.cause


def test_few_pixels_are_not_checked(train: dict) -> None:
    check = compare(_values(n=50) + 5000, train, NAMES)
    assert check.ok and not check.checked and check.summary == "not checked"


def test_sample_is_spread_over_a_large_scene(tmp_path: Path) -> None:
    """Windowed reads: GRID x GRID windows, nodata left out, values as the model sees them."""
    h = w = 1100
    img = np.full((4, h, w), 500.0, np.float32)
    img[:, :, : w // 2] = 2500.0  # the left half is brighter
    img[:, : h // 4] = -9999.0  # nodata on top
    scene = write_raster(
        tmp_path / "s.tif", img, crs="EPSG:32633", transform=Affine(10, 0, 0, 0, -10, 0)
    )

    class _Bundle:
        class meta:  # noqa: N801 - what plan_scene reads of a bundle
            band_order, in_channels, upscale, nodata = NAMES, 4, None, -9999.0
            tile_size, overlap, arch, encoder = 64, 16, "unet", "resnet18"

        multiple = 32

    _Bundle.meta.upscale = type("U", (), {"factor": 1})()
    plan = plan_scene(_Bundle(), scene, PredictOptions(offset="-100"))
    sample = sample_scene(plan)
    assert sample.shape[0] == 4
    assert 0 < sample.shape[1] <= GRID * GRID * WINDOW * WINDOW
    assert set(np.unique(sample)) == {400.0, 2400.0}  # both halves, offset applied, no nodata
    assert abs((sample == 2400.0).mean() - 0.5) < 0.1
