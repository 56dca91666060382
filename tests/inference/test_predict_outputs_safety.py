"""predict into a folder: stale temporaries of a killed run are removed, a full disk is one
clear error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from pvdetect.cli import main
from pvdetect.data.raster import write_raster
from pvdetect.model.bundle import BundleMeta, save_bundle
from pvdetect.model.factory import build_model

STATS = {"mean": [1000.0] * 4, "std": [500.0] * 4, "p2": [0.0] * 4, "p98": [3000.0] * 4}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=STATS, tile_size=256, overlap=32)
    return save_bundle(
        tmp_path_factory.mktemp("b") / "bundle", build_model("unet", "resnet18"), meta
    )


def _scene(path: Path, size: int) -> Path:
    rng = np.random.default_rng(0)
    arr = rng.uniform(0, 3000, (4, size, size)).astype(np.float32)
    t = Affine(10, 0, 500_000, 0, -10, 5_300_000)
    return write_raster(path, arr, crs="EPSG:32633", transform=t, nodata=-9999)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_stale_temporaries_of_a_killed_run_are_removed(bundle: Path, tmp_path: Path) -> None:
    scene = _scene(tmp_path / "scene.tif", 64)
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    work = out / f".scene.work-{dead}-abc123"
    work.mkdir()
    (work / "prob.tif").write_bytes(b"x" * 4096)
    part = out / f".scene_prob.p{dead}.k2j4.part.tif"
    part.write_bytes(b"x" * 4096)
    alive = out / ".scene_mask.p1.zz99.part.tif"  # pid 1 runs and is older than the file
    alive.write_bytes(b"y")
    mine = out / "notes.part.tif"  # not a pvdetect temporary name
    mine.write_bytes(b"z")
    assert main(["predict", str(bundle), str(scene), "--out", str(out), "--device", "cpu"]) == 0
    assert not work.exists() and not part.exists()
    assert alive.exists() and mine.exists()
    assert (out / "scene_prob.tif").is_file()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tmpfs"
)
def test_full_disk_is_one_clear_error(bundle: Path, tmp_path: Path) -> None:
    """A 256 KiB tmpfs cannot hold the rasters of a 512 px scene."""
    scene = _scene(tmp_path / "scene.tif", 512)
    out = tmp_path / "small"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(out)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        run = subprocess.run(
            [sys.executable, "-m", "pvdetect", "predict", str(bundle), str(scene), "--out",
             str(out), "--device", "cpu"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2, run.stderr
        assert lines == [
            f"pvdetect predict: error: {out}: no space left on the device (the disk is full); "
            "free some space or choose another output folder, then run again"
        ]
        # nothing half-written left behind: only the run's log, which tells what happened
        assert [p.name for p in out.iterdir()] in ([], ["pvdetect.log"])
    finally:
        for _ in range(5):
            if subprocess.run(["umount", str(out)]).returncode == 0:
                break
            time.sleep(0.5)
