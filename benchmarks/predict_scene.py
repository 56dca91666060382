"""Benchmark of whole-scene prediction: throughput and peak memory versus scene size.

Measures, for square scenes of the given sizes (default 1024 and 4096 px):

- throughput of :func:`~pvdetect.inference.predict.predict_scene` (all outputs: COG rasters,
  polygons, overlay) in megapixels/s, against a bare batched forward pass over the same number
  of tiles
  (``Bundle.predict_probs`` on tensors already on the device), goal ratio >= 0.8;
- peak resident memory (``ru_maxrss`` of a fresh subprocess per scene) of ``predict_scene``
  and of a prototype-style prediction that reads the whole scene and keeps full-size
  accumulators in memory; goal for ``predict_scene``: largest / smallest <= 1.3.

Scenes come from ``pvdetect.synth.scene.generate_scene`` when available, else random 4-band
float32 rasters written by strips. The model is a unet/resnet18 trained for about a minute on
synthetic chips (``--model trained``, default: masks like a real model's, so polygons and the
overlay cost what they cost in use) or randomly initialised (``--model random``).
Results are printed and saved to ``bench_out/predict_scene.json``.

Usage: ``python benchmarks/predict_scene.py [--sizes 1024,4096] [--quick] [--device auto]``
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STATS = {
    "mean": [900.0, 850.0, 700.0, 2500.0],
    "std": [500.0, 450.0, 400.0, 900.0],
    "p2": [100.0] * 4,
    "p98": [4000.0] * 4,
}


def make_scene(path: Path, size: int, seed: int = 0) -> str:
    """Write a ``size`` x ``size`` scene; returns how it was made."""
    try:
        from pvdetect.synth.scene import generate_scene
    except ImportError:
        generate_scene = None
    if generate_scene is not None:
        generate_scene(path, path.with_name(path.stem + "_truth.tif"), size, seed)
        return "synthetic.generate_scene"
    import rasterio
    from affine import Affine

    from pvdetect.data.raster import geotiff_profile

    prof = geotiff_profile(
        height=size,
        width=size,
        count=4,
        dtype="float32",
        crs="EPSG:32633",
        transform=Affine(10, 0, 500000, 0, -10, 5300000),
        nodata=-9999.0,
    )
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **prof) as dst:
        for r0 in range(0, size, 256):
            rows = min(256, size - r0)
            block = rng.uniform(0, 4000, (4, rows, size)).astype(np.float32)
            dst.write(block, window=rasterio.windows.Window(0, r0, size, rows))
    return "random strips"


def make_bundle(path: Path, tile: int, overlap: int) -> Path:
    """Save a random unet/resnet18 bundle."""
    import torch

    from pvdetect.model.bundle import BundleMeta, save_bundle
    from pvdetect.model.factory import build_model

    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4)
    meta = BundleMeta(
        arch="unet", encoder="resnet18", band_stats=STATS, tile_size=tile, overlap=overlap
    )
    return save_bundle(path, model, meta)


def make_trained_bundle(work: Path, tile: int, overlap: int, device: str) -> Path:
    """A unet/resnet18 bundle trained briefly on synthetic chips (about a minute on a CPU).

    Its masks look like a real model's (a few per cent PV, in blobs), so polygons and the
    overlay cost what they cost in real use; a random network marks most pixels as PV, one
    huge polygon full of holes.
    """
    from pvdetect.config import config_from_dict
    from pvdetect.model.bundle import load_bundle, save_bundle
    from pvdetect.synth.dataset import generate_dataset
    from pvdetect.training.train import train

    data = work / "chips"
    generate_dataset(data, chips=48, scenes=0, seed=1)
    accel = "cpu" if device == "cpu" else "auto"
    cfg = config_from_dict(
        {
            "data": {"root": str(data), "crop_size": 128, "crop_pv": 0.5, "batch_size": 8,
                     "num_workers": 0},
            "model": {"arch": "unet", "encoder": "resnet18", "weights": None},
            "optim": {"lr": 0.002, "schedule": "cosine"},
            "epochs": 8,
            "val_every": 8,
            "accelerator": accel,
            "progress": False,
            "out": str(work / "run"),
        }
    )  # fmt: skip
    run = train(cfg)
    bundle = load_bundle(run / "bundle")
    bundle.meta.tile_size, bundle.meta.overlap = tile, overlap
    return save_bundle(work / "bundle", bundle.model, bundle.meta)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_forward(bundle, plan, batch_size: int, tta: bool = False) -> float:
    """Seconds for a batched forward pass over the plan's tiles, data already on the device."""
    import torch

    t = plan.tile
    x = torch.rand(batch_size, 4, t, t, device=bundle.device) * 3000
    v = torch.ones(batch_size, t, t, dtype=torch.bool, device=bundle.device)
    per_row = len(plan.xs)
    batches = [min(batch_size, per_row - b) for b in range(0, per_row, batch_size)]
    bundle.predict_probs(x, v, tta=tta)  # warm-up
    _sync(bundle.device)
    start = time.perf_counter()
    for _ in plan.ys:
        for b in batches:
            out = bundle.predict_probs(x[:b], v[:b], tta=tta)
    _sync(bundle.device)
    del out
    return time.perf_counter() - start


