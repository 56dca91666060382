"""Tests of pvdetect.synth.noise: coordinate-hashed noise is window-independent and stable."""

from __future__ import annotations

import numpy as np

from pvdetect.synth.noise import fbm, hash_normal, hash_uniform, stable_key, tri, value_noise


def test_noise_of_a_pixel_does_not_depend_on_the_window() -> None:
    yi, xi = np.arange(-20, 60), np.arange(100, 190)
    whole = fbm(yi, xi, 16, 3, key=7)
    part = fbm(yi[33:50], xi[5:71], 16, 3, key=7)
    assert part.tobytes() == whole[33:50, 5:71].tobytes()
    vn = value_noise(yi, xi, 5, key=9)
    assert value_noise(yi[1:2], xi[40:41], 5, key=9)[0, 0] == vn[1, 40]
    assert np.abs(vn).max() <= 1.0 and np.abs(whole).max() <= 1.0
    assert not np.array_equal(fbm(yi, xi, 16, 3, key=8), whole)


def test_value_noise_is_smooth_and_hashes_are_spread() -> None:
    yi, xi = np.arange(200), np.arange(200)
    vn = value_noise(yi, xi, 12, key=1)
    assert np.abs(np.diff(vn, axis=1)).max() < 0.3  # neighbours close: smooth
    assert vn.std() > 0.2
    u = hash_uniform(yi[:, None], xi[None, :], key=2)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    z = hash_normal(yi[:, None], xi[None, :], key=3)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02
    assert np.array_equal(tri(np.array([0.0, 0.25, 0.5, 1.0])), [1.0, 0.0, -1.0, 1.0])


def test_stable_key_is_the_same_everywhere() -> None:
    """Keys come from blake2b of the parts' repr, never from Python's salted hash()."""
    assert stable_key("scene", 0, "brazil") == 17626488523953093343
    assert stable_key("scene", 0, "brazil") != stable_key("scene", 1, "brazil")
