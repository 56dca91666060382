"""End-to-end tests of ``pvdetect train``: run folder, bundle, resume, DDP, errors."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pvdetect import cli
from pvdetect.config import load_config
from pvdetect.device import resolve_precision
from pvdetect.model.bundle import load_bundle
from pvdetect.synth.dataset import generate_dataset
from pvdetect.training.metrics_file import METRIC_COLUMNS

REPO = Path(__file__).resolve().parents[2]

# tiny but real: unet/resnet18 on 64 px chips, 2 batches of 2 per epoch
FAST = [
    "--weights", "none", "--batch-size", "2", "--val-batch-size", "2",
    "--max-train-batches", "2", "--num-workers", "0", "--no-progress", "--seed", "7",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "ds"
    generate_dataset(out, chips=14, scenes=0, seed=0, chip_size=64)  # 10 train, 2 val, 2 test
    return out


@pytest.fixture(scope="module")
def full_run(dataset: Path) -> Path:
    """Two uninterrupted epochs with TensorBoard logging."""
    run = dataset.parent / "run_full"
    code = cli.main(["train", str(dataset), "--out", str(run), "--epochs", "2", "--tensorboard",
                     *FAST])  # fmt: skip
    assert code == 0
    return run


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_run_folder_contents(full_run: Path, dataset: Path, capsys: pytest.CaptureFixture) -> None:
    for name in (
        "config.yaml",
        "metrics.csv",
        "curves.png",
        "bundle/bundle.json",
        "bundle/model.safetensors",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (full_run / name).is_file(), name  # fmt: skip
    assert list((full_run / "logs").glob("events.out.tfevents*"))
    curves = np.asarray(Image.open(full_run / "curves.png").convert("RGB"))
    assert curves.shape[0] > 100 and curves.shape[1] > 100
    assert (curves < 250).any(axis=-1).mean() > 0.02  # something is drawn
    # resolved config, reusable as --config
    cfg = load_config(full_run / "config.yaml")
    assert cfg.data.root == str(dataset.resolve()) and cfg.out == str(full_run.resolve())
    assert cfg.epochs == 2 and cfg.data.batch_size == 2 and cfg.model.weights is None
    assert cfg.resume is False and cfg.tensorboard is True
    # metrics.csv: one row per epoch, finite numbers
    rows = _rows(full_run / "metrics.csv")
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for r in rows:
        for col in ("train_loss", "val_loss", "train_iou", "val_iou", "val_f1", "lr"):
            assert math.isfinite(float(r[col])), (r["epoch"], col)
        assert 0 <= float(r["val_iou"]) <= 1 and float(r["lr"]) == pytest.approx(1e-3)
    # bundle.json
    meta = json.loads((full_run / "bundle" / "bundle.json").read_text())
    assert meta["arch"] == "unet" and meta["encoder"] == "resnet18" and meta["in_channels"] == 4
    assert meta["band_order"] == ["Red", "Green", "Blue", "NIR"]
    assert set(meta["band_stats"]) == {"mean", "std", "p2", "p98"}
    assert 500 < meta["band_stats"]["mean"][3] < 6000  # NIR reflectance x 10000
    assert 0 < meta["threshold"] < 1 and meta["threshold_metric"] == "f1"
    assert meta["upscale"] == {"factor": 1, "method": "bicubic", "sr_weights": None}
    assert meta["tile_size"] == 64 and meta["overlap"] == 16
    assert len(meta["data_fingerprint"]) >= 8
    vm = meta["val_metrics"]
    assert vm["threshold"] == meta["threshold"]
    assert vm["tp"] + vm["fp"] + vm["tn"] + vm["fn"] > 0 and 0 <= vm["iou"] <= vm["f1"] <= 1
    assert vm["windows_mirrored"] is False
    # the bundle loads and predicts
    bundle = load_bundle(full_run / "bundle")
    probs = bundle.predict_probs(torch.rand(1, 4, 64, 64) * 3000, torch.ones(1, 64, 64, dtype=bool))
    assert probs.shape == (1, 64, 64) and 0 <= float(probs.min()) <= float(probs.max()) <= 1
    # the bundle holds the weights of best.ckpt
    best = _weights(full_run / "checkpoints" / "best.ckpt")
    for k, v in bundle.model.state_dict().items():
        torch.testing.assert_close(v, best[f"model.{k}"])


def test_resume_gives_the_same_result_and_extends(full_run: Path, dataset: Path) -> None:
    run = dataset.parent / "run_resumed"
    base = ["train", str(dataset), "--out", str(run), *FAST]
    assert cli.main([*base, "--epochs", "1"]) == 0
    assert len(_rows(run / "metrics.csv")) == 1
    # a second start without --resume refuses to overwrite the run
    assert cli.main([*base, "--epochs", "1"]) == 2
    # --resume with a larger --epochs extends the finished run (saved config + override)
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    rows, ref = _rows(run / "metrics.csv"), _rows(full_run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for a, b in zip(rows, ref, strict=True):
        for col in ("train_loss", "val_loss", "val_iou"):
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-4, abs=1e-6)
    got, want = (
        _weights(run / "checkpoints" / "last.ckpt"),
        _weights(full_run / "checkpoints" / "last.ckpt"),
    )
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)
    ckpts = [torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
             for r in (run, full_run)]  # fmt: skip
    assert ckpts[0]["epoch"] == ckpts[1]["epoch"]
    assert ckpts[0]["global_step"] == ckpts[1]["global_step"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2


def test_killed_run_resumes_from_its_last_epoch(tmp_path: Path, dataset: Path) -> None:
    import signal
    import time

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pvdetect", "train", str(dataset), "--out", str(run),
           "--epochs", "40", "--val-every", "3", *FAST]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        csv_path = run / "metrics.csv"
        # epoch 1 does not validate; once the row of epoch 2 is written, its checkpoint is on disk
        while proc.poll() is None and not (csv_path.is_file() and len(_rows(csv_path)) >= 3):
            assert time.monotonic() < deadline, "training did not get through three epochs"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = len(_rows(run / "metrics.csv"))
    assert 3 <= done < 40
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert saved >= 1  # written after epochs that did not validate too
    resume = ["train", "--out", str(run), "--resume", "--epochs", str(saved + 2), "--no-progress"]
    assert cli.main(resume) == 0
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(saved + 2))


def test_resume_without_checkpoint_is_an_error(tmp_path: Path, dataset: Path, capsys) -> None:
    code = cli.main(["train", str(dataset), "--out", str(tmp_path / "r"), "--resume", *FAST])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pvdetect train: error: ") and "last.ckpt" in err and "\n" not in err


def test_bad_dataset_path_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere"
    code = cli.main(["train", str(missing), "--out", str(tmp_path / "run"), *FAST])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("pvdetect train: error: ") and str(missing) in err
    assert not (tmp_path / "run").exists()


def test_precision_auto_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 on a CPU only where it is native (emulated bf16 is ~8x slower than float32)."""
    import pvdetect.device as device

    assert device.cpu_bf16_fast() == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("32", "cpu") == "32"
    assert resolve_precision("16-mixed", "auto") == "16-mixed"
    for fast, want in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(device, "cpu_bf16_fast", lambda fast=fast: fast)
        assert resolve_precision("auto", "cpu") == want
        if not torch.cuda.is_available():
            assert resolve_precision("auto", "auto") == want
        assert device.autocast_dtype("cpu") == (torch.bfloat16 if fast else torch.float32)
        with device.autocast("cpu"):
            assert torch.is_autocast_enabled("cpu") == fast
            y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
        assert y.dtype == (torch.bfloat16 if fast else torch.float32)


