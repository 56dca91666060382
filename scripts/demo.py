"""`make demo`: the whole pvdetect job end to end on built-in synthetic data.

Runs the same commands a user would type (printed before each step), then prints where the
results are and the headline figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def step(title: str, args: list[str]) -> None:
    """Run one ``pvdetect`` command, echoing it; stop the demo if it fails."""
    cmd = [sys.executable, "-m", "pvdetect.cli", *args]
    print(f"\n=== {title}\n$ pvdetect {shlex.join(args)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    if rc != 0:
        sys.exit(f"demo: step '{title}' failed with exit code {rc}")
    print(f"--- {title}: {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> int:
    """Synthesise, check, train, evaluate, compare with baselines, predict a scene."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--chips", type=int, default=160)
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--scene-size", type=int, default=1536)
    a = p.parse_args()
    out = a.out
    data, run, ev, base, pred = (out / n for n in ("data", "run", "eval", "baselines", "predict"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.perf_counter()
    step(
        "synthetic data",
        [
            "synth",
            str(data),
            "--chips",
            str(a.chips),
            "--scenes",
            "1",
            "--scene-size",
            str(a.scene_size),
            "--seed",
            "0",
        ],
    )
    step("check the dataset", ["check", str(data)])
    step(
        "train",
        [
            "train",
            str(data),
            "--out",
            str(run),
            "--arch",
            "unet",
            "--encoder",
            "resnet18",
            "--weights",
            "none",
            "--epochs",
            str(a.epochs),
            # the fixed-budget recipe: small crops (placed on PV half of the time), warm-up +
            # cosine decay, validation every 4 epochs
            *("--crop-size", "128", "--crop-pv", "0.5", "--batch-size", "8"),
            *("--lr", "2e-3", "--schedule", "cosine", "--val-every", "4"),
            "--seed",
            "0",
        ],
    )
    step("baselines", ["baselines", str(data), "--split", "test", "--out", str(base)])
    step(
        "evaluate",
        [
            "evaluate",
            str(run / "bundle"),
            str(data),
            "--split",
            "test",
            "--out",
            str(ev),
            "--baselines-json",
            str(base / "metrics.json"),
        ],
    )
    scenes = sorted(p for p in (data / "scenes").glob("*.tif") if not p.stem.endswith("_mask"))
    step("predict a scene", ["predict", str(run / "bundle"), *map(str, scenes), "--out", str(pred)])

    metrics = json.loads((ev / "metrics.json").read_text())
    baselines = json.loads((base / "metrics.json").read_text())["baselines"]
    px = metrics["pixel"]
    best_name, best = max(baselines.items(), key=lambda kv: kv[1]["pixel"]["iou"])
    print("\n=== results")
    print(
        f"model    (test): IoU {px['iou']:.3f}  F1 {px['f1']:.3f}  "
        f"precision {px['precision']:.3f}  recall {px['recall']:.3f}"
    )
    print(f"baseline {best_name}: IoU {best['pixel']['iou']:.3f}  F1 {best['pixel']['f1']:.3f}")
    for row in csv.DictReader((pred / "summary.csv").open()):
        print(f"scene {row['scene']}: {row['plants']} plants, {float(row['total_ha']):.1f} ha")
    for gpkg in sorted(pred.glob("*_plants.gpkg")):
        print_plants(gpkg)
    print(
        f"\nrun folder : {run}\nreport     : {ev / 'report.html'}\n"
        f"baselines  : {base / 'report.html'}\npredictions: {pred}"
    )
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


def print_plants(gpkg: Path, limit: int = 15) -> None:
    """The largest plants of one scene with their areas."""
    from pyogrio.raw import read

    meta, _, _, values = read(gpkg, layer="plants", read_geometry=False)
    cols = dict(zip(meta["fields"], values, strict=True))
    order = sorted(range(len(cols["area_ha"])), key=lambda i: -cols["area_ha"][i])
    print(f"{gpkg.name}: {len(order)} plants (largest first)")
    print("    id   area_ha  mean_prob  max_prob")
    for i in order[:limit]:
        print(
            f"  {cols['id'][i]:4d}  {cols['area_ha'][i]:8.2f}  {cols['mean_prob'][i]:9.2f}"
            f"  {cols['max_prob'][i]:8.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
