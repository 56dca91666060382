"""Capture windows: chips of one size moved at random around a point, inside the imagery.

As in the prototype, several chips are cut around one plant, each with the window shifted
at random so that the plant sits somewhere else in each. Every window contains the point's
pixel and lies wholly inside the footprint (the pixels some asset covers), so no chip reaches
past the imagery. Windows are drawn without repetition from all such positions, from a
seeded generator: the same seed gives the same windows.
"""

from __future__ import annotations

import math

import numpy as np
from rasterio.windows import Window


def candidate_offsets(
    point: tuple[float, float], footprint: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of every top-left corner whose ``size`` window holds the point's
    pixel and lies inside ``footprint`` (a ``[H, W]`` boolean array)."""
    height, width = footprint.shape
    pr, pc = math.floor(point[0]), math.floor(point[1])
    if not (0 <= pr < height and 0 <= pc < width) or size > min(height, width):
        return np.empty(0, int), np.empty(0, int)
    r_lo, r_hi = max(0, pr - size + 1), min(pr, height - size)
    c_lo, c_hi = max(0, pc - size + 1), min(pc, width - size)
    if r_lo > r_hi or c_lo > c_hi:
        return np.empty(0, int), np.empty(0, int)
    integral = np.zeros((height + 1, width + 1), np.int64)
    integral[1:, 1:] = footprint.astype(np.int64).cumsum(0).cumsum(1)
    rr, cc = np.meshgrid(np.arange(r_lo, r_hi + 1), np.arange(c_lo, c_hi + 1), indexing="ij")
    inside = (
        integral[rr + size, cc + size]
        - integral[rr, cc + size]
        - integral[rr + size, cc]
        + integral[rr, cc]
    )
    full = inside == size * size
    return rr[full], cc[full]


def capture_windows(
    point: tuple[float, float],
    footprint: np.ndarray,
    size: int,
    count: int,
    seed: int,
) -> list[Window]:
    """Up to ``count`` distinct ``size`` x ``size`` windows around a point, drawn with ``seed``.

    Args:
        point: Fractional ``(row, col)`` of the point on the grid.
        footprint: ``[H, W]`` True where the imagery has data.
        size: Window side in pixels.
        count: Windows wanted.
        seed: Seed of the draw.

    Returns:
        The windows (fewer than ``count`` only when fewer positions exist; empty when none).
    """
    rows, cols = candidate_offsets(point, footprint, size)
    if rows.size == 0:
        return []
    rng = np.random.default_rng(seed)
    picks = rng.choice(rows.size, size=min(count, rows.size), replace=False)
    return [Window(int(cols[i]), int(rows[i]), size, size) for i in picks]
