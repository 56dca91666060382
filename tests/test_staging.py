"""Tests of pvdetect.staging through ``pvdetect synth``: staged, marked, never destructive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvdetect.cli import main
from pvdetect.staging import MARKER
from tests.synth.chips import chip_pairs, read_sites

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--chips", "3", "--scenes", "0", "--chip-size", "32"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["synth", str(out), "--chips", "5", "--scenes", "1", "--scene-size", "64",
            "--chip-size", "64", "--seed", "1"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "chips: 5" in text and str(out / "scenes" / "scene01_brazil.tif") in text
    assert len(chip_pairs(out)) == 5 and (out / "sites.csv").exists() and (out / MARKER).exists()
    assert main(argv) == 2  # refuses to mix with an existing dataset
    err = capsys.readouterr().err
    assert err.startswith("pvdetect synth: error: ") and "--overwrite" in err
    assert main([*argv[:3], "4", *argv[4:], "--overwrite"]) == 0
    assert len(chip_pairs(out)) == 4
    assert len(read_sites(out)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "temporary folder left"
    assert main(["synth", str(tmp_path / "x"), "--chips", "2"]) == 2
    assert "at least 3" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_empty_folder_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["synth", str(out), *SMALL]) == 0
    assert len(chip_pairs(out)) == 3 and (out / MARKER).exists()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_plain_file_at_out_is_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overwrite: list[str]
) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    assert main(["synth", str(a_file), *SMALL, *overwrite]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {a_file}: " in err and "not a folder" in err
    assert a_file.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_foreign_folder_at_out_is_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overwrite: list[str]
) -> None:
    """A folder pvdetect did not write (here: someone's own chips) is never replaced."""
    out = tmp_path / "mine"
    (out / "train" / "input").mkdir(parents=True)
    (out / "train" / "input" / "img(1).tif").write_bytes(b"my own chip")
    (out / "sites.csv").write_text("split,n,site,date\n")
    (out / "notes.txt").write_text("keep me")
    before = _tree(out)
    assert main(["synth", str(out), *SMALL, *overwrite]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {out}: " in err and MARKER in err
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_killed_run_leaves_no_dataset_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "pvdetect", "synth", str(out), "--chips", "120",
           "--chip-size", "128", "--scenes", "1", "--scene-size", "512"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / f".ds.partial-{proc.pid}"
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("*/*/input/img(*).tif")) and not list(
            tmp_path.glob(".*/*/input/img(*).tif")
        ):
            assert proc.poll() is None, "synth ended before any chip was seen"
            assert time.monotonic() < deadline, "no chip written within 60 s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists(), "a killed run left a dataset under the final name"
    assert (partial / MARKER).exists() and chip_pairs(partial)
    alive = tmp_path / ".ds.partial-1"  # pid 1 lives and is older than the folder: kept
    alive.mkdir()
    (alive / MARKER).write_text('{"tool": "pvdetect synth"}')
    assert main(["synth", str(out), *SMALL]) == 0
    assert not partial.exists(), "stale folder of the killed run not removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.partial-1", "ds"]
    assert len(chip_pairs(out)) == 3 and len(read_sites(out)) == 3
