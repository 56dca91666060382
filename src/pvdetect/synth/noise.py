"""Coordinate-hashed noise: the same value for a pixel whatever window contains it.

Every random texture of the synthetic landscapes is a function of integer world pixel
coordinates and a 64-bit key (a splitmix-style hash), never of a random stream, so any window
can be rendered on its own and windows join without seams.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

__all__ = ["fbm", "hash_normal", "hash_uniform", "stable_key", "tri", "value_noise"]

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)
_C3 = np.uint64(0xBF58476D1CE4E5B9)
_C4 = np.uint64(0x94D049BB133111EB)


def stable_key(*parts: object) -> int:
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


def hash_uniform(iy: np.ndarray, ix: np.ndarray, key: int) -> np.ndarray:
    """Uniform [0, 1) float64 from coordinates."""
    return (_hash(iy, ix, key) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def hash_normal(iy: np.ndarray, ix: np.ndarray, key: int) -> np.ndarray:
    """Approximately standard-normal float64 from coordinates (sum of four 16-bit uniforms)."""
    h = _hash(iy, ix, key)
    m = np.uint64(0xFFFF)
    s = (h & m).astype(np.float64)
    s += ((h >> np.uint64(16)) & m).astype(np.float64)
    s += ((h >> np.uint64(32)) & m).astype(np.float64)
    s += (h >> np.uint64(48)).astype(np.float64)
    return (s * (1.0 / 65536.0) - 2.0) * math.sqrt(3.0)


def value_noise(yi: np.ndarray, xi: np.ndarray, cell: int, key: int) -> np.ndarray:
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
    lattice = hash_uniform(ly[:, None], lx[None, :], key) * 2.0 - 1.0
    rx = gx - lx[0]
    rows = lattice[:, rx] * (1.0 - wx) + lattice[:, rx + 1] * wx  # [Ly, W]
    ry = gy - ly[0]
    return rows[ry] * (1.0 - wy)[:, None] + rows[ry + 1] * wy[:, None]


def fbm(yi: np.ndarray, xi: np.ndarray, cell: int, octaves: int, key: int) -> np.ndarray:
    """Fractal sum of value noise, roughly in [-1, 1] (most values within +-0.6)."""
    out = np.zeros((yi.size, xi.size))
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(1, cell >> o)
        out += amp * value_noise(yi, xi, c, key + o * 7919)
        total += amp
        amp *= 0.5
    return out / total


def tri(t: np.ndarray) -> np.ndarray:
    """Triangle wave in [-1, 1] with period 1 (no transcendental functions: exact everywhere)."""
    return np.abs(2.0 * (t - np.floor(t)) - 1.0) * 2.0 - 1.0