def prototype_predict(bundle, scene: Path, out: Path, tile: int, overlap: int, batch: int) -> None:
    """Prototype-style prediction: whole scene and full-size accumulators in memory."""
    import torch

    from pvdetect.data.raster import read_raster, valid_pixels, write_raster
    from pvdetect.inference.tiling import blend_window, tile_starts

    img, info = read_raster(scene)
    valid = valid_pixels(img, info.nodata)
    img[:, ~valid] = 0
    h, w = valid.shape
    acc = np.zeros((h, w), np.float32)
    wsum = np.zeros((h, w), np.float32)
    win = blend_window(tile)
    coords = [
        (y, x)
        for y in tile_starts(h, tile, tile - overlap)
        for x in tile_starts(w, tile, tile - overlap)
    ]
    for i in range(0, len(coords), batch):
        cs = coords[i : i + batch]
        xb = torch.from_numpy(np.stack([img[:, y : y + tile, x : x + tile] for y, x in cs]))
        vb = torch.from_numpy(np.stack([valid[y : y + tile, x : x + tile] for y, x in cs]))
        probs = bundle.predict_probs(xb, vb).cpu().numpy()
        for (y, x), p, v in zip(cs, probs, vb.numpy(), strict=True):
            ww = win * v
            acc[y : y + tile, x : x + tile] += p * ww
            wsum[y : y + tile, x : x + tile] += ww
    prob = np.where(wsum > 0, acc / np.maximum(wsum, 1e-12), -9999).astype(np.float32)
    write_raster(out / "proto_prob.tif", prob, crs=info.crs, transform=info.transform)


