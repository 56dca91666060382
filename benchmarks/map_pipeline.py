"""Benchmark of ``pvdetect map``: how the tile pipeline scales with Dask workers.

Three measurements, each repeated (``--repeats``, default 3) with the configurations
alternating inside each repeat, so that load from other programs hits them alike; medians and
spreads are reported and ratios are taken within a repeat:

1. **The pipeline's ceiling**: a square synthetic scene (``--size``, default 4096 px) mapped
   with an instant stand-in for the network (an ONNX bundle whose logits are a constant: an
   empty mask) on 1 and 2 local workers, against ``predict_scene`` on the same scene with the
   same bundle. Goal: 2 workers >= 1.7 x 1 worker, with the same outputs (plant layers and
   mosaic pixels compared).
2. **The real network**: a unet/resnet18 trained briefly on synthetic chips (as in
   ``predict_scene.py``) on a smaller scene (``--trained-size``, default 2048 px): ``map`` on 1
   and 2 workers against ``predict`` scene by scene.
3. **ONNX against torch** on the CPU: the same trained bundle exported with ``pvdetect export
   --onnx``: mask IoU, probability differences and speed of ``predict_scene``.

The clusters are started (and the workers warmed up on a small map) before the timings: the
times are those of ``map_region`` (planning, tasks, merge, mosaics, quick-look, summary);
the cluster start-up is reported apart. The scenes are written in EPSG:32723 on the map's
10 m grid, with cells of ``--tile-km`` (default 10.24 km = 1024 px, 16 tiles at 4096 px).

Usage: ``python benchmarks/map_pipeline.py [--quick] [--size 4096] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from common import machine_info, machine_line, markdown_table, summarize  # noqa: E402
from common import write_json as save_json  # noqa: E402

#: the scenes' top-left corner in EPSG:32723: on a 10.24 km grid line, at about 15 S
ORIGIN = (184_320.0, 8_289_920.0)
STATS = {
    "mean": [900.0, 850.0, 700.0, 2500.0],
    "std": [500.0, 450.0, 400.0, 900.0],
    "p2": [100.0] * 4,
    "p98": [4000.0] * 4,
}


def load_average() -> float:
    return os.getloadavg()[0]


def make_scene(path: Path, size: int, seed: int = 0) -> Path:
    """A synthetic scene, georeferenced on the map's grid (EPSG:32723, 10 m)."""
    import rasterio
    from affine import Affine

    from pvdetect.synth.scene import generate_scene

    generate_scene(path, path.with_name(path.stem + "_truth.tif"), size, seed)
    path.with_name(path.stem + "_truth.tif").unlink()
    with rasterio.open(path, "r+") as ds:
        ds.crs = "EPSG:32723"
        ds.transform = Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1])
    return path


