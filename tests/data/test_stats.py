"""Tests of the per-band statistics: plain and weighted by chip group."""

from __future__ import annotations

import numpy as np
import pytest

from pvdetect.data.stats import band_stats, weighted_band_stats
from pvdetect.errors import DataError


def _chips(values: list[float], n: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``n`` chips per value: every valid pixel of band b holds ``value * (b + 1)``."""
    imgs = np.concatenate(
        [np.full((n, 2, size, size), v, np.float32) * np.array([1, 2])[:, None, None]
         for v in values]
    )  # fmt: skip
    valid = np.ones((len(imgs), size, size), bool)
    valid[:, 0, :] = False  # one invalid row, never counted
    imgs[:, :, 0, :] = -9999.0
    return imgs, valid


def test_each_group_weighs_its_share_whatever_its_size() -> None:
    imgs, valid = _chips([100.0, 1000.0], n=10)
    imgs2, valid2 = _chips([5000.0], n=1)
    imgs, valid = np.concatenate([imgs, imgs2]), np.concatenate([valid, valid2])
    small = np.arange(10)  # 10 chips of 100
    mid = np.arange(10, 20)  # 10 chips of 1000
    big = np.array([20])  # 1 chip of 5000
    st = weighted_band_stats(imgs, valid, [(small, 1.0), (mid, 1.0), (big, 2.0)])
    # a mixture 1/4, 1/4, 1/2 of three point masses, pixel counts 10 : 10 : 1 ignored
    mean = 0.25 * 100 + 0.25 * 1000 + 0.5 * 5000
    var = 0.25 * 100**2 + 0.25 * 1000**2 + 0.5 * 5000**2 - mean**2
    np.testing.assert_allclose(st.mean, [mean, 2 * mean])
    np.testing.assert_allclose(st.std, [np.sqrt(var), 2 * np.sqrt(var)])
    assert st.p2 == [100.0, 200.0] and st.p98 == [5000.0, 10000.0]
    # the unweighted statistics of the same chips: dominated by the many small chips
    plain = band_stats(imgs, valid, np.arange(21))
    assert plain.mean[0] < 1000 < st.mean[0]


def test_equal_weights_over_one_group_are_the_plain_statistics() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.normal(1000, 300, (6, 4, 16, 16)).astype(np.float32)
    valid = rng.random((6, 16, 16)) > 0.2
    idx = np.arange(6)
    st, plain = weighted_band_stats(imgs, valid, [(idx, 3.0)]), band_stats(imgs, valid, idx)
    np.testing.assert_allclose(st.mean, plain.mean, rtol=1e-9)
    np.testing.assert_allclose(st.std, plain.std, rtol=1e-9)
    np.testing.assert_allclose(st.p2, plain.p2, rtol=0.01)
    np.testing.assert_allclose(st.p98, plain.p98, rtol=0.01)


def test_empty_and_weightless_groups_are_left_out() -> None:
    imgs, valid = _chips([100.0, 900.0], n=3)
    a, b = np.arange(3), np.arange(3, 6)
    st = weighted_band_stats(imgs, valid, [(a, 1.0), (b, 0.0), (np.zeros(0, np.int64), 5.0)])
    assert st.mean == [100.0, 200.0] and st.std == [1.0, 1.0]  # zero spread stored as 1
    valid[:] = False
    with pytest.raises(DataError, match="mix: no valid pixel"):
        weighted_band_stats(imgs, valid, [(a, 1.0)], where="mix")
