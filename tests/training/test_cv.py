"""End-to-end: ``pvdetect train --cv 2``: fold runs, the summary files, resuming."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from pvdetect import cli
from pvdetect.config import load_config
from pvdetect.data.sources import cv_splits
from pvdetect.synth.dataset import generate_dataset
from pvdetect.training.sources import open_sources

FAST = [
    "--weights", "none", "--batch-size", "2", "--val-batch-size", "4", "--epochs", "1",
    "--max-train-batches", "1", "--num-workers", "0", "--no-progress", "--seed", "3",
    "--precision", "32",  # bf16 autocast is ~10x slower on CPUs without native bf16
]  # fmt: skip


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset with 3 training/validation sites and the run folder to use."""
    base = tmp_path_factory.mktemp("cv")
    data = base / "ds"
    generate_dataset(data, chips=14, scenes=0, seed=0, chip_size=64)
    return data, base / "run"


def test_cv_writes_the_folds_and_their_spread(
    cv_run: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    data, run = cv_run
    assert cli.main(["train", str(data), "--out", str(run), "--cv", "2", *FAST]) == 0
    printed = capsys.readouterr().out
    line = next(s for s in printed.splitlines() if s.startswith("cross-validation"))
    assert "2 folds" in line and "IoU" in line and "+-" in line
    cfg = load_config(run / "config.yaml")
    assert cfg.cv == 2 and cfg.cv_fold is None
    folds = [run / "fold-1", run / "fold-2"]
    sset = open_sources(cfg.data, seed=cfg.seed)
    test_keys = {r.key for r in sset.records if r.split == "test"}
    val_sites = []
    for k, folder in enumerate(folds, start=1):
        for name in ("config.yaml", "metrics.csv", "bundle/bundle.json", "checkpoints/last.ckpt"):
            assert (folder / name).is_file(), (folder, name)
        fold_cfg = load_config(folder / "config.yaml")
        assert (fold_cfg.cv, fold_cfg.cv_fold, fold_cfg.out) == (2, k, str(folder))
        # the fold validated on its own sites: the counts are those of its chips' pixels
        fold = cv_splits(sset, 2, k, seed=cfg.seed)
        val = fold.indices("val")
        labelled = sum(int(((fold.masks[int(i)] != 255) & fold.valid[int(i)]).sum()) for i in val)
        vm = json.loads((folder / "bundle" / "bundle.json").read_text())["val_metrics"]
        assert vm["tp"] + vm["fp"] + vm["fn"] + vm["tn"] == labelled
        assert {fold.records[int(i)].key for i in fold.indices("test")} == test_keys
        val_sites.append({fold.records[int(i)].site for i in val})
    assert not val_sites[0] & val_sites[1]
    assert val_sites[0] | val_sites[1] == {r.site for r in sset.records if r.split != "test"}
    # cv.json: per fold and the spread over the folds
    doc = json.loads((run / "cv.json").read_text())
    ious = [f["metrics"]["iou"] for f in doc["per_fold"]]
    s = doc["summary"]["iou"]
    assert doc["folds"] == 2 and [f["fold"] for f in doc["per_fold"]] == [1, 2]
    assert s["mean"] == pytest.approx(sum(ious) / 2)
    assert s["std"] == pytest.approx(abs(ious[0] - ious[1]) / 2**0.5)
    assert (s["min"], s["max"]) == (pytest.approx(min(ious)), pytest.approx(max(ious)))
    with (run / "cv.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["fold"] for r in rows] == ["1", "2", "mean", "std", "min", "max"]
    assert float(rows[2]["iou"]) == pytest.approx(s["mean"], rel=1e-5)
    # a second start without --resume refuses to overwrite it
    assert cli.main(["train", str(data), "--out", str(run), "--cv", "2", *FAST]) == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_a_killed_cv_run_resumes_the_missing_folds(cv_run: tuple[Path, Path]) -> None:
    data, run = cv_run
    if not (run / "cv.json").is_file():
        pytest.skip("needs the cross-validation of the previous test")
    before = json.loads((run / "cv.json").read_text())
    kept = (run / "fold-1" / "bundle" / "bundle.json").stat().st_mtime_ns
    shutil.rmtree(run / "fold-2")  # as if killed before fold 2 started
    (run / "cv.json").unlink()
    assert cli.main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert (run / "fold-1" / "bundle" / "bundle.json").stat().st_mtime_ns == kept
    after = json.loads((run / "cv.json").read_text())
    assert [f["fold"] for f in after["per_fold"]] == [1, 2]
    # fold 2 run again from scratch gives what it gave the first time (seeded)
    assert after["per_fold"][1]["metrics"]["loss"] == pytest.approx(
        before["per_fold"][1]["metrics"]["loss"], rel=1e-4
    )
