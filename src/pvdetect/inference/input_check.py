"""Does a scene look like the data the model was trained on? A quick check before predicting.

A wrong offset, scale or band order does not fail: the model just finds nothing (a
Sentinel-2 L2A scene of processing baseline 04.00 or later read without its ``BOA_ADD_OFFSET``
took a model from 5 plants to 0). So before a scene is predicted, :func:`check_scene` samples
its values and compares them with the training statistics of the bundle
(``bundle.meta.band_stats``: mean, std, p2, p98 per band).

**Sample.** At most :data:`GRID` x :data:`GRID` windows of :data:`WINDOW` px spread evenly over
the scene, read with windowed reads (a few dozen small reads, fast even for a 10980 px scene
in compressed or JPEG 2000 files), through the same band selection and radiometry as the
prediction; only valid pixels count. Scenes of at most :data:`WHOLE_MAX_PIXELS` pixels are
read whole. Fewer than :data:`MIN_PIXELS` valid pixels: not checked.

**Tolerance.** A band deviates when its sampled 2nd percentile lies more than :data:`TOLERANCE`
training standard deviations from the training 2nd percentile, or its sampled median more than
:data:`TOLERANCE` standard deviations from the training mean; or, for all bands at once, when
the sampled medians are on average more than :data:`SCALE_RATIO` times smaller or larger than
the training means. (Real scenes of other regions and seasons stay well within this: the
median moves by about one standard deviation; a +1000 offset moves the dark end of the visible
bands by 2 to 4.)

**Likely cause**, named in the one-line warning: a scale of 10000x (reflectance in 0..1); an
offset of about +1000 (two or more deviating bands, all shifted up by about the same amount,
600 to 1400) or of another size; swapped bands (another assignment of the file's bands to the
model's bands fits at least twice as well); else values unlike the training data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from pvdetect.data.raster import open_raster, valid_pixels
from pvdetect.errors import DataError

if TYPE_CHECKING:
    from pvdetect.inference.options import PredictOptions
    from pvdetect.inference.tiling import ScenePlan
    from pvdetect.model.bundle import Bundle

log = logging.getLogger(__name__)

__all__ = ["InputCheck", "check_scene", "checked_scene", "compare", "describe_plan", "sample_scene"]

#: windows per side of the sampling grid, and their side in pixels
GRID = 8
WINDOW = 32
#: scenes up to this many pixels are read whole
WHOLE_MAX_PIXELS = 512 * 512
#: fewer valid pixels than this: the scene is not checked
MIN_PIXELS = 200
#: a band deviates beyond this many training standard deviations (dark end or median)
TOLERANCE = 2.0
#: medians this many times smaller or larger than the training means: a scale problem
SCALE_RATIO = 20.0
#: a consistent upward shift in this range is "an offset of about +1000"
OFFSET_1000 = (600.0, 1400.0)
#: shifts of the deviating bands agree within this share of their median
SHIFT_AGREEMENT = 0.4


@dataclass
class InputCheck:
    """The outcome of :func:`check_scene`.

    Attributes:
        ok: no deviation found (also True when the scene could not be checked).
        cause: the likely cause when not ok.
        bands: the bands (bundle names) that deviate.
        message: the one-line warning (empty when ok).
        stats: the sampled statistics per band (p2, p50, p98) and the pixel count.
    """

    ok: bool = True
    cause: str = ""
    bands: list[str] = field(default_factory=list)
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    checked: bool = True

    @property
    def summary(self) -> str:
        """The ``input_check`` cell of ``summary.csv``."""
        if not self.checked:
            return "not checked"
        if self.ok:
            return "ok"
        return f"warning: {self.cause} ({', '.join(self.bands)})"


def sample_scene(plan: ScenePlan) -> np.ndarray:
    """Model values of valid pixels spread over the scene: float32 ``[C, N]``."""
    h, w = plan.info.height, plan.info.width
    if h * w <= WHOLE_MAX_PIXELS:
        windows = [Window(0, 0, w, h)]
    else:
        side_x, side_y = min(WINDOW, w), min(WINDOW, h)
        windows = [
            Window(
                min(w - side_x, max(0, round((gx + 0.5) * w / GRID - side_x / 2))),
                min(h - side_y, max(0, round((gy + 0.5) * h / GRID - side_y / 2))),
                side_x,
                side_y,
            )
            for gy in range(GRID)
            for gx in range(GRID)
        ]
    parts = []
    with open_raster(plan.path) as ds:
        for win in windows:
            try:
                data = ds.read(plan.bands, window=win, out_dtype="float32")
            except Exception as exc:  # noqa: BLE001 - GDAL raises many types for broken files
                raise DataError(f"{plan.path}: cannot read pixels ({exc})") from None
            ok = valid_pixels(data, plan.nodata)
            if plan.radiometry is not None:
                plan.radiometry.apply(data)
            parts.append(data[:, ok])
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(plan.bands), 0), np.float32)


def _train_stats(band_stats: dict[str, list[float]], n: int) -> dict[str, np.ndarray]:
    mean = np.asarray(band_stats["mean"], np.float64)[:n]
    std = np.maximum(np.asarray(band_stats["std"], np.float64)[:n], 1e-6)
    p2 = np.asarray(band_stats.get("p2") or (mean - 2 * std), np.float64)[:n]
    p98 = np.asarray(band_stats.get("p98") or (mean + 2 * std), np.float64)[:n]
    return {"mean": mean, "std": std, "p2": p2, "p98": p98}


def _swap(s_p2: np.ndarray, s_p50: np.ndarray, t: dict[str, np.ndarray]) -> list[int] | None:
    """The file band that fits each model band best, when that beats the order given."""
    from scipy.optimize import linear_sum_assignment

    n = len(s_p2)
    if n < 2:
        return None
    # cost[i, j]: file band j in place of model band i
    cost = (
        np.abs(s_p2[None, :] - t["p2"][:, None]) + np.abs(s_p50[None, :] - t["mean"][:, None])
    ) / t["std"][:, None]
    rows, cols = linear_sum_assignment(cost)
    best = cost[rows, cols].sum()
    given = np.trace(cost)
    if list(cols) != list(range(n)) and best < 0.5 * given:
        return [int(c) for c in cols]
    return None


def compare(
    sample: np.ndarray,
    band_stats: dict[str, list[float]],
    names: list[str],
    labels: list[str] | None = None,
) -> InputCheck:
    """Compare sampled values ``[C, N]`` with the training statistics (module docstring)."""
    n = sample.shape[0]
    if sample.shape[1] < MIN_PIXELS:
        return InputCheck(checked=False, stats={"pixels": int(sample.shape[1])})
    s_p2, s_p50, s_p98 = np.percentile(sample, [2, 50, 98], axis=1).astype(np.float64)
    t = _train_stats(band_stats, n)
    stats = {
        "pixels": int(sample.shape[1]),
        "p2": s_p2.round(1).tolist(),
        "p50": s_p50.round(1).tolist(),
        "p98": s_p98.round(1).tolist(),
    }
    d_lo = (s_p2 - t["p2"]) / t["std"]
    d_mid = (s_p50 - t["mean"]) / t["std"]
    # geometric mean over the bands of median / training mean
    logs = np.log(np.maximum(np.abs(s_p50), 1e-9)) - np.log(np.maximum(np.abs(t["mean"]), 1e-9))
    ratio = float(np.exp(np.mean(logs)))
    dev = np.flatnonzero((np.abs(d_lo) > TOLERANCE) | (np.abs(d_mid) > TOLERANCE))
    if ratio < 1 / SCALE_RATIO or ratio > SCALE_RATIO:
        dev = np.arange(n)
        if ratio < 1 / SCALE_RATIO:
            cause = (
                f"a scale of {1 / ratio:.0f}x, about 10000x (reflectance in 0..1? pass "
                f"--scale 10000)"
                if 2000 < 1 / ratio < 50000
                else f"a scale of about {1 / ratio:.0f}x (values far below the training data)"
            )
        else:
            cause = f"a scale of about 1/{ratio:.0f} (values far above the training data)"
    elif not dev.size:
        return InputCheck(stats=stats)
    else:
        cause = _cause(s_p2, s_p50, t, dev, names, labels or names)
    bands = [names[i] for i in dev]
    shift = ", ".join(f"{names[i]} {s_p50[i] - t['mean'][i]:+.0f}" for i in dev)
    message = (
        f"input values unlike the training data in {', '.join(bands)} (median minus training "
        f"mean: {shift}); likely cause: {cause}"
    )
    return InputCheck(ok=False, cause=cause, bands=bands, message=message, stats=stats)


def _cause(
    s_p2: np.ndarray,
    s_p50: np.ndarray,
    t: dict[str, np.ndarray],
    dev: np.ndarray,
    names: list[str],
    labels: list[str],
) -> str:
    """The likely cause of deviating bands: an offset, swapped bands, or another source."""
    shift = (s_p2 - t["p2"])[dev]
    mid = (s_p50 - t["mean"])[dev]
    med = float(np.median(shift))
    agree = np.all(np.abs(shift - med) <= SHIFT_AGREEMENT * abs(med)) and np.all(
        np.sign(mid) == np.sign(med)
    )
    if agree and dev.size >= min(2, len(s_p2)) and med != 0:
        if OFFSET_1000[0] <= med <= OFFSET_1000[1]:
            return (
                "an offset of about +1000 (a Sentinel-2 L2A product of processing baseline "
                "04.00 or later read without its BOA_ADD_OFFSET; pass --offset -1000)"
            )
        step = 10 ** max(0, math.floor(math.log10(abs(med))) - 1)
        value = round(med / step) * step
        return f"an offset of about {value:+g} (pass --offset {-value:g})"
    swap = _swap(s_p2, s_p50, t)
    if swap is not None:
        pairs = ", ".join(f"{names[i]} <- {labels[j]}" for i, j in enumerate(swap) if i != j)
        return f"band order (bands look swapped; they fit as {pairs}: pass --bands)"
    return "values unlike the training data (another product level, sensor or region?)"


def check_scene(
    plan: ScenePlan,
    band_stats: dict[str, list[float]],
    names: list[str],
    where: str | None = None,
) -> InputCheck:
    """Sample a scene and compare it with the bundle's training statistics.

    The message starts with ``where`` (default: the scene's file name). Pixels that cannot be
    read leave the scene unchecked: its prediction then fails on them with the error it always
    gave, after the scenes before it are finished.
    """
    try:
        sample = sample_scene(plan)
    except DataError as exc:
        log.debug("%s: values not checked (%s)", plan.path.name, exc)
        return InputCheck(checked=False)
    result = compare(sample, band_stats, names, list(plan.band_labels) or None)
    if not result.ok:
        result.message = f"{where or plan.path.name}: {result.message}"
    return result


def checked_scene(bundle: Bundle, plan: ScenePlan, options: PredictOptions) -> InputCheck:
    """The input check of a scene: a one-line warning, or with ``options.strict`` a DataError."""
    # --strict fails naming the whole path; a warning names the file
    where = str(plan.path) if options.strict else plan.path.name
    check = check_scene(plan, bundle.meta.band_stats, list(bundle.meta.band_order), where)
    if not check.ok:
        if options.strict:
            raise DataError(f"{check.message} (--strict)")
        log.warning("%s", check.message)
    elif not check.checked:
        log.debug("%s: too few valid pixels to check the values", plan.path.name)
    return check


def describe_plan(plan: ScenePlan) -> None:
    """Log how the scene's bands and values are read."""
    name = plan.path.name
    reordered = plan.bands != list(range(1, plan.info.count + 1))
    log.log(
        logging.INFO if reordered else logging.DEBUG,
        "%s: bands %s of %d (%s)",
        name,
        ", ".join(f"{i}={b}" for i, b in zip(plan.bands, plan.band_labels, strict=False)),
        plan.info.count,
        plan.band_source,
    )
    if plan.radiometry is not None:
        log.info("%s: values %s", name, plan.radiometry.describe())
    if plan.active is not None:
        log.info("%s: %d of %d tiles touch the area of interest", name, plan.n_active, plan.n_tiles)
        if not plan.n_active:
            log.warning("%s: the area of interest does not overlap the scene", name)