def test_ddp_two_cpu_processes(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "pvdetect.cli",
        "train",
        str(dataset),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        *FAST,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr  # really two processes
    assert "run folder:" in proc.stdout and proc.stdout.count("run folder:") == 1
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    assert 0 < meta["threshold"] < 1
    vm = meta["val_metrics"]
    # both ranks' validation pixels are counted once (2 val chips of 64 x 64)
    assert 0 < vm["tp"] + vm["fp"] + vm["tn"] + vm["fn"] <= 2 * 64 * 64
    assert len(_rows(run / "metrics.csv")) == 1


def test_max_minutes_sets_a_time_limit(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import Timer

    from pvdetect.config import config_from_dict
    from pvdetect.errors import ConfigError
    from pvdetect.training.train import build_trainer

    cfg = config_from_dict(
        {
            "data": {"root": str(tmp_path)},
            "out": str(tmp_path / "r"),
            "max_minutes": 1.5,
            "accelerator": "cpu",
            "progress": False,
        }
    )
    trainer = build_trainer(cfg, tmp_path / "r")
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    assert len(timers) == 1 and timers[0]._duration == pytest.approx(90.0)
    with pytest.raises(ConfigError, match="max_minutes"):
        config_from_dict({"data": {"root": str(tmp_path)}, "max_minutes": 0})


def test_cosine_schedule_and_sparse_validation(tmp_path: Path, dataset: Path) -> None:
    run = tmp_path / "cos"
    args = ["--epochs", "5", "--schedule", "cosine", "--warmup", "0.2", "--lr", "0.004"]
    code = cli.main(["train", str(dataset), "--out", str(run), *args, "--val-every", "2", *FAST])
    assert code == 0
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    # validated after epochs 2 and 4 (every 2nd) and 5 (the last); the others are blank
    assert [bool(r["val_loss"]) for r in rows] == [False, True, False, True, True]
    lrs = [float(r["lr"]) for r in rows]  # 2 steps per epoch, 10 steps: warm-up of 2
    assert lrs[0] == pytest.approx(0.004, rel=1e-6)  # end of epoch 1: peak, decay starts
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 0.004 * 0.05
    cfg = load_config(run / "config.yaml")
    assert cfg.optim.schedule == "cosine" and cfg.val_every == 2
    # the bundle's validation loss is one of the logged ones (validated epochs only)
    bundle_loss = load_bundle(run / "bundle").meta.val_metrics["loss"]
    logged = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert any(bundle_loss == pytest.approx(v, rel=1e-5) for v in logged), (bundle_loss, logged)
    # every epoch still leaves a resumable checkpoint
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4


def test_mirrored_windows_calibrate_on_whole_chips(tmp_path: Path) -> None:
    from tests.fixtures import window_chip, write_brazil_dataset

    root = write_brazil_dataset(
        tmp_path / "cut", {"train": 4, "val": 2}, lambda s, n: window_chip(n), numbering="global"
    )
    counts = {}
    for name, extra in (("cut", []), ("mirrored", ["--mirror-windows"])):
        run = tmp_path / name
        code = cli.main(["train", str(root), "--out", str(run), "--epochs", "1", *extra, *FAST])
        assert code == 0
        vm = load_bundle(run / "bundle").meta.val_metrics
        assert vm["windows_mirrored"] is bool(extra)
        counts[name] = vm["tp"] + vm["fp"] + vm["tn"] + vm["fn"]
    # calibrated on the 2 validation chips' windows (32 x 40 px), or on the whole mirrored chips
    assert counts == {"cut": 2 * 32 * 40, "mirrored": 2 * 64 * 64}


def test_train_log_and_calibrated_iou(full_run: Path) -> None:
    """One line per epoch in RUN/train.log, without Lightning's bars, banners or adverts."""
    log = (full_run / "train.log").read_text()
    assert "\r" not in log
    for noise in ("GPU available", "Tip", "TPU available", "| Name", "LOCAL_RANK"):
        assert noise not in log
    epochs = [ln for ln in log.splitlines() if " epoch " in ln]
    assert len(epochs) == 2
    assert "epoch 0 [1/2]: train_loss " in epochs[0] and "val_iou_calibrated " in epochs[0]
    assert "epoch 1 [2/2]: " in epochs[1]
    assert "bundle " in log and "threshold" in log
    for r in _rows(full_run / "metrics.csv"):
        assert 0 <= float(r["val_iou_calibrated"]) <= 1 and 0 < float(r["val_threshold"]) < 1
    # the calibrated IoU of the best epoch is what the bundle (best.ckpt) reports
    meta = json.loads((full_run / "bundle" / "bundle.json").read_text())
    assert meta["val_metrics"]["checkpoint"] == "best.ckpt"
    best = min(_rows(full_run / "metrics.csv"), key=lambda r: float(r["val_loss"]))
    assert float(best["val_threshold"]) == pytest.approx(meta["threshold"], abs=1e-6)
    assert float(best["val_iou_calibrated"]) == pytest.approx(meta["val_metrics"]["iou"], rel=1e-5)
