"""`make bench`: run every benchmark script in turn; each prints and saves its own JSON figures.

Figures go to ``bench_out/<name>.json`` and the summaries to ``benchmarks/RESULTS.md``.
Pass script names to run only those, e.g. ``python benchmarks/run_all.py predict_scene``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "packed_cache",
    "train_throughput",
    "predict_scene",
    "upscale_memory",
    "map_pipeline",
    "cross_region",
]


def main(argv: list[str]) -> int:
    """Run the selected benchmarks; exit non-zero if any failed to run."""
    names = argv or SCRIPTS
    failed = []
    for name in names:
        script = HERE / f"{name}.py"
        print(f"\n=== benchmark {name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"--- {name}: exit {rc}, {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
