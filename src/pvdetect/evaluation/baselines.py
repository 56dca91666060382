"""Simple baselines, fitted on the training split and evaluated exactly like a model.

Every baseline is a predictor ``(raw [B,C,H,W], valid [B,H,W], indices) -> probabilities
[B,H,W]`` with a decision threshold, evaluated by
:func:`~pvdetect.evaluation.engine.evaluate_predictor` (same metrics, same sections, same
report). They are fitted on the valid, labelled pixels of the training
split only.

* ``random``: each pixel gets a score ``u ~ Uniform(0, 1)``, seeded per chip (seed, chip
  index), so it is reproducible whatever the batch size. The decision threshold is
  ``1 - r`` where ``r`` is the PV share of the training pixels, so the prediction is PV with
  probability ``r`` (a Bernoulli(r) guess), and the threshold sweep traces the curve of a
  classifier that knows nothing (precision = prevalence at every threshold).
* ``nir_threshold``: PV panels are dark in the near infrared where vegetation is bright. The
  rule "PV when NIR < t" (or "NIR >= t" if that fits the training pixels better; the
  direction is recorded) with ``t`` maximising the pixel F1 over a 4096-bin histogram of the
  training NIR values. The score is ``sigmoid((t - NIR) / s)`` (sign flipped for "above"),
  ``s`` = (p98 - p2) / 20 of the training NIR, so the threshold sits at 0.5.
* ``logistic``: logistic regression per pixel on Red, Green, Blue, NIR and NDVI, each
  standardised with the mean/std of the fit sample, fitted by Newton's method (IRLS) with a
  small L2 penalty on a seeded random sample of training pixels (default 200 000, drawn in
  proportion to each chip's labelled pixels). No class weights by default
  (``class_weight="balanced"`` weighs each class to half the total); the decision threshold
  is the one maximising F1 on the fit sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pvdetect.data.raster import BAND_NAMES, IGNORE_INDEX
from pvdetect.errors import ConfigError, DataError
from pvdetect.evaluation.metrics import plateau_middle

if TYPE_CHECKING:
    import torch

    from pvdetect.data.packed import PackedCache

BASELINE_NAMES = ("random", "nir_threshold", "logistic")
NIR_BINS = 4096
DEFAULT_SAMPLE = 200_000


def _band(names: Sequence[str], name: str) -> int:
    low = [n.lower() for n in names]
    if name.lower() not in low:
        raise ConfigError(f"baselines need a {name} band; bands are {list(names)}")
    return low.index(name.lower())


def _labelled(cache: PackedCache, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(bool labelled-and-valid, bool PV) pixels of chip ``i``."""
    m = np.asarray(cache.masks[i])
    keep = (m != IGNORE_INDEX) & np.asarray(cache.valid[i], dtype=bool)
    return keep, (m == 1) & keep


@dataclass
class TrainingPixels:
    """What the baselines learn from: counts, NIR histograms and a pixel sample.

    Attributes:
        n_pos: PV pixels (valid, labelled) in the training chips.
        n_neg: background pixels.
        nir_edges: edges of the NIR histograms (``NIR_BINS + 1``).
        nir_pos: NIR histogram of the PV pixels.
        nir_neg: NIR histogram of the background pixels.
        x: float64 ``[n, C]`` sampled pixel values (raw reflectance).
        y: uint8 ``[n]`` their labels.
    """

    n_pos: int
    n_neg: int
    nir_edges: np.ndarray
    nir_pos: np.ndarray
    nir_neg: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @property
    def rate(self) -> float:
        """PV share of the training pixels."""
        n = self.n_pos + self.n_neg
        return self.n_pos / n if n else 0.0


