"""Tests of pvdetect.evaluation.baselines: each baseline fits what a constructed case plants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pvdetect.cli import main
from pvdetect.data.loading import load_split
from pvdetect.errors import DataError
from pvdetect.evaluation.baseline_runs import evaluate_baselines, run_baselines
from pvdetect.evaluation.baselines import (
    LogisticBaseline,
    NIRThresholdBaseline,
    RandomBaseline,
    TrainingPixels,
    collect_training_pixels,
    fit_baselines,
)
from pvdetect.evaluation.sections import SECTIONS
from tests.fixtures import grid, plant_pattern, write_brazil_dataset

ND = -9999.0
PLANTED = 1500.0


def write_planted(root: Path, splits: dict[str, int], seed: int = 0) -> Path:
    """Chips with one plant each whose NIR is in [500, 1400], background NIR in [1600, 5000]:
    t = 1500 fits. Image nodata in the top 2 rows, unlabelled bottom 2 rows."""
    rng = np.random.default_rng(seed)

    def make(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        img, mask = plant_pattern(
            rng, 32, plants=(1, 1), side=(8, 10), pv_nir=(500, 1400), bg_nir=(1600, 5000)
        )
        img[:, :2, :] = ND
        mask[:, -2:, :] = ND
        return img, mask

    return write_brazil_dataset(
        root, splits, make, numbering="global", transform=lambda n: grid(600_000 + 500 * n, 5e6)
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_planted(tmp_path_factory.mktemp("planted"), {"train": 4, "val": 1, "test": 2})


@pytest.fixture(scope="module")
def cache(planted: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    c, _ = load_split(planted, "test", cache_dir=tmp_path_factory.mktemp("cache"))
    return c


def test_training_pixels_counts_and_sample(cache) -> None:  # noqa: ANN001
    train = cache.indices("train")
    px = collect_training_pixels(cache, train, sample_size=500, seed=3)
    masks = np.asarray(cache.masks[train])
    assert px.n_pos == int((masks == 1).sum())
    assert px.n_neg == int((masks == 0).sum())
    assert px.nir_pos.sum() == px.n_pos and px.nir_neg.sum() == px.n_neg
    assert px.x.shape == (500, 4) and px.y.shape == (500,)
    # the sample holds real labelled pixels: PV NIR below 1400, background above 1600
    assert (px.x[px.y == 1, 3] <= 1400).all() and (px.x[px.y == 0, 3] >= 1600).all()
    again = collect_training_pixels(cache, train, sample_size=500, seed=3)
    np.testing.assert_array_equal(px.x, again.x)


def test_nir_threshold_recovers_planted_threshold(cache) -> None:  # noqa: ANN001
    b = fit_baselines(cache, names=["nir_threshold"])["nir_threshold"]
    assert b.direction == "below"
    assert 1400 < b.t <= 1600
    assert abs(b.t - PLANTED) < 60  # the middle of the perfect plateau
    assert b.train_f1 == pytest.approx(1.0)
    raw = torch.tensor([[b.t - 1.0, b.t + 1.0]]).view(1, 1, 1, 2).expand(1, 4, 1, 2)
    p = b(raw.contiguous(), torch.ones(1, 1, 2, dtype=torch.bool))
    assert p[0, 0, 0] > 0.5 > p[0, 0, 1]  # the threshold sits at probability 0.5


def test_nir_threshold_direction_above() -> None:
    """When PV is the bright class the rule flips and says so."""
    edges = np.linspace(0, 4096, 4097)
    pos = np.zeros(4096, np.int64)
    neg = np.zeros(4096, np.int64)
    pos[3000:3100] = 5
    neg[100:2000] = 3
    px = TrainingPixels(
        int(pos.sum()), int(neg.sum()), edges, pos, neg, np.zeros((0, 4)), np.zeros(0, np.uint8)
    )
    b = NIRThresholdBaseline().fit(px)
    assert b.direction == "above" and 2000 <= b.t <= 3000
    raw = torch.zeros(1, 4, 1, 2)
    raw[0, 3, 0] = torch.tensor([3050.0, 500.0])
    p = b(raw, torch.ones(1, 1, 2, dtype=torch.bool))
    assert p[0, 0, 0] > 0.5 > p[0, 0, 1]


def test_logistic_separates_linearly_separable_case() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(200, 3000, (4000, 4))
    y = (x[:, 0] - x[:, 3] * 0.5 + 300 > 0).astype(np.uint8)  # a plane in band space
    keep = np.abs(x[:, 0] - x[:, 3] * 0.5 + 300) > 30  # a margin
    x, y = x[keep], y[keep]
    px = TrainingPixels(
        int(y.sum()), int((1 - y).sum()), np.zeros(2), np.zeros(1), np.zeros(1), x, y
    )
    b = LogisticBaseline().fit(px)
    pred = b.predict_numpy(x) >= b.threshold
    assert (pred == (y == 1)).all()
    assert b.coef[0] > 0 and b.coef[3] < 0  # Red up, NIR down, as planted
    # the torch path gives the same probabilities
    raw = torch.tensor(x.T.reshape(4, 1, -1), dtype=torch.float32)[None]
    p = b(raw, torch.ones(1, 1, x.shape[0], dtype=torch.bool))[0, 0].numpy()
    np.testing.assert_allclose(p, b.predict_numpy(x), atol=2e-3)


def test_logistic_needs_both_classes() -> None:
    px = TrainingPixels(
        0, 10, np.zeros(2), np.zeros(1), np.zeros(1), np.ones((10, 4)), np.zeros(10, np.uint8)
    )
    with pytest.raises(
        DataError, match="^training split: the logistic baseline needs PV and background pixels$"
    ):
        LogisticBaseline().fit(px)


def test_random_baseline_rate_and_determinism(cache) -> None:  # noqa: ANN001
    b = fit_baselines(cache, names=["random"], seed=5)["random"]
    masks = np.asarray(cache.masks[cache.indices("train")])
    rate = (masks == 1).sum() / (masks != 255).sum()
    assert b.rate == pytest.approx(rate) and b.threshold == pytest.approx(1 - rate)
    idx = cache.indices("test")
    raw = torch.from_numpy(np.asarray(cache.images[idx]))
    valid = torch.from_numpy(np.asarray(cache.valid[idx]))
    both = b(raw, valid, indices=idx)
    one = b(raw[1:], valid[1:], indices=idx[1:])  # another batching, same chip, same scores
    torch.testing.assert_close(both[1:], one)
    other = RandomBaseline(seed=6).fit(
        TrainingPixels(1, 3, *[np.zeros(1)] * 3, np.zeros((0, 4)), np.zeros(0, np.uint8))
    )
    assert not torch.equal(other(raw, valid, indices=idx), both)
    share = (both[valid] >= b.threshold).float().mean().item()
    assert share == pytest.approx(rate, abs=0.03)


def test_evaluate_baselines_same_sections(cache) -> None:  # noqa: ANN001
    evals = evaluate_baselines(cache, "test", n_grid=1, sample_size=2000)
    assert set(evals) == {"random", "nir_threshold", "logistic"}
    for name, e in evals.items():
        assert set(e.metrics) == set(SECTIONS)
        assert e.metrics["model"]["name"] == name
        assert e.metrics["data"]["split"] == "test"
    assert evals["nir_threshold"].metrics["pixel"]["f1"] == pytest.approx(1.0)
    assert evals["random"].metrics["pixel"]["f1"] < 0.6


def test_baselines_cli_writes_outputs(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert (
        main(
            [
                "baselines",
                str(planted),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--seed",
                "1",
                "--sample-size",
                "3000",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["baselines"]) == {"random", "nir_threshold", "logistic"}
    assert m["baselines"]["logistic"]["model"]["params"]["fit_pixels"] == 3000
    html = (out / "report.html").read_text()
    assert 'id="comparison"' in html and html.count("data:image/png;base64,") >= 12
    # deterministic for the seed
    again = run_baselines(planted, "test", None, seed=1, device="cpu", sample_size=3000)
    for name in m["baselines"]:
        assert again["baselines"][name]["pixel"] == m["baselines"][name]["pixel"]
        assert again["baselines"][name]["model"] == m["baselines"][name]["model"]


def test_baselines_cli_errors(
    planted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_train = write_planted(tmp_path / "nt", {"test": 1})
    assert main(["baselines", str(no_train), "--out", str(tmp_path / "o")]) == 2
    *warnings, err = capsys.readouterr().err.splitlines()  # the error comes last, on one line
    assert all(w.startswith("warning: ") for w in warnings)
    assert err.startswith("pvdetect baselines: error:") and "no training chips" in err
    assert main(["baselines", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    assert (
        main(
            [
                "baselines",
                str(planted),
                "--split",
                "val",
                "--out",
                str(tmp_path / "o"),
                "--sample-size",
                "5",
            ]
        )
        == 2
    )
    assert "--sample-size" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()