def constant_bundle(path: Path, tile: int = 256, overlap: int = 64) -> Path:
    """An ONNX bundle whose logits are -8 everywhere: an instant, empty-mask network."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "s"),
        numpy_helper.from_array(np.array([1], np.int64), "e"),
        numpy_helper.from_array(np.array([1], np.int64), "a"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(-8.0, np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "s", "e", "a"], ["c0"]),
        helper.make_node("Mul", ["c0", "zero"], ["z"]),
        helper.make_node("Add", ["z", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 4, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 1, "h", "w"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"))
    meta = {"format_version": 1, "arch": "unet", "encoder": "resnet18", "in_channels": 4,
            "band_stats": STATS, "threshold": 0.5, "tile_size": tile, "overlap": overlap,
            "runtime": "onnx"}  # fmt: skip
    (path / "bundle.json").write_text(json.dumps(meta))
    return path


def run_map(client, info, bundle: Path, scenes: list[Path], out: Path, tile_km: float) -> dict:  # noqa: ANN001
    from pvdetect.inference.options import PredictOptions
    from pvdetect.mapping.run import MapConfig, map_region
    from pvdetect.mapping.sources import LocalScenes
    from pvdetect.model.bundle import read_meta

    shutil.rmtree(out, ignore_errors=True)
    meta = read_meta(bundle)
    source = LocalScenes.from_paths(scenes, meta.band_order, meta.in_channels, meta.nodata)
    cfg = MapConfig(bundle=bundle, out=out, tile_km=tile_km, options=PredictOptions())
    with open(os.devnull, "w") as quiet:
        t0 = time.perf_counter()
        res = map_region(cfg, source, client, info, stream=quiet)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "megapixels": res.megapixels, "tiles": res.tiles,
            "plants": res.plants, "hectares": res.hectares}  # fmt: skip


def same_outputs(a: Path, b: Path) -> bool:
    """Plant layers equal and mask/prob mosaics equal pixel for pixel."""
    import rasterio
    import shapely

    from pvdetect.mapping.pieces import read_pieces

    pa, pb = read_pieces(a / "plants.gpkg"), read_pieces(b / "plants.gpkg")
    if len(pa) != len(pb) or not all(shapely.equals_exact(pa.geoms, pb.geoms, 1e-12)):
        return False
    if any(not np.array_equal(x, y) for x, y in zip(pa.columns, pb.columns, strict=True)):
        return False
    for name in ("prob.vrt", "mask.vrt"):
        with rasterio.open(a / name) as x, rasterio.open(b / name) as y:
            if not np.array_equal(x.read(1), y.read(1)):
                return False
    return True


#: local clusters measured: label -> (workers, torch threads per worker)
CLUSTERS = {"1w": (1, 2), "1w1t": (1, 1), "2w": (2, 1)}


def clusters() -> dict:
    """Started local clusters by label (see :data:`CLUSTERS`) and their start-up time."""
    from pvdetect.mapping.cluster import open_client

    out = {}
    for label, (n, threads) in CLUSTERS.items():
        t0 = time.perf_counter()
        cm = open_client(n, None, threads=threads)
        client, info = cm.__enter__()
        out[label] = (cm, client, info, time.perf_counter() - t0)
    return out


def measure_maps(cl: dict, bundle: Path, scenes: list[Path], work: Path, tile_km: float,
                 repeats: int, baseline=None) -> dict:  # noqa: ANN001  # fmt: skip
    """Alternating map runs on each cluster (and ``baseline()``), ``repeats`` times."""
    runs: dict[str, list[dict]] = {f"map_{n}": [] for n in cl}
    if baseline is not None:
        runs["predict"] = []
    for n, (_, client, info, _) in cl.items():  # warm-up: workers load the bundle
        run_map(client, info, bundle, scenes, work / f"warm_{n}", tile_km)
        shutil.rmtree(work / f"warm_{n}", ignore_errors=True)
    for r in range(repeats):
        order = list(cl) if r % 2 == 0 else list(cl)[::-1]
        if baseline is not None:
            res = baseline()
            runs["predict"].append(res)
            print(f"  repeat {r}: predict {res['megapixels'] / res['seconds']:.2f} MP/s "
                  f"({res['seconds']:.1f} s, load {res['load']:.1f})", flush=True)  # fmt: skip
        for n in order:
            _, client, info, _ = cl[n]
            res = run_map(client, info, bundle, scenes, work / f"map_{n}_{r}", tile_km)
            res["load"] = load_average()
            runs[f"map_{n}"].append(res)
            print(f"  repeat {r}: {n} {res['megapixels'] / res['seconds']:.2f} MP/s "
                  f"({res['seconds']:.1f} s, load {res['load']:.1f})", flush=True)  # fmt: skip
    return runs


def _mps(runs: list[dict]) -> list[float]:
    return [r["megapixels"] / r["seconds"] for r in runs]


def summarise_runs(runs: dict, work: Path, repeats: int) -> dict:
    out: dict = {}
    for k, v in runs.items():
        out[k] = {"mp_s": summarize(_mps(v)), "runs": v}
    if "map_1w" in runs and "map_2w" in runs:
        ratios = [b["megapixels"] / b["seconds"] / (a["megapixels"] / a["seconds"])
                  for a, b in zip(runs["map_1w"], runs["map_2w"], strict=True)]  # fmt: skip
        out["ratio_2w_1w"] = summarize(ratios)
        out["same_outputs_1w_2w"] = all(
            same_outputs(work / f"map_1w_{r}", work / f"map_2w_{r}") for r in range(repeats)
        )
    if "map_1w1t" in runs and "map_2w" in runs:
        ratios = [b["megapixels"] / b["seconds"] / (a["megapixels"] / a["seconds"])
                  for a, b in zip(runs["map_1w1t"], runs["map_2w"], strict=True)]  # fmt: skip
        out["ratio_2w_1w1t"] = summarize(ratios)
    return out


def predict_baseline(bundle_path: Path, scene: Path, out: Path):  # noqa: ANN201
    """``predict`` on the scene (bundle loaded once, outside the timing), as a callable."""
    from pvdetect.device import resolve_device
    from pvdetect.inference.options import PredictOptions
    from pvdetect.inference.predict import predict_scene
    from pvdetect.model.bundle import load_bundle

    bundle = load_bundle(bundle_path, device=resolve_device("auto"))
    opts = PredictOptions(overlay=True)
    predict_scene(bundle, scene, out / "warm", opts)
    mp = scene_mp(scene)

    def run() -> dict:
        t0 = time.perf_counter()
        predict_scene(bundle, scene, out / "predict", opts)
        return {"seconds": time.perf_counter() - t0, "megapixels": mp, "load": load_average()}

    return run


def scene_mp(scene: Path) -> float:
    import rasterio

    with rasterio.open(scene) as ds:
        return ds.width * ds.height / 1e6


def onnx_vs_torch(bundle: Path, scene: Path, work: Path, repeats: int) -> dict:
    """Agreement and speed of the ONNX export of ``bundle`` against torch on ``scene``."""
    import rasterio

    from pvdetect.inference.options import PredictOptions
    from pvdetect.inference.predict import predict_scene
    from pvdetect.model.bundle import load_bundle
    from pvdetect.model.onnx import export_onnx

    onnx_path = export_onnx(bundle, work / "onnx_bundle")
    bundles = {"torch": load_bundle(bundle), "onnx": load_bundle(onnx_path)}
    opts = PredictOptions(overlay=False)
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    for r in range(repeats):
        for name in ("torch", "onnx") if r % 2 == 0 else ("onnx", "torch"):
            res = predict_scene(bundles[name], scene, work / f"cmp_{name}", opts)
            times[name].append(res.seconds)
    with rasterio.open(work / "cmp_torch" / f"{scene.stem}_prob.tif") as a:
        pa = a.read(1)
    with rasterio.open(work / "cmp_onnx" / f"{scene.stem}_prob.tif") as b:
        pb = b.read(1)
    thr = bundles["torch"].meta.threshold
    ok = pa != -9999
    d = np.abs(pa[ok] - pb[ok])
    ma, mb = pa[ok] >= thr, pb[ok] >= thr
    iou = float((ma & mb).sum() / max(1, (ma | mb).sum()))
    mp = scene_mp(scene)
    return {
        "mask_iou": iou,
        "prob_abs_diff_max": float(d.max()),
        "prob_abs_diff_p999": float(np.quantile(d, 0.999)),
        "prob_abs_diff_median": float(np.median(d)),
        "pv_share": float(ma.mean()),
        "torch_mp_s": summarize([mp / t for t in times["torch"]]),
        "onnx_mp_s": summarize([mp / t for t in times["onnx"]]),
        "goal_iou>=0.99": iou >= 0.99,
        "goal_prob_within_0.02": float(d.max()) <= 0.02,
    }


def _fmt(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def report(result: dict) -> str:
    c = result["ceiling"]
    lines = [
        f"Machine: {machine_line(result['machine'])}. Date {result['machine']['date']}. "
        f"Command: `python benchmarks/map_pipeline.py{result['argv']}`. Load average "
        f"{result['load_start']:.1f} at the start, {result['load_end']:.1f} at the end.",
        "",
        f"(1) Pipeline ceiling: a {result['size']} px scene ({result['size'] ** 2 / 1e6:.1f} MP, "
        f"{c['map_1w']['runs'][0]['tiles']} tiles of {result['tile_km']} km), instant network "
        "(ONNX constant logits, empty mask). MP/s as median (min-max) of "
        f"{result['repeats']} repeats; cluster start-up apart.",
        "",
        markdown_table(
            ["run", "MP/s", "vs 1 worker (paired median)"],
            [
                ["`predict_scene` (one scene)", _fmt(c["predict"]["mp_s"]), ""],
                ["`map`, 1 worker, 2 torch threads", _fmt(c["map_1w"]["mp_s"]), "1"],
                ["`map`, 1 worker, 1 torch thread", _fmt(c["map_1w1t"]["mp_s"]), ""],
                ["`map`, 2 workers, 1 torch thread each", _fmt(c["map_2w"]["mp_s"]),
                 f"**{c['ratio_2w_1w']['median']:.2f}** ({c['ratio_2w_1w']['min']:.2f}-"
                 f"{c['ratio_2w_1w']['max']:.2f}); against 1 worker, 1 thread: "
                 f"{c['ratio_2w_1w1t']['median']:.2f} ({c['ratio_2w_1w1t']['min']:.2f}-"
                 f"{c['ratio_2w_1w1t']['max']:.2f})"],
            ],  # fmt: skip
        ),
        "",
        f"- Same outputs on 1 and 2 workers (plants, mosaic pixels): {c['same_outputs_1w_2w']}.",
        "- Goal 2 workers >= 1.7 x 1 worker: "
        + ("met." if c["ratio_2w_1w"]["median"] >= 1.7 else "NOT met."),
        f"- Cluster start-up: {result['startup_s']}.",
    ]  # fmt: skip
    t = result.get("trained")
    if t:
        lines += [
            "",
            f"(2) Real network ({result['trained_model']}), a {result['trained_size']} px scene:",
            "",
            markdown_table(
                ["run", "MP/s", "plants"],
                [
                    ["`predict` (scene by scene)", _fmt(t["predict"]["mp_s"]), ""],
                    [
                        "`map`, 1 worker, 2 torch threads",
                        _fmt(t["map_1w"]["mp_s"]),
                        t["map_1w"]["runs"][0]["plants"],
                    ],
                    [
                        "`map`, 1 worker, 1 torch thread",
                        _fmt(t["map_1w1t"]["mp_s"]),
                        t["map_1w1t"]["runs"][0]["plants"],
                    ],
                    [
                        "`map`, 2 workers",
                        _fmt(t["map_2w"]["mp_s"]),
                        t["map_2w"]["runs"][0]["plants"],
                    ],
                ],  # fmt: skip
            ),
            "",
            f"- 2 / 1 workers: {t['ratio_2w_1w']['median']:.2f} (paired median); same outputs: "
            f"{t['same_outputs_1w_2w']}.",
        ]
    o = result.get("onnx")
    if o:
        lines += [
            "",
            "(3) ONNX (onnxruntime, float32) against torch (`device.autocast`: bf16 only on CPUs "
            "with native bf16, else float32) on the CPU, same "
            f"trained bundle, `predict_scene` on the {result['trained_size']} px scene:",
            "",
            markdown_table(
                [
                    "mask IoU",
                    "max abs prob diff",
                    "99.9 % quantile",
                    "median",
                    "torch MP/s",
                    "ONNX MP/s",
                ],
                [
                    [
                        f"{o['mask_iou']:.4f}",
                        f"{o['prob_abs_diff_max']:.4f}",
                        f"{o['prob_abs_diff_p999']:.4f}",
                        f"{o['prob_abs_diff_median']:.5f}",
                        _fmt(o["torch_mp_s"]),
                        _fmt(o["onnx_mp_s"]),
                    ]
                ],
            ),  # fmt: skip
        ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--trained-size", type=int, default=2048)
    p.add_argument("--tile-km", type=float, default=10.24)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2048 px, 1024 px trained, 1 repeat")
    p.add_argument("--no-trained", action="store_true", help="skip (2) and (3)")
    p.add_argument("--results", action="store_true", help="write the section of RESULTS.md")
    args = p.parse_args()
    if args.quick:
        args.size, args.trained_size, args.repeats = 2048, 1024, 1
    result: dict = {"machine": machine_info(), "size": args.size, "tile_km": args.tile_km,
                    "trained_size": args.trained_size, "repeats": args.repeats,
                    "argv": "".join(f" {a}" for a in sys.argv[1:]),
                    "load_start": load_average()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pvmapbench-") as tmp_s:
        work = Path(tmp_s)
        cl = clusters()
        result["startup_s"] = {n: round(v[3], 1) for n, v in cl.items()}
        try:
            scene = make_scene(work / "scenes" / "scene.tif", args.size)
            const = constant_bundle(work / "constant")
            base = predict_baseline(const, scene, work / "pred_const")
            print(f"(1) ceiling, {args.size} px", flush=True)
            runs = measure_maps(cl, const, [scene], work / "c", args.tile_km, args.repeats, base)
            result["ceiling"] = summarise_runs(runs, work / "c", args.repeats)
            if not args.no_trained:
                sys.path.insert(0, str(HERE))
                from predict_scene import make_trained_bundle

                t0 = time.perf_counter()
                trained = make_trained_bundle(work / "trained", 256, 64, "auto")
                took = time.perf_counter() - t0
                result["trained_model"] = f"unet/resnet18 trained {took:.0f} s on synthetic chips"
                small = make_scene(work / "scenes2" / "scene2.tif", args.trained_size, seed=1)
                base = predict_baseline(trained, small, work / "pred_trained")
                print(f"(2) trained network, {args.trained_size} px", flush=True)
                runs = measure_maps(cl, trained, [small], work / "t", args.tile_km,
                                    args.repeats, base)  # fmt: skip
                result["trained"] = summarise_runs(runs, work / "t", args.repeats)
                print("(3) ONNX against torch", flush=True)
                result["onnx"] = onnx_vs_torch(trained, small, work / "o", args.repeats)
        finally:
            for cm, *_ in cl.values():
                cm.__exit__(None, None, None)
    result["load_end"] = load_average()
    path = save_json("map_pipeline", result)
    text = report(result)
    print(text)
    print(f"saved {path}")
    if args.results:
        from common import update_results_section

        update_results_section("Region mapping: pipeline scaling and ONNX (issue: map)", text)


if __name__ == "__main__":
    main()
