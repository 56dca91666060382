"""Tests of pvdetect.logs and of what commands print: progress lines, bars, -q, log files."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from pvdetect import logs
from pvdetect.cli import main
from pvdetect.data.raster import write_raster
from pvdetect.model.bundle import BundleMeta, save_bundle
from pvdetect.model.factory import build_model

T = Affine(10, 0, 500010, 0, -10, 5300020)
STATS = {"mean": [1000.0] * 4, "std": [500.0] * 4, "p2": [0.0] * 4, "p98": [3000.0] * 4}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("logs")
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4)
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=STATS, tile_size=64, overlap=16)
    bundle = save_bundle(tmp / "bundle", model, meta)
    scenes = tmp / "scenes"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        arr = rng.uniform(0, 3000, (4, 70, 90)).astype(np.float32)
        write_raster(scenes / f"{name}.tif", arr, crs="EPSG:32633", transform=T)
    return bundle, scenes


def _predict(setup: tuple[Path, Path], out: Path, *extra: str) -> int:
    bundle, scenes = setup
    return main(["predict", str(bundle), str(scenes), "--out", str(out), "--device", "cpu",
                 "--no-overlay", *extra])  # fmt: skip


def test_a_line_per_scene_when_not_on_a_terminal(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _predict(setup, tmp_path / "out") == 0
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert len(lines) == 2 and "\r" not in cap.err
    assert lines[0].startswith("a.tif: 90x70 px, ") and lines[0].endswith("[1/2]")
    assert lines[1].startswith("b.tif: 90x70 px, ") and lines[1].endswith("[2/2]")
    assert cap.out.strip().startswith("wrote 2 scene(s)")
    log = (tmp_path / "out" / "pvdetect.log").read_text()
    assert "a.tif: 90x70 px" in log and "wrote 2 scene(s)" in log


def test_quiet_prints_nothing_but_errors(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _predict(setup, tmp_path / "out", "-q") == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    assert "b.tif: 90x70 px" in (tmp_path / "out" / "pvdetect.log").read_text()
    assert _predict(setup, tmp_path / "bad", "-q", "--tile", "50") == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith("pvdetect predict: error: --tile 50")
    assert len(cap.err.splitlines()) == 1
    # -v adds debug detail
    assert _predict(setup, tmp_path / "v", "-v") == 0
    assert "predict: bundle" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_on_a_terminal(
    setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert _predict(setup, tmp_path / "out") == 0
    text = term.getvalue()
    assert "\r" in text and "tile" in text and "scene" in text and "%" in text  # tqdm bars
    assert "a.tif: 90x70 px" in text  # the lines are printed above the bars


def test_log_file_gets_what_was_logged_before_it_existed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log = logging.getLogger("pvdetect.test")
    logs.setup(0, False, "test", ["test", "--x"])
    try:
        log.info("before")
        log.debug("hidden")
        assert logs.attach_file(tmp_path / "run.log") == tmp_path / "run.log"
        log.warning("after")
        logs.echo("result")
        assert not logs.bars_enabled()  # stderr is not a terminal here
    finally:
        logs.teardown()
    lines = [
        re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) +(.*)$", ln).groups()
        for ln in (tmp_path / "run.log").read_text().splitlines()
    ]
    assert lines == [("INFO", "pvdetect 0.1.0: pvdetect test --x"), ("INFO", "before"),
                     ("WARNING", "after"), ("INFO", "result")]  # fmt: skip
    cap = capsys.readouterr()
    assert cap.err == "before\nwarning: after\n" and cap.out == "result\n"
    # without a set-up (pvdetect as a library) no file is attached
    assert logs.attach_file(tmp_path / "lib.log") is None
    assert not (tmp_path / "lib.log").exists()


def test_lightning_banners_only_with_verbose() -> None:
    """Lightning's INFO messages (GPU banners, 'Tip' adverts) are hidden unless -v."""
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    try:
        logs.setup(0, False, "train")
        assert not lightning_log.isEnabledFor(logging.INFO)
        assert lightning_log.isEnabledFor(logging.WARNING)
        logs.setup(1, False, "train")
        assert lightning_log.isEnabledFor(logging.INFO)
    finally:
        logs.teardown()
        logs.quiet_lightning(False)