def collect_training_pixels(
    cache: PackedCache,
    indices: Sequence[int] | np.ndarray,
    *,
    nir_band: int = 3,
    sample_size: int = DEFAULT_SAMPLE,
    seed: int = 0,
) -> TrainingPixels:
    """Two passes over the training chips: counts and NIR range, then histograms and sample.

    Raises:
        DataError: there is no labelled training pixel.
    """
    idx = [int(i) for i in indices]
    n_lab = np.zeros(len(idx), dtype=np.int64)
    n_pos = 0
    lo, hi = math.inf, -math.inf
    for j, i in enumerate(idx):
        keep, pos = _labelled(cache, i)
        n_lab[j] = int(keep.sum())
        n_pos += int(pos.sum())
        if n_lab[j]:
            nir = np.asarray(cache.images[i, nir_band])[keep]
            lo, hi = min(lo, float(nir.min())), max(hi, float(nir.max()))
    total = int(n_lab.sum())
    if total == 0:
        raise DataError("training split: no valid, labelled pixels to fit the baselines on")
    span = max(hi - lo, 1e-3)
    edges = np.linspace(lo, hi + span * 1e-6, NIR_BINS + 1)
    h_pos = np.zeros(NIR_BINS, dtype=np.int64)
    h_neg = np.zeros(NIR_BINS, dtype=np.int64)
    rng = np.random.default_rng(seed)
    want = min(int(sample_size), total)
    quota = np.floor(n_lab * (want / total)).astype(np.int64)
    short = want - int(quota.sum())  # hand the rounding remainder to the largest chips
    if short > 0:
        for j in np.argsort(-(n_lab * (want / total) - quota), kind="stable")[:short]:
            quota[j] += 1
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for j, i in enumerate(idx):
        if n_lab[j] == 0:
            continue
        keep, pos = _labelled(cache, i)
        img = np.asarray(cache.images[i])
        vals = img[:, keep]  # [C, n]
        lab = pos[keep]
        h_pos += np.histogram(vals[nir_band][lab], bins=edges)[0]
        h_neg += np.histogram(vals[nir_band][~lab], bins=edges)[0]
        if quota[j] > 0:
            pick = np.sort(rng.choice(vals.shape[1], size=int(quota[j]), replace=False))
            xs.append(vals[:, pick].T.astype(np.float64))
            ys.append(lab[pick].astype(np.uint8))
    return TrainingPixels(
        n_pos=n_pos,
        n_neg=total - n_pos,
        nir_edges=edges,
        nir_pos=h_pos,
        nir_neg=h_neg,
        x=np.concatenate(xs) if xs else np.zeros((0, cache.images.shape[1])),
        y=np.concatenate(ys) if ys else np.zeros(0, np.uint8),
    )


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.ones(tp.shape, dtype=np.float64), where=den > 0)


# ---------------------------------------------------------------------------- baselines


class RandomBaseline:
    """Seeded uniform scores thresholded at ``1 - rate`` (a Bernoulli(rate) guess)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.rate = 0.0
        self.threshold = 1.0

    def fit(self, px: TrainingPixels) -> RandomBaseline:
        """Take the training PV rate."""
        self.rate = px.rate
        self.threshold = 1.0 - self.rate
        return self

    def params(self) -> dict[str, Any]:
        """Fitted parameters."""
        return {"train_pv_rate": self.rate, "seed": self.seed}

    def __call__(self, raw: torch.Tensor, valid: torch.Tensor, indices: Any = None) -> torch.Tensor:
        """Uniform scores, a fixed stream per (seed, chip index); 0 at invalid pixels."""
        import torch

        b, _, h, w = raw.shape
        ids = list(range(b)) if indices is None else [int(i) for i in indices]
        out = torch.empty(b, h, w, dtype=torch.float32)
        for k, i in enumerate(ids):
            state = np.random.SeedSequence([self.seed, i]).generate_state(2)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            out[k] = torch.rand(h, w, generator=g)
        return out.to(raw.device) * valid.to(raw.device)


class NIRThresholdBaseline:
    """PV where NIR is below (or above) a threshold that maximises training F1."""

    name = "nir_threshold"

    def __init__(self, band_names: Sequence[str] = BAND_NAMES) -> None:
        self.nir = _band(band_names, "NIR")
        self.t = 0.0
        self.direction = "below"
        self.scale = 1.0
        self.train_f1 = 0.0
        self.threshold = 0.5

    def fit(self, px: TrainingPixels, p2: float | None = None, p98: float | None = None) -> Any:
        """Choose threshold and direction on the training NIR histograms."""
        e = px.nir_edges
        tp_below = np.concatenate([[0], np.cumsum(px.nir_pos)])  # pixels < e[k]
        fp_below = np.concatenate([[0], np.cumsum(px.nir_neg)])
        p, n = px.n_pos, px.n_neg
        f_below = _f1(tp_below, fp_below, p - tp_below)
        tp_above, fp_above = p - tp_below, n - fp_below  # pixels >= e[k]
        f_above = _f1(tp_above, fp_above, p - tp_above)
        if f_above.max() > f_below.max() + 1e-12:
            self.direction, k, self.train_f1 = "above", plateau_middle(f_above), f_above.max()
        else:
            self.direction, k, self.train_f1 = "below", plateau_middle(f_below), f_below.max()
        self.t = float(e[k])
        span = (p98 - p2) if p2 is not None and p98 is not None and p98 > p2 else e[-1] - e[0]
        self.scale = max(float(span) / 20.0, 1e-3)
        return self

    def params(self) -> dict[str, Any]:
        """Fitted parameters."""
        return {
            "nir_threshold": self.t,
            "direction": self.direction,
            "sigmoid_scale": self.scale,
            "train_f1": float(self.train_f1),
        }

    def __call__(self, raw: torch.Tensor, valid: torch.Tensor, indices: Any = None) -> torch.Tensor:
        """``sigmoid(+-(t - NIR) / scale)``; 0 at invalid pixels."""
        import torch

        sign = 1.0 if self.direction == "below" else -1.0
        z = sign * (self.t - raw[:, self.nir].float()) / self.scale
        return torch.sigmoid(z) * valid


class LogisticBaseline:
    """Per-pixel logistic regression on R, G, B, NIR and NDVI (standardised)."""

    name = "logistic"
    FEATURES = ("Red", "Green", "Blue", "NIR", "NDVI")

    def __init__(
        self,
        band_names: Sequence[str] = BAND_NAMES,
        l2: float = 1e-4,
        class_weight: str | None = None,
        max_iter: int = 50,
    ) -> None:
        if class_weight not in (None, "balanced"):
            raise ConfigError(f"class_weight must be None or 'balanced', got {class_weight!r}")
        self.bands = [_band(band_names, b) for b in ("Red", "Green", "Blue", "NIR")]
        self.l2 = float(l2)
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.mean = np.zeros(5)
        self.std = np.ones(5)
        self.coef = np.zeros(5)
        self.intercept = 0.0
        self.threshold = 0.5
        self.iterations = 0
        self.n_fit = 0

    def features(self, x: np.ndarray) -> np.ndarray:
        """``[n, 5]`` float64 features of raw ``[n, C]`` pixels (not standardised)."""
        r, g, b, nir = (x[:, i].astype(np.float64) for i in self.bands)
        return np.stack([r, g, b, nir, _ndvi(r, nir, np)], axis=1)

    def fit(self, px: TrainingPixels) -> LogisticBaseline:
        """Newton/IRLS on the sample; then the F1-best threshold on the same sample.

        Raises:
            DataError: the sample holds only one class.
        """
        y = px.y.astype(np.float64)
        if y.size == 0 or y.min() == y.max():
            raise DataError("training split: the logistic baseline needs PV and background pixels")
        f = self.features(px.x)
        self.mean = f.mean(0)
        sd = f.std(0)
        self.std = np.where(sd > 0, sd, 1.0)
        z = np.concatenate([(f - self.mean) / self.std, np.ones((len(y), 1))], axis=1)
        sw = np.ones_like(y)
        if self.class_weight == "balanced":
            n1 = y.sum()
            sw = np.where(y == 1, 0.5 * y.size / n1, 0.5 * y.size / (y.size - n1))
        sw = sw / sw.sum()
        w = np.zeros(z.shape[1])
        pen = np.full(z.shape[1], self.l2)
        pen[-1] = 0.0  # no penalty on the intercept

        def loss(w: np.ndarray) -> float:
            s = z @ w
            return float(np.sum(sw * (np.logaddexp(0.0, s) - y * s)) + 0.5 * np.sum(pen * w * w))

        cur = loss(w)
        for it in range(1, self.max_iter + 1):
            p = _sigmoid(z @ w)
            grad = z.T @ (sw * (p - y)) + pen * w
            hess = (z * (sw * p * (1 - p))[:, None]).T @ z + np.diag(pen + 1e-12)
            step = np.linalg.solve(hess, grad)
            a = 1.0
            while True:  # backtracking keeps every step a descent step
                new = loss(w - a * step)
                if new <= cur + 1e-14 or a < 1e-6:
                    break
                a *= 0.5
            w = w - a * step
            done = abs(cur - new) < 1e-12 * max(1.0, abs(cur)) or np.max(np.abs(a * step)) < 1e-9
            cur = new
            self.iterations = it
            if done:
                break
        self.coef, self.intercept = w[:-1], float(w[-1])
        self.n_fit = int(y.size)
        self.threshold = _f1_threshold(_sigmoid(z @ w), y)
        return self

    def params(self) -> dict[str, Any]:
        """Fitted parameters (coefficients of the standardised features)."""
        return {
            "features": list(self.FEATURES),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "feature_mean": self.mean.tolist(),
            "feature_std": self.std.tolist(),
            "l2": self.l2,
            "class_weight": self.class_weight,
            "newton_iterations": self.iterations,
            "fit_pixels": self.n_fit,
        }

    def predict_numpy(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of raw ``[n, C]`` pixels."""
        f = (self.features(x) - self.mean) / self.std
        return _sigmoid(f @ self.coef + self.intercept)

    def __call__(self, raw: torch.Tensor, valid: torch.Tensor, indices: Any = None) -> torch.Tensor:
        """Probabilities ``[B, H, W]`` on the device; 0 at invalid pixels."""
        import torch

        dev = raw.device
        x = raw.float()
        r, g, b, nir = (x[:, i] for i in self.bands)
        f = torch.stack([r, g, b, nir, _ndvi(r, nir, torch)], dim=1)  # [B, 5, H, W]
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        coef = torch.as_tensor(self.coef, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        s = (((f - mean) / std) * coef).sum(1) + self.intercept
        return torch.sigmoid(s) * valid


def _ndvi(r: Any, nir: Any, xp: Any) -> Any:
    """NDVI in [-1, 1]; 0 where NIR + Red is (near) zero."""
    den = nir + r
    small = abs(den) < 1e-6 if xp is np else den.abs() < 1e-6
    safe = xp.where(small, xp.ones_like(den), den)
    v = xp.where(small, xp.zeros_like(den), (nir - r) / safe)
    return xp.clip(v, -1.0, 1.0)


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -s))


def _f1_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """Threshold on ``p`` maximising F1 of ``p >= t``, midway between neighbouring scores."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    last = np.r_[ps[1:] != ps[:-1], True]  # cut only between distinct scores
    tp, fp, cut = tp[last], fp[last], np.flatnonzero(last)
    f1 = _f1(tp, fp, ys.sum() - tp)
    k = int(np.argmax(f1))
    here = ps[cut[k]]
    below = ps[cut[k] + 1] if cut[k] + 1 < ps.size else 0.0
    return float(min(1.0, max(0.0, (here + below) / 2)))


# --------------------------------------------------------------------------- fit + eval


def fit_baselines(
    cache: PackedCache,
    *,
    seed: int = 0,
    names: Sequence[str] = BASELINE_NAMES,
    sample_size: int = DEFAULT_SAMPLE,
    band_names: Sequence[str] = BAND_NAMES,
    class_weight: str | None = None,
) -> dict[str, Any]:
    """Fit the named baselines on the cache's training split.

    Raises:
        DataError: no training chips or no labelled training pixels.
        ConfigError: an unknown baseline name.
    """
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown baseline(s) {', '.join(unknown)}; valid: {', '.join(BASELINE_NAMES)}"
        )
    train = cache.indices("train")
    if len(train) == 0:
        raise DataError(f"{cache.root}: no training chips to fit the baselines on")
    nir = _band(band_names, "NIR")
    px = collect_training_pixels(cache, train, nir_band=nir, sample_size=sample_size, seed=seed)
    out: dict[str, Any] = {}
    for name in names:
        if name == "random":
            out[name] = RandomBaseline(seed).fit(px)
        elif name == "nir_threshold":
            st = cache.stats
            out[name] = NIRThresholdBaseline(band_names).fit(px, st.p2[nir], st.p98[nir])
        else:
            out[name] = LogisticBaseline(band_names, class_weight=class_weight).fit(px)
    return out


# --------------------------------------------------------------------------------- CLI