def _proc_status_mb(key: str) -> float:
    """A memory line (VmRSS, VmHWM) of /proc/self/status in MB (NaN where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _stub_vectors_if_no_pyogrio() -> str:
    """Where pyogrio is missing (a bare GPU machine), write empty vector files instead."""
    try:
        import pyogrio  # noqa: F401
    except ImportError:
        import pvdetect.inference.predict as pred

        def touch(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            Path(path).write_bytes(b"")
            return Path(path)

        pred.write_plants = touch
        return "skipped (pyogrio missing)"
    return "written"


def child(args: argparse.Namespace) -> None:
    """Run one prediction in this (fresh) process and print its peak memory as JSON.

    Reports the process peak (``ru_maxrss``) and, separately, the peak during the prediction
    alone: after loading the bundle and one warm-up batch, the high-water mark is reset.
    """
    import torch

    from pvdetect.device import resolve_device
    from pvdetect.inference.predict import PredictOptions, predict_scene
    from pvdetect.model.bundle import load_bundle

    _stub_vectors_if_no_pyogrio()
    bundle = load_bundle(args.bundle, device=resolve_device(args.device))
    t = args.tile
    bundle.predict_probs(  # warm-up: model workspaces are part of the baseline
        torch.rand(args.batch_size, 4, t, t) * 3000, torch.ones(args.batch_size, t, t, dtype=bool)
    )
    baseline = _proc_status_mb("VmRSS")
    reset = _reset_peak_rss()
    out = Path(args.out_dir)
    start = time.perf_counter()
    if args.child == "predict":
        opts = PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)
        predict_scene(bundle, args.scene, out, opts)
    else:
        prototype_predict(bundle, Path(args.scene), out, args.tile, args.overlap, args.batch_size)
    seconds = time.perf_counter() - start
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = torch.cuda.max_memory_allocated() if bundle.device.type == "cuda" else 0
    run_peak = _proc_status_mb("VmHWM") if reset else math.nan
    print(
        json.dumps(
            {
                "process_peak_rss_mb": rss_kb / 1024,
                "baseline_rss_mb": baseline,
                "run_peak_rss_mb": run_peak,
                "gpu_peak_mb": gpu / 2**20,
                "seconds": seconds,
            }
        )
    )


def _peak(mem: dict) -> float:
    """Peak RSS during the run (falls back to the process peak without /proc)."""
    v = mem["run_peak_rss_mb"]
    return v if not math.isnan(v) else mem["process_peak_rss_mb"]


def run_child(kind: str, bundle: Path, scene: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--bundle", str(bundle)]
    cmd += ["--scene", str(scene), "--out-dir", str(out), "--tile", str(args.tile)]
    cmd += ["--overlap", str(args.overlap), "--batch-size", str(args.batch_size)]
    cmd += ["--device", args.device]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1024,4096", help="scene sides, comma-separated")
    p.add_argument("--quick", action="store_true", help="small sizes (256,1024), one repeat")
    p.add_argument("--device", default="auto")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument(
        "--batch-size", type=int, default=None, help="default: pvdetect's for the device (4 / 16)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--model",
        choices=["trained", "random"],
        default="trained",
        help="a briefly trained network (realistic masks, default) or random weights",
    )
    p.add_argument("--out", type=Path, default=REPO / "bench_out")
    p.add_argument("--no-prototype", action="store_true", help="skip the prototype memory runs")
    # internal: one measurement in a subprocess
    p.add_argument("--child", choices=["predict", "prototype"], help=argparse.SUPPRESS)
    p.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    import torch

    from pvdetect.device import resolve_device
    from pvdetect.inference.predict import PredictOptions, predict_scene
    from pvdetect.inference.tiling import plan_scene
    from pvdetect.model.bundle import load_bundle

    sizes = (
        [256, 1024]
        if args.quick and args.sizes == "1024,4096"
        else [int(s) for s in args.sizes.split(",")]
    )
    repeats = 1 if args.quick else args.repeats
    device = resolve_device(args.device)
    if args.batch_size is None:
        from pvdetect.inference.tiling import default_batch_size

        args.batch_size = default_batch_size(device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result: dict = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "tile": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "model": "unet/resnet18 "
        + (
            "(trained 8 short epochs on synthetic chips)"
            if args.model == "trained"
            else "(random weights)"
        ),
        "scenes": {},
        "vector_files": _stub_vectors_if_no_pyogrio(),
    }
    with tempfile.TemporaryDirectory(prefix="pvbench-") as tmp_s:
        tmp = Path(tmp_s)
        if args.model == "trained":
            t0 = time.perf_counter()
            bundle_path = make_trained_bundle(tmp / "trained", args.tile, args.overlap, args.device)
            print(f"model trained in {time.perf_counter() - t0:.0f} s", flush=True)
        else:
            bundle_path = make_bundle(tmp / "bundle", args.tile, args.overlap)
        bundle = load_bundle(bundle_path, device=device)
        opts = PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)
        for size in sizes:
            scene = tmp / f"scene_{size}.tif"
            t0 = time.perf_counter()
            result["scene_source"] = make_scene(scene, size)
            print(f"[{size}] scene written in {time.perf_counter() - t0:.1f} s", flush=True)
            plan = plan_scene(bundle, scene, opts)
            mp = size * size / 1e6
            # prediction and bare forward pass alternate, so that load from other programs hits
            # both alike; on a GPU a first unmeasured round warms up (cudnn autotune, allocator)
            times, bares = [], []
            if device.type == "cuda":
                predict_scene(bundle, scene, tmp / f"out_{size}_warm", opts)
                bare_forward(bundle, plan, args.batch_size)
            for r in range(repeats):
                res = predict_scene(bundle, scene, tmp / f"out_{size}_{r}", opts)
                times.append(res.seconds)
                bares.append(bare_forward(bundle, plan, args.batch_size))
            t_pred = min(times)
            t_bare = min(bares)
            paired = sorted(b / t for b, t in zip(bares, times, strict=True))
            entry = {
                "megapixels": mp,
                "predict_timings_s": res.timings,
                "tiles_stage_ratio": t_bare / min(res.timings.get("tiles", t_pred), t_pred),
                "tiles": plan.n_tiles,
                "plants": res.plants,
                "predict_scene_s": t_pred,
                "predict_scene_mpx_s": mp / t_pred,
                "bare_forward_s": t_bare,
                "bare_forward_mpx_s": mp / t_bare,
                "throughput_ratio": t_bare / t_pred,
                "throughput_ratio_paired_median": paired[len(paired) // 2],
                "predict_scene_s_all": times,
                "bare_forward_s_all": bares,
            }
            stages = {k: round(v, 2) for k, v in res.timings.items()}
            print(
                f"[{size}] predict_scene {mp / t_pred:.2f} MP/s ({t_pred:.2f} s), bare forward "
                f"{mp / t_bare:.2f} MP/s ({t_bare:.2f} s), ratio {t_bare / t_pred:.2f} "
                f"(paired runs: median {paired[len(paired) // 2]:.2f}); "
                f"{res.plants} plants; stages {stages}",
                flush=True,
            )
            mem = run_child("predict", bundle_path, scene, tmp / f"mem_{size}", args)
            entry["predict_memory"] = mem
            entry["predict_peak_rss_mb"] = _peak(mem)
            msg = (
                f"[{size}] peak RSS predict_scene {_peak(mem):.0f} MB "
                f"(baseline {mem['baseline_rss_mb']:.0f} MB)"
            )
            if not args.no_prototype:
                proto = run_child("prototype", bundle_path, scene, tmp / f"proto_{size}", args)
                entry["prototype_memory"] = proto
                entry["prototype_peak_rss_mb"] = _peak(proto)
                msg += f", prototype {_peak(proto):.0f} MB"
            print(msg, flush=True)
            result["scenes"][str(size)] = entry
            for f in tmp.glob(f"scene_{size}*"):
                f.unlink()
    s = result["scenes"]
    lo, hi = str(min(sizes)), str(max(sizes))
    if lo != hi:
        result["memory_ratio_predict"] = s[hi]["predict_peak_rss_mb"] / s[lo]["predict_peak_rss_mb"]
        if "prototype_peak_rss_mb" in s[lo]:
            result["memory_ratio_prototype"] = (
                s[hi]["prototype_peak_rss_mb"] / s[lo]["prototype_peak_rss_mb"]
            )
    result["throughput_ratio_min"] = min(e["throughput_ratio"] for e in s.values())
    result["goals"] = {
        "throughput_ratio>=0.8": result["throughput_ratio_min"] >= 0.8,
        "memory_ratio<=1.3": result.get("memory_ratio_predict", math.nan) <= 1.3,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predict_scene.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "scenes"}, indent=2))
    print(f"saved {args.out / 'predict_scene.json'}")


if __name__ == "__main__":
    main()
