"""``torchrun`` (``python -m torch.distributed.run``) launching ``pvdetect train --strategy ddp``:
two processes, one run folder, one bundle (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pvdetect.synth.dataset import generate_dataset

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_cpu_processes_one_run(tmp_path: Path) -> None:
    data, run = tmp_path / "ds", tmp_path / "run"
    generate_dataset(data, chips=14, scenes=0, seed=0, chip_size=64)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS",
                "MASTER_ADDR", "MASTER_PORT"):  # fmt: skip
        env.pop(var, None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--standalone",
        "-m", "pvdetect", "train", str(data), "--out", str(run),
        "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--epochs", "1",
        "--weights", "none", "--batch-size", "2", "--val-batch-size", "2",
        "--max-train-batches", "2", "--num-workers", "0", "--no-progress", "--seed", "3",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "MEMBER: 1/2" in out and "MEMBER: 2/2" in out  # two ranks of one job
    assert proc.stdout.count("run folder:") == 1  # rank 0 reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "run"]  # one run folder
    bundles = [p.parent for p in run.rglob("bundle.json")]
    assert bundles == [run / "bundle"]
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    assert 0 < meta["threshold"] < 1 and meta["val_metrics"]
    assert (run / "checkpoints" / "last.ckpt").is_file()
