"""The best and worst chips of an evaluation, cut and stretched for the report's grids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pvdetect.data.raster import IGNORE_INDEX
from pvdetect.evaluation.figures import GridChip, rgb_stretch

__all__ = ["GridInputs", "make_grid_chips", "rgb_bands", "select_grid"]


def select_grid(per_image: list[dict[str, Any]], n: int) -> tuple[list[int], list[int]]:
    """Positions (in ``per_image``) of the ``n`` best and ``n`` worst chips by IoU.

    Only chips with true or predicted PV are ranked (others have no IoU); ties keep the
    split's order. The worst list never repeats a chip of the best list.
    """
    ranked = [
        (r["iou"] if r["iou"] is not None else 0.0, j)
        for j, r in enumerate(per_image)
        if r["pv_true"] > 0 or r["pv_pred"] > 0
    ]
    order = [j for _, j in sorted(ranked, key=lambda t: (-t[0], t[1]))]
    best = order[:n]
    rest = [j for j in reversed(order) if j not in best]
    return best, rest[:n]


def grid_picks(per_image: list[dict[str, Any]], n: int) -> list[tuple[int, str]]:
    """``(position in per_image, label)`` of the chips to show: best first, then worst."""
    if n <= 0:
        return []
    best, worst = select_grid(per_image, n)
    return [(j, f"best {k + 1}") for k, j in enumerate(best)] + [
        (j, f"worst {k + 1}") for k, j in enumerate(worst)
    ]


def rgb_bands(band_names: Sequence[str]) -> tuple[int, int, int]:
    """Positions of Red, Green, Blue among ``band_names`` (the first three if not named)."""
    names = [n.lower() for n in band_names]
    try:
        return tuple(names.index(b) for b in ("red", "green", "blue"))  # type: ignore[return-value]
    except ValueError:
        return (0, 1, 2)


class GridInputs:
    """The picked chips' arrays: raw ``[N, C, H, W]`` at the chip grid, and at the
    predictions' grid the probabilities, masks and valid masks ``[N, H', W']``."""

    def __init__(
        self, raw: np.ndarray, probs: np.ndarray, mask: np.ndarray, valid: np.ndarray
    ) -> None:
        self.raw, self.probs, self.mask, self.valid = raw, probs, mask, valid.astype(bool)


def make_grid_chips(
    picks: list[tuple[int, str]],
    arrays: GridInputs,
    per_image: list[dict[str, Any]],
    threshold: float,
    stats: dict[str, list[float]],
    band_names: Sequence[str],
) -> list[GridChip]:
    """One :class:`GridChip` per pick (in pick order), cropped to its labelled extent."""
    factor = arrays.probs.shape[-1] // arrays.raw.shape[-1]
    rgb_idx = rgb_bands(band_names)
    chips = []
    for pos, (j, label) in enumerate(picks):
        raw = arrays.raw[pos]
        if factor > 1:
            raw = raw.repeat(factor, -2).repeat(factor, -1)
        valid = arrays.valid[pos]
        truth = arrays.mask[pos].copy()
        truth[~valid] = IGNORE_INDEX
        ys, xs = _extent(valid | (truth != IGNORE_INDEX))
        r = per_image[j]
        chips.append(
            GridChip(
                key=r["key"],
                site=r["site"],
                label=label,
                score=r["iou"],
                rgb=rgb_stretch(raw[:, ys, xs], valid[ys, xs], stats["p2"], stats["p98"], rgb_idx),
                truth=truth[ys, xs],
                prob=arrays.probs[pos][ys, xs].astype(np.float32),
                threshold=threshold,
            )
        )
    return chips


def _extent(keep: np.ndarray, margin: int = 1) -> tuple[slice, slice]:
    """Rows and columns of the box around ``keep`` (padding and nodata frames cropped)."""
    rows, cols = np.flatnonzero(keep.any(1)), np.flatnonzero(keep.any(0))
    if rows.size == 0:
        return slice(None), slice(None)
    h, w = keep.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )
