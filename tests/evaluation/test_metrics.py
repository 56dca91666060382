"""Tests of pvdetect.evaluation.metrics against plain NumPy computations and hand-drawn masks."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from pvdetect.errors import ConfigError
from pvdetect.evaluation.metrics import Confusion, ThresholdHistogram, per_image_confusion
from pvdetect.evaluation.objects import ObjectAccumulator, ObjectMetrics, object_metrics

# ---------------------------------------------------------------- helpers


def _random_batch(seed: int, bins: int, shape=(3, 16, 16)):
    """float32 probabilities (some exactly on bin edges, 0 and 1), targets with 255, valid."""
    rng = np.random.default_rng(seed)
    probs = rng.random(shape, dtype=np.float32)
    edges = (rng.integers(0, bins + 1, size=shape) / bins).astype(np.float32)
    pick = rng.random(shape) < 0.3
    probs[pick] = edges[pick]
    probs.flat[:3] = [0.0, 1.0, 1.0]
    target = (rng.random(shape) < 0.4).astype(np.uint8)
    target[rng.random(shape) < 0.05] = 255
    valid = rng.random(shape) < 0.85
    return probs, target, valid


def _numpy_confusion(probs, target, valid, threshold: float) -> tuple[int, int, int, int]:
    keep = valid & (target != 255)
    pred = probs.astype(np.float64) >= threshold
    pos = (target == 1) & keep
    neg = (target == 0) & keep
    return (
        int((pred & pos).sum()),
        int((pred & neg).sum()),
        int((~pred & neg).sum()),
        int((~pred & pos).sum()),
    )


def _filled(bins: int, batches) -> ThresholdHistogram:
    hist = ThresholdHistogram(bins=bins)
    for probs, target, valid in batches:
        hist.update(torch.from_numpy(probs), torch.from_numpy(target), torch.from_numpy(valid))
    return hist


# ---------------------------------------------------------------- Confusion


def test_confusion_scores_by_hand() -> None:
    c = Confusion(tp=6, fp=2, tn=10, fn=4)
    assert c.total == 22
    assert c.accuracy == pytest.approx(16 / 22)
    assert c.precision == pytest.approx(0.75)
    assert c.recall == pytest.approx(0.6)
    assert c.specificity == pytest.approx(10 / 12)
    assert c.f1 == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert c.iou == pytest.approx(0.5)
    assert c.background_iou == pytest.approx(10 / 16)
    assert c.miou == pytest.approx((0.5 + 10 / 16) / 2)
    d = c.to_dict()
    assert set(d) == {
        "tp",
        "fp",
        "tn",
        "fn",
        "accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "iou",
        "background_iou",
        "miou",
    }
    assert (c + Confusion(1, 1, 1, 1)).to_dict()["tp"] == 7


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # nothing at all: agreeing on nothing is perfect
        ((0, 0, 0, 0), dict(precision=1, recall=1, f1=1, iou=1, accuracy=1, specificity=1)),
        # only background, all right
        ((0, 0, 10, 0), dict(precision=1, recall=1, f1=1, iou=1, background_iou=1)),
        # false alarms on a chip without PV
        ((0, 5, 5, 0), dict(precision=0, recall=0, f1=0, iou=0, specificity=0.5)),
        # PV missed entirely, nothing predicted
        ((0, 0, 5, 3), dict(precision=0, recall=0, f1=0, iou=0, specificity=1)),
        # only PV, all found: no negatives
        ((4, 0, 0, 0), dict(precision=1, recall=1, specificity=1, background_iou=1)),
    ],
)
def test_confusion_zero_division_never_nan(counts, expected) -> None:
    c = Confusion(*counts)
    d = c.to_dict()
    json.dumps(d, allow_nan=False)  # raises on NaN/inf
    for key, value in expected.items():
        assert d[key] == pytest.approx(value), key
    assert all(np.isfinite(v) for v in d.values())


def test_confusion_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="fn"):
        Confusion(1, 1, 1, -1)


def test_per_image_confusion_numpy_and_torch_agree() -> None:
    probs, target, valid = _random_batch(0, 10)
    pred = probs >= 0.5
    expected = Confusion(*_numpy_confusion(probs, target, valid, 0.5))
    assert per_image_confusion(pred, target, valid) == expected
    assert (
        per_image_confusion(
            torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(valid)
        )
        == expected
    )
    # valid=None still ignores 255 targets
    no_valid = per_image_confusion(pred, target)
    assert no_valid == Confusion(*_numpy_confusion(probs, target, np.ones_like(valid), 0.5))
    with pytest.raises(ValueError, match="shapes differ"):
        per_image_confusion(pred[0], target, valid)


# ---------------------------------------------------------------- ThresholdHistogram


@pytest.mark.parametrize("bins", [10, 100, 1000])
def test_histogram_confusion_matches_numpy_on_bin_edges(bins: int) -> None:
    batches = [_random_batch(seed, bins) for seed in range(3)]
    hist = _filled(bins, batches)
    probs = np.concatenate([b[0] for b in batches])
    target = np.concatenate([b[1] for b in batches])
    valid = np.concatenate([b[2] for b in batches])
    for k in sorted({0, 1, bins // 3, bins // 2, (7 * bins) // 10, bins - 1, bins}):
        thr = k / bins
        got = hist.confusion(thr)
        assert (got.tp, got.fp, got.tn, got.fn) == _numpy_confusion(probs, target, valid, thr), thr
    assert hist.total == int((valid & (target != 255)).sum())


def test_histogram_sweep_matches_numpy_at_every_edge() -> None:
    bins = 40
    batches = [_random_batch(seed, bins, shape=(2, 12, 12)) for seed in (5, 6)]
    hist = _filled(bins, batches)
    probs = np.concatenate([b[0] for b in batches])
    target = np.concatenate([b[1] for b in batches])
    valid = np.concatenate([b[2] for b in batches])
    sweep = hist.sweep()
    assert len(sweep["thresholds"]) == bins + 1
    assert sweep["thresholds"][0] == 0.0 and sweep["thresholds"][-1] == 1.0
    for i, thr in enumerate(sweep["thresholds"]):
        tp, fp, tn, fn = _numpy_confusion(probs, target, valid, float(thr))
        c = Confusion(tp, fp, tn, fn)
        assert (sweep["tp"][i], sweep["fp"][i], sweep["tn"][i], sweep["fn"][i]) == (tp, fp, tn, fn)
        for key in ("precision", "recall", "f1", "iou"):
            assert sweep[key][i] == pytest.approx(getattr(c, key)), (key, thr)
    for key in ("precision", "recall", "f1", "iou"):
        assert np.isfinite(sweep[key]).all()


def test_histogram_bins_layout_and_last_bin_includes_one() -> None:
    hist = ThresholdHistogram(bins=4, device="cpu")
    probs = torch.tensor([[[0.0, 0.25, 0.5, 0.74, 0.75, 0.99, 1.0, 0.3]]])
    target = torch.tensor([[[0, 0, 0, 0, 1, 1, 1, 1]]], dtype=torch.uint8)
    hist.update(probs, target, torch.ones_like(target, dtype=torch.bool))
    np.testing.assert_array_equal(hist.negative_counts, [1, 1, 2, 0])
    np.testing.assert_array_equal(hist.positive_counts, [0, 1, 0, 3])
    # threshold 1.0 is exact: only probability 1.0 counts as PV
    assert hist.confusion(1.0) == Confusion(tp=1, fp=0, tn=4, fn=3)
    # a threshold between edges rounds up to the next edge
    assert hist.confusion(0.6) == hist.confusion(0.75)
    assert hist.confusion(2.0) == Confusion(tp=0, fp=0, tn=4, fn=4)
    assert hist.confusion(-1.0) == Confusion(tp=4, fp=4, tn=0, fn=0)


def test_histogram_ignores_invalid_255_and_nan_pixels() -> None:
    bins = 20
    probs, target, valid = _random_batch(7, bins)
    probs_t = torch.from_numpy(probs.copy())
    probs_t[~torch.from_numpy(valid)] = float("nan")  # garbage at invalid pixels
    full = ThresholdHistogram(bins)
    full.update(probs_t.unsqueeze(1), torch.from_numpy(target), torch.from_numpy(valid))
    keep = valid & (target != 255)
    only = ThresholdHistogram(bins)
    only.update(
        torch.from_numpy(probs[keep])[None, None],
        torch.from_numpy(target[keep])[None, None],
        None,
    )
    np.testing.assert_array_equal(full.positive_counts, only.positive_counts)
    np.testing.assert_array_equal(full.negative_counts, only.negative_counts)
    # valid=None means target != 255 only
    none = ThresholdHistogram(bins)
    none.update(torch.from_numpy(probs), torch.from_numpy(target), None)
    assert none.total == int((target != 255).sum())


def test_best_threshold_picks_middle_of_perfect_plateau() -> None:
    hist = ThresholdHistogram(bins=10)
    probs = torch.tensor([[[0.1, 0.1, 0.32, 0.6, 0.9, 0.95]]])
    target = torch.tensor([[[0, 0, 0, 1, 1, 1]]], dtype=torch.uint8)
    hist.update(probs, target, None)
    # edges 0.4, 0.5, 0.6 separate the classes perfectly -> the middle one
    assert hist.best_threshold("f1") == (pytest.approx(0.5), pytest.approx(1.0))
    assert hist.best_threshold("iou") == (pytest.approx(0.5), pytest.approx(1.0))


def test_best_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(11)
    n = 4000
    target = (rng.random(n) < 0.3).astype(np.uint8)
    # informative but overlapping scores
    probs = np.clip(rng.normal(0.35 + 0.3 * target, 0.15), 0, 1).astype(np.float32)
    hist = ThresholdHistogram(bins=100)
    hist.update(torch.from_numpy(probs)[None, None], torch.from_numpy(target)[None, None], None)
    valid = np.ones(n, dtype=bool)
    for metric in ("f1", "iou"):
        scores = []
        for k in range(101):
            c = Confusion(*_numpy_confusion(probs, target, valid, k / 100))
            scores.append(getattr(c, metric))
        thr, value = hist.best_threshold(metric)
        assert value == pytest.approx(max(scores))
        assert scores[round(thr * 100)] == pytest.approx(max(scores))
        assert 0.3 < thr < 0.7
    with pytest.raises(ConfigError, match="f1"):
        hist.best_threshold("accuracy")


def test_empty_histogram_is_finite() -> None:
    hist = ThresholdHistogram(bins=8)
    assert hist.device is None
    assert hist.total == 0
    assert hist.best_threshold() == (0.5, 1.0)
    sweep = hist.sweep()
    assert all(np.isfinite(sweep[k]).all() for k in ("precision", "recall", "f1", "iou"))
    json.dumps(hist.confusion(0.5).to_dict(), allow_nan=False)


def test_histogram_merge_equals_single_pass_and_reset() -> None:
    bins = 50
    a, b = _random_batch(1, bins), _random_batch(2, bins)
    whole = _filled(bins, [a, b])
    merged = _filled(bins, [a]).merge(_filled(bins, [b]))
    assert torch.equal(whole.counts, merged.counts)
    assert merged.counts.dtype == torch.int64
    with pytest.raises(ValueError, match="bins"):
        merged.merge(ThresholdHistogram(bins=10))
    merged.reset()
    assert merged.total == 0


def test_histogram_rejects_bad_bins_and_shapes() -> None:
    with pytest.raises(ConfigError, match="bins"):
        ThresholdHistogram(bins=0)
    with pytest.raises(ValueError, match="same shape"):
        ThresholdHistogram(4).update(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5), None)


def test_histogram_sync_is_noop_without_distributed() -> None:
    bins = 16
    hist = _filled(bins, [_random_batch(3, bins)])
    before = hist.counts.clone()
    assert not dist.is_initialized()
    assert hist.sync() is hist
    assert torch.equal(hist.counts, before)
    empty = ThresholdHistogram(bins)
    assert empty.sync().counts is None  # nothing allocated without a process group


def _sync_worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a 2-process gloo group: sync a filled and an empty histogram, save them."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        bins = 16
        hist = _filled(bins, [_random_batch(3 + rank, bins)])  # a different histogram per rank
        only_rank0 = (
            _filled(bins, [_random_batch(9, bins)]) if rank == 0 else ThresholdHistogram(bins)
        )
        result = {
            "before": hist.counts.clone(),
            "after": hist.sync().counts.clone(),
            "only_rank0": only_rank0.sync().counts.clone(),
        }
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_histogram_sync_sums_over_two_gloo_processes(tmp_path: Path) -> None:
    bins = 16
    torch.multiprocessing.spawn(
        _sync_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # each rank held its own histogram (as built here), and both now hold the sum
    want0 = _filled(bins, [_random_batch(3, bins)]).counts
    want1 = _filled(bins, [_random_batch(4, bins)]).counts
    assert torch.equal(r0["before"], want0) and torch.equal(r1["before"], want1)
    assert not torch.equal(want0, want1)
    assert torch.equal(r0["after"], want0 + want1)
    assert torch.equal(r1["after"], want0 + want1)
    # a rank that saw no pixel joins the sum with zeros and ends with the others' counts
    only = _filled(bins, [_random_batch(9, bins)]).counts
    assert torch.equal(r0["only_rank0"], only) and torch.equal(r1["only_rank0"], only)


# ---------------------------------------------------------------- objects


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Two plants (A detected, B split in two) and one false positive on a 20x20 grid."""
    true = np.zeros((20, 20), dtype=np.uint8)
    pred = np.zeros((20, 20), dtype=bool)
    true[2:6, 2:7] = 1  # plant A: 4 x 5 = 20 px
    pred[2:6, 2:8] = True  # detection of A: 4 x 6 = 24 px, IoU 20/24
    true[10:16, 2:10] = 1  # plant B: 6 x 8 = 48 px
    pred[10:16, 2:5] = True  # left piece 18 px, IoU 18/48
    pred[10:16, 7:10] = True  # right piece 18 px, IoU 18/48
    pred[2:5, 14:17] = True  # false positive: 9 px
    return pred, true


