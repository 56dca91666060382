"""Benchmark: batches per second from the packed cache vs. decoding GeoTIFFs per item.

Both loaders produce the same items (raw image with invalid pixels 0, mask with 255 = ignore,
valid) through a ``DataLoader`` with the same batch size and order; the figure of merit is the
ratio of their batch rates, measured in one run (goal: >= 10x). The one-off cost of building
the cache is reported too.

    python benchmarks/packed_cache.py [--data DIR] [--out bench_out/packed_cache.json]

Without ``--data`` a 60-chip synthetic dataset is generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pvdetect.data.layouts import ChipRecord, find_chips
from pvdetect.data.packed import ChipDataset, build_cache
from pvdetect.data.raster import DEFAULT_NODATA, read_raster, valid_pixels
from pvdetect.data.raster import IGNORE_INDEX as IGNORE

BATCH = 5
GOAL = 10.0


class GeoTiffDataset(Dataset):
    """Reads and decodes both GeoTIFFs of a chip with rasterio on every access."""

    def __init__(self, records: list[ChipRecord]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        img, info = read_raster(rec.image)
        m, minfo = read_raster(rec.mask)
        ok = valid_pixels(img, info.nodata if info.nodata is not None else DEFAULT_NODATA)
        mnd = minfo.nodata if minfo.nodata is not None else DEFAULT_NODATA
        img[:, ~ok] = 0.0
        target = np.where(ok & (m[0] != mnd), m[0], IGNORE).astype(np.uint8)
        return {
            "image": torch.from_numpy(img),
            "mask": torch.from_numpy(target),
            "valid": torch.from_numpy(ok),
            "index": i,
        }


def batches_per_second(ds: Dataset, min_seconds: float) -> tuple[float, int]:
    """Batch rate over whole shuffled epochs (after one warm-up epoch) lasting >= min_seconds."""
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, generator=gen, num_workers=0)
    for _ in loader:  # warm-up: page cache, lazy imports
        pass
    n = 0
    t0 = time.perf_counter()
    while True:
        for batch in loader:
            n += 1
            assert batch["image"].shape[0] <= BATCH
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return n / elapsed, n


def make_data(out: Path, chips: int) -> str:
    """Synthetic chips via pvdetect.synth.dataset when present, else random 4-band chips."""
    if importlib.util.find_spec("pvdetect.synth.dataset") is not None:
        from pvdetect.synth.dataset import generate_dataset

        generate_dataset(out, chips=chips, scenes=0, seed=0)
        return "pvdetect.synth.dataset"
    from affine import Affine

    from pvdetect.data.raster import write_raster

    rng = np.random.default_rng(0)
    for i in range(chips):
        split = ("train", "val", "test")[i % 3]
        img = rng.uniform(0, 5000, (4, 256, 256)).astype(np.float32)
        mask = (rng.random((1, 256, 256)) < 0.1).astype(np.float32)
        t = Affine(10, 0, 500000 + 3000 * i, 0, -10, 5200000)
        write_raster(out / split / "input" / f"img({i + 1}).tif", img, crs="EPSG:32633",
                     transform=t)  # fmt: skip
        write_raster(out / split / "labels" / f"target({i + 1}).tif", mask, crs="EPSG:32633",
                     transform=t)  # fmt: skip
    return "random chips"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the figures and save them as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="chip dataset (default: generate 60 chips)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/packed_cache.json"))
    ap.add_argument("--chips", type=int, default=60, help="chips to generate without --data")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per loader")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1, as in DataLoader workers: batch collation "
        "with several threads stalls badly on a busy CPU)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))

    with tempfile.TemporaryDirectory(prefix="pvdetect-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.data is None:
            data = tmp / "data"
            t0 = time.perf_counter()
            source = make_data(data, args.chips)
            print(f"generated {args.chips} chips ({source}) in {time.perf_counter() - t0:.1f} s")
        else:
            data, source = args.data, str(args.data)
        records = find_chips(data)
        t0 = time.perf_counter()
        cache = build_cache(records, tmp / "cache")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_cache(records, tmp / "cache")
        reopen_s = time.perf_counter() - t0

        all_idx = np.arange(len(cache))
        packed_rate, packed_n = batches_per_second(ChipDataset(cache, all_idx), args.seconds)
        tiff_rate, tiff_n = batches_per_second(GeoTiffDataset(cache.records), args.seconds)
        n, c, h, w = cache.images.shape

    ratio = packed_rate / tiff_rate
    result = {
        "benchmark": "packed_cache",
        "data": source,
        "chips": int(n),
        "chip_shape": [int(c), int(h), int(w)],
        "batch_size": BATCH,
        "num_workers": 0,
        "packed_batches_per_s": round(packed_rate, 2),
        "geotiff_batches_per_s": round(tiff_rate, 2),
        "batches_timed": {"packed": packed_n, "geotiff": tiff_n},
        "ratio": round(ratio, 2),
        "goal_ratio": GOAL,
        "goal_met": bool(ratio >= GOAL),
        "cache_build_s": round(build_s, 3),
        "cache_reopen_s": round(reopen_s, 4),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }
    print(f"chips: {n} x {c}x{h}x{w}, batch size {BATCH}, single-process DataLoader")
    print(f"packed cache:  {packed_rate:10.1f} batches/s")
    print(f"GeoTIFF reads: {tiff_rate:10.1f} batches/s")
    print(f"ratio: {ratio:.1f}x (goal >= {GOAL:g}x: {'met' if ratio >= GOAL else 'NOT met'})")
    print(f"cache build (one-off): {build_s:.2f} s; reopen: {reopen_s * 1000:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
