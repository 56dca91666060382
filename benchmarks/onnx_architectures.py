"""Which architectures export to ONNX: every one of ``pvdetect.model.factory.ARCHITECTURES``.

For each architecture with a resnet18 encoder (random weights, 4 bands): save a bundle, run
:func:`pvdetect.model.onnx.export_onnx` (which checks the graph against torch in float32
on batch and spatial sizes other than the traced one), then load the ONNX bundle and compare
``predict_probs`` with the torch network in float32 on a 2 x 4 x 192 x 160 batch. Prints a
Markdown table (the one in ``docs/onnx.md``) and saves ``bench_out/onnx_architectures.json``.

Usage: ``python benchmarks/onnx_architectures.py [--arch unet,fpn]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from common import machine_info, markdown_table  # noqa: E402
from common import write_json as save_json  # noqa: E402

STATS = {
    "mean": [900.0, 850.0, 700.0, 2500.0],
    "std": [500.0, 450.0, 400.0, 900.0],
    "p2": [100.0] * 4,
    "p98": [4000.0] * 4,
}


def check(arch: str, work: Path) -> dict:
    import torch

    from pvdetect.errors import PVDetectError
    from pvdetect.io import first_line
    from pvdetect.model.bundle import BundleMeta, load_bundle, save_bundle
    from pvdetect.model.factory import build_model, min_input_size
    from pvdetect.model.onnx import export_onnx
    from pvdetect.model.preprocessing import run_model

    row: dict = {"arch": arch, "encoder": "resnet18"}
    try:
        torch.manual_seed(0)
        model = build_model(arch, "resnet18", in_channels=4)
        tile = max(128, min_input_size(arch, "resnet18"))
        meta = BundleMeta(arch=arch, encoder="resnet18", band_stats=STATS, tile_size=tile,
                          overlap=tile // 4)  # fmt: skip
        src = save_bundle(work / f"{arch}_torch", model, meta)
    except Exception as exc:  # noqa: BLE001 - report whatever the architecture raises
        return {**row, "exports": False, "note": f"does not build: {first_line(exc)}"}
    t0 = time.perf_counter()
    try:
        out = export_onnx(src, work / f"{arch}_onnx")
    except PVDetectError as exc:
        return {**row, "exports": False, "note": str(exc).split(": ", 1)[-1][:160]}
    row["export_s"] = round(time.perf_counter() - t0, 1)
    row["onnx_mb"] = round((out / "model.onnx").stat().st_size / 2**20, 1)
    tb, ob = load_bundle(src), load_bundle(out)
    side = tile + 64
    raw = torch.rand(2, 4, side, side - 32) * 3000
    valid = torch.ones(2, side, side - 32, dtype=torch.bool)
    with torch.inference_mode():
        x, _ = tb.pre.model_input(raw, valid)
        ref = torch.sigmoid(run_model(tb.model, x, tb.multiple).float())[:, 0]
    got = ob.predict_probs(raw, valid)
    row["max_abs_diff"] = float((got - ref).abs().max())
    row["exports"] = row["max_abs_diff"] < 1e-3
    row["note"] = "" if row["exports"] else "ONNX output differs from torch"
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default=None, help="comma-separated subset")
    args = p.parse_args()
    from pvdetect.model.factory import ARCHITECTURES

    archs = args.arch.split(",") if args.arch else list(ARCHITECTURES)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pvonnx-") as tmp:
        for arch in archs:
            row = check(arch, Path(tmp))
            print(row, flush=True)
            rows.append(row)
    table = markdown_table(
        ["architecture (resnet18)", "exports, dynamic sizes", "max abs diff vs torch fp32",
         "export s", "model.onnx MB", "note"],
        [[r["arch"], "yes" if r["exports"] else "no",
          f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "",
          r.get("export_s", ""), r.get("onnx_mb", ""), r.get("note", "")] for r in rows],
    )  # fmt: skip
    save_json("onnx_architectures", {"machine": machine_info(), "rows": rows})
    print(table)


if __name__ == "__main__":
    main()