def test_object_metrics_on_hand_drawn_masks() -> None:
    pred, true = _scene()
    m = object_metrics(pred, true, None, pixel_area_m2=100.0)
    assert (m.tp, m.fp, m.fn) == (1, 3, 1)
    assert m.precision == pytest.approx(0.25)
    assert m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(2 / 6)
    assert m.mean_abs_area_error_ha == pytest.approx(0.04)
    assert m.mean_signed_area_error_ha == pytest.approx(0.04)
    assert m.matched_true_ha == pytest.approx(0.20)
    assert m.matched_pred_ha == pytest.approx(0.24)
    assert m.total_true_ha == pytest.approx(0.68)
    assert m.total_pred_ha == pytest.approx(0.69)
    assert m.pairs == [(pytest.approx(0.2), pytest.approx(0.24), pytest.approx(20 / 24))]
    json.dumps(m.to_dict(), allow_nan=False)
    # torch input and a larger pixel (20 m -> 400 m2) scale the areas
    m4 = object_metrics(torch.from_numpy(pred), torch.from_numpy(true), None, pixel_area_m2=400.0)
    assert m4.total_true_ha == pytest.approx(4 * 0.68)


def test_object_matching_is_greedy_one_to_one() -> None:
    pred, true = _scene()
    # At IoU 0.3 both pieces of B qualify, but only one may match B.
    m = object_metrics(pred, true, None, iou_threshold=0.3)
    assert (m.tp, m.fp, m.fn) == (2, 2, 0)
    # Uneven split: the big piece alone reaches IoU 0.5 and matches, the small one is FP.
    # Left piece grows to 6 x 4 = 24 px: IoU exactly 0.5 (>= threshold), still split by col 6.
    pred2 = pred.copy()
    pred2[10:16, 2:6] = True
    m2 = object_metrics(pred2, true, None)
    assert (m2.tp, m2.fp, m2.fn) == (2, 2, 0)


