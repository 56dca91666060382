"""Start-up errors of ``pvdetect train``: one line, exit 2, and no run folder left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pvdetect import cli
from pvdetect.synth.dataset import generate_dataset

FAST = [
    "--weights", "none", "--batch-size", "2", "--val-batch-size", "2", "--epochs", "1",
    "--max-train-batches", "1", "--num-workers", "0", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "ds"
    generate_dataset(out, chips=10, scenes=0, seed=1, chip_size=64)
    return out


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    """The one error line (progress lines may precede it), and no traceback."""
    text = capsys.readouterr().err
    assert "Traceback" not in text
    err = [line for line in text.strip().splitlines() if line.startswith("pvdetect train: error:")]
    assert len(err) == 1, text
    return err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_without_cuda(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    code = cli.main(["train", str(dataset), "--out", str(run), "--accelerator", "gpu", *FAST])
    assert code == 2
    assert "--accelerator gpu: CUDA is not available" in _one_line_error(capsys)
    assert not run.exists()


def test_setup_failure_leaves_no_run_folder(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    code = cli.main(["train", str(dataset), "--out", str(run), "--strategy", "warp", *FAST])
    assert code == 2
    assert "cannot set up training" in _one_line_error(capsys)
    assert not run.exists()


def test_resume_from_broken_or_foreign_checkpoints(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", str(dataset), "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    last = run / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 3])  # truncated by a full disk or a kill
    assert cli.main(["train", str(dataset), "--out", str(run), "--resume", *FAST]) == 2
    assert "not a readable checkpoint" in _one_line_error(capsys)
    torch.save({"weights": torch.zeros(3)}, last)  # someone else's file
    assert cli.main(["train", str(dataset), "--out", str(run), "--resume", *FAST]) == 2
    assert "not a pvdetect training checkpoint" in _one_line_error(capsys)
    last.write_bytes(good)  # a real checkpoint, but of another network
    code = cli.main(["train", str(dataset), "--out", str(run), "--resume", "--arch", "fpn", *FAST])
    assert code == 2
    assert "checkpoint of another network than fpn/resnet18" in _one_line_error(capsys)
    assert (run / "bundle" / "bundle.json").is_file()  # the finished run is left as it was


@pytest.mark.parametrize(
    ("flags", "extra"),
    [(["--tensorboard"], "tensorboard"), (["--upscale-factor", "2", "--upscale-method", "sr",
                                           "--sr-weights", "x.pth"], "sr")],
)  # fmt: skip
def test_missing_extra_is_named(
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    extra: str,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "spandrel", None)
    (tmp_path / "x.pth").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert cli.main(["train", str(dataset), "--out", str(run), *flags, *FAST]) == 2
    assert f"pip install 'pvdetect[{extra}]'" in _one_line_error(capsys)
    assert not run.exists()


def test_a_bad_exclusion_list_is_one_line(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    missing = tmp_path / "missing.txt"
    code = cli.main(["train", str(dataset), "--out", str(run), "--exclude", str(missing), *FAST])
    assert code == 2
    assert _one_line_error(capsys).endswith(f"data.exclude: {missing}: no such file")
    typo = tmp_path / "typo.txt"
    typo.write_text("train/input/img(1).tif\ntrain/input/img(77).tif\n")
    code = cli.main(["train", str(dataset), "--out", str(run), "--exclude", str(typo), *FAST])
    assert code == 2
    line = _one_line_error(capsys)
    assert line.endswith("exclude entry 'train/input/img(77).tif' names no chip"), line
    assert f"data.exclude ({dataset})" in line
    assert not run.exists()