def test_object_metrics_use_8_connectivity() -> None:
    true = np.eye(6, dtype=np.uint8)  # a diagonal line: one region with 8-connectivity
    pred = np.eye(6, dtype=bool)
    m = object_metrics(pred, true)
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)


def test_object_metrics_ignore_invalid_pixels() -> None:
    pred, true = _scene()
    valid = np.ones_like(pred)
    valid[0:8, 12:20] = False  # the false positive lies in nodata
    m = object_metrics(pred, true, valid)
    assert (m.tp, m.fp, m.fn) == (1, 2, 1)
    true255 = true.copy()
    true255[0:8, 12:20] = 255  # the same via ignored labels
    assert object_metrics(pred, true255).to_dict() == m.to_dict()


def test_object_metrics_empty_masks_are_finite() -> None:
    empty = np.zeros((8, 8), dtype=np.uint8)
    m = object_metrics(empty, empty)
    assert (m.tp, m.fp, m.fn) == (0, 0, 0)
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    assert m.mean_abs_area_error_ha == 0.0
    json.dumps(m.to_dict(), allow_nan=False)
    only_fp = object_metrics(np.ones((8, 8)), empty)
    assert (only_fp.precision, only_fp.recall, only_fp.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="iou_threshold"):
        object_metrics(empty, empty, iou_threshold=0.0)
    with pytest.raises(ValueError, match="2-D"):
        object_metrics(empty[None], empty[None])


def test_object_accumulator_sums_images() -> None:
    pred, true = _scene()
    acc = ObjectAccumulator()
    acc.add(pred, true, None, 100.0)
    acc.add(pred, true, None, 100.0)
    acc.add(np.zeros_like(pred), true, None, 100.0)  # both plants missed
    acc.add(np.zeros_like(pred), np.zeros_like(true), None, 100.0)  # nothing to match
    assert acc.images == 4
    r = acc.result
    assert (r.tp, r.fp, r.fn) == (2, 6, 4)
    assert r.mean_abs_area_error_ha == pytest.approx(0.04)
    assert r.total_true_ha == pytest.approx(3 * 0.68)
    assert r.pairs == []  # per-pair lists are not kept over a split
    d = acc.section()
    assert d["recall"] == pytest.approx(2 / 6)
    assert d["n_true"] == 6 and d["n_pred"] == 8
    assert d["area_error_ha"] == pytest.approx(r.total_pred_ha - r.total_true_ha)
    assert (ObjectMetrics() + r).to_dict() == r.to_dict()  # the empty result adds nothing
