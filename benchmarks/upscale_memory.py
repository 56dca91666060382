"""Upscaling: peak memory and time per epoch of training at x1, x2 and x4.

Usage::

    python benchmarks/upscale_memory.py [--data DIR] [--quick] [--budget-mb N]
                                        [--out bench_out/upscale_memory.json]

The prototype upscaled its chips on disk (bicubic x2, x4: 4x / 16x more data), cut the batch size
to 1 to fit its GPU, and its training time went from 25 min (x1) to 847 min (x2) and 2366 min (x4).
This script measures both ways of training at an upscale factor, with the same network (U-Net with
a ResNet-18 encoder, 4 bands, random init, AdamW, pvdetect's default loss):

(a) the prototype's way: a materialised copy made with ``pvdetect upscale`` (bicubic), trained on
    whole upscaled chips in float32 (contiguous memory format), the batch size halved from 5
    (5, 2, 1) until one training step fits the memory budget. The copy is read through the same
    packed cache as (b), so data decoding costs the same in both (the prototype's per-item
    rasterio decoding would only add to (a)).
(b) pvdetect's way: the native chips, upscaled on the device by
    :class:`~pvdetect.training.task.SegmentationTask` (``prepare_train``: random crop of
    ``crop/factor`` px
    at the native resolution, D4, normalisation, bicubic ``upscale_batch``/``upscale_mask``) with
    ``data.crop_size`` = the chip size, batch 5, bf16 autocast and channels_last.

Chips are 128 px (not the prototype's 256 px) so that the whole CPU run takes a few minutes:
20 synthetic chips (``pvdetect.synth.dataset.generate_dataset(chips=20, scenes=0, seed=0,
chip_size=128)``, 14 of them in the training split), generated once under ``bench_out/``.

Memory: every configuration runs in a fresh interpreter (this script with ``--worker``) that
builds the model, optimiser and loader and runs one warm-up step (which allocates the optimiser
state) and one more training step (loading a batch, host-to-device copy, preprocessing, forward,
loss, backward, optimiser step).

- Peak memory on CPU: the worker's RSS high-water mark (``VmHWM`` of ``/proc/self/status``)
  read right after its steps, so it covers the whole process (interpreter, libraries, model,
  data) up to the end of training but not the interpreter's shutdown (the child's
  ``ru_maxrss``, which includes that, is in the JSON as ``process_peak_rss_mb``); on CUDA:
  ``torch.cuda.max_memory_allocated``. "Base" is the RSS (CUDA: allocated memory) right before
  the first step; "step memory" = peak - base.

Time: one more fresh interpreter builds every configuration that fits and, after ``--warmup``
steps of each, runs ``--steps`` rounds of one step of every configuration (the order rotated
each round). Interleaving makes the figures comparable on a shared machine, where the speed of a
lone process can change several-fold from one minute to the next with the load of other
programs; the time per step is the best of its rounds.

- Seconds per epoch = time per step x steps per epoch, where steps per epoch =
  ceil(training chips / batch size). CPU runs also report the median process CPU seconds per
  step (workers run with ``OMP_WAIT_POLICY=PASSIVE``, so waiting threads sleep rather than
  spin). The steps of the memory workers are timed as well (``isolated_step_seconds`` in the
  JSON).
- Pixels seen = pixels at model resolution that the network is trained on (batch x crop^2 for
  (b), batch x (chip x factor)^2 for (a)). An epoch of (b) covers 1/factor^2 of each upscaled
  chip (a random part of it, a different one each epoch).

The memory budget (``--budget-mb``; default derived): the x1 configuration of (a) at batch 5 is
run first without a budget, as a probe. The memory its step adds to the idle process (peak -
base B) is split into the fixed training state S (gradients and two AdamW moments, 3 x the
parameter bytes) and activations A per native chip (linear in the pixels). The default budget
is ``B + S + 1.5 x 16 x A``: room for the activations of one and a half whole x4 chips. So at x4
batch 5 (and 2) do not fit and batch 1 does, as on the prototype's GPU; x2 at batch 5 (20 x A)
fits. A worker whose RSS passes the budget stops itself at once, as a CUDA out-of-memory error
would (on CUDA the budget is enforced with ``torch.cuda.set_per_process_memory_fraction``). A
batch size that did not fit at a lower factor is not tried at a higher one.

Goals at x4 (printed as PASS/FAIL) for (b): the same batch size as x1; peak memory <= 1.2 x the
x1 run; seconds per megapixel seen within 1.5 x across the factors (time per epoch in proportion
to the pixels actually seen).

On a CUDA machine the same comparison also runs with 256 px chips and an EfficientNet-B7
encoder (a few steps each).

Results: JSON (``--out``) and the section "Upscaling: memory and time" of
``benchmarks/RESULTS.md`` (not for ``--quick`` runs unless ``--results-md`` is given).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_OUT,
    machine_info,
    machine_line,
    markdown_table,
    run_measured,
    update_results_section,
    write_json,
)

NAME = "upscale_memory"
SECTION = "Upscaling: memory and time"
WORK = BENCH_OUT / NAME
FACTORS = (1, 2, 4)
START_BATCH = 5
BUDGET_X4_CHIPS = 1.5  # whole x4 chips whose activations the default budget holds
GOAL_MEMORY = 1.2
GOAL_TIME_SPREAD = 1.5
CHIPS = 20
OVER_BUDGET_EXIT = 3


# ===================================================================================== worker


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB from ``/proc/self/status`` (0 where unknown)."""
    rss = hwm = 0.0
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024.0
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return rss, hwm


def _write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, path)


def _rss_watchdog(budget_mb: float, result_path: Path, spec: dict[str, Any]) -> None:
    """Stop the process as soon as its RSS passes ``budget_mb`` (a CPU stand-in for a GPU OOM)."""

    def watch() -> None:
        while True:
            rss, _ = _rss_mb()
            if rss > budget_mb:
                _write_result(
                    result_path,
                    {**spec, "fits": False, "stopped_at_rss_mb": round(rss, 1)},
                )
                os._exit(OVER_BUDGET_EXIT)
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True, name="rss-watchdog").start()


class ConfigRunner:
    """One training configuration, built and ready to step (imports torch lazily).

    ``spec`` keys: mode (``prototype`` or ``pvdetect``), data, cache_dir, factor (of the task:
    1 for the prototype), batch, crop (pvdetect), encoder, device.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        from pvdetect.config import config_from_dict
        from pvdetect.data.layouts import find_chips
        from pvdetect.data.module import PVDataModule
        from pvdetect.data.packed import build_cache
        from pvdetect.training.task import SegmentationTask

        self.torch = torch
        self.spec = spec
        self.device = torch.device(spec["device"])
        self.cuda = self.device.type == "cuda"
        torch.manual_seed(0)
        cache = build_cache(find_chips(Path(spec["data"])), cache_dir=Path(spec["cache_dir"]))
        _, channels, self.height, self.width = cache.shape
        self.mode = spec["mode"]
        batch = int(spec["batch"])
        cfg = config_from_dict(
            {
                "data": {
                    "root": str(spec["data"]),
                    "batch_size": batch,
                    "num_workers": 0,
                    "crop_size": spec.get("crop"),
                    "augment": self.mode == "pvdetect",
                },
                "model": {"arch": "unet", "encoder": spec["encoder"], "weights": None},
                "upscale": {"factor": int(spec["factor"]), "method": "bicubic"},
                "seed": 0,
            }
        )
        self.task = SegmentationTask(
            cfg,
            cache.stats,
            in_channels=channels,
            chip_size=(self.height, self.width),
            pretrained=False,
        ).to(self.device)
        self.bf16 = self.mode == "pvdetect" and spec.get("precision", "bf16") == "bf16"
        if self.mode == "pvdetect":
            self.task.configure_model()  # channels_last weights, as in training
        self.task.train()
        self.opt = torch.optim.AdamW(self.task.model.parameters(), lr=1e-3, weight_decay=1e-4)
        self.dm = PVDataModule(cache, batch_size=batch, num_workers=0, seed=0, pin_memory=self.cuda)
        self.n_train = len(self.dm.train_idx)
        if self.cuda and not torch.cuda.is_bf16_supported():
            self.amp_dtype = torch.float16
        else:
            self.amp_dtype = torch.bfloat16
        self._batches = self._forever()
        self.index = 0
        self.shape = (0, 0)

    def _forever(self) -> Any:
        while True:
            yield from self.dm.train_dataloader()

    def sync(self) -> None:
        """Wait for the device."""
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def step(self) -> tuple[float, float]:
        """One training step (next batch, copy, preprocess, forward, backward, update).

        Returns:
            (wall seconds, process CPU seconds).
        """
        torch, task = self.torch, self.task
        t0, c0 = time.perf_counter(), time.process_time()
        raw = next(self._batches)
        b = {k: v.to(self.device, non_blocking=True) for k, v in raw.items()}
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.bf16):
            if self.mode == "pvdetect":
                x, mask, valid = task.prepare_train(b, task._generator(self.index))
                logits = task(x)  # channels_last, padded to the encoder's multiple
            else:
                x, mask, valid = task.prepare_eval(b)  # factor 1: normalisation only
                logits = task.model(x)  # float32, contiguous, like the prototype
            loss = task.loss_fn(logits, mask, valid)
        loss.backward()
        self.opt.step()
        self.sync()
        self.index += 1
        self.shape = (int(x.shape[0]), int(x.shape[-2] * x.shape[-1]))
        return time.perf_counter() - t0, time.process_time() - c0

    def facts(self) -> dict[str, Any]:
        """Sizes of the configuration (after at least one step)."""
        return {
            "n_train": self.n_train,
            "chip_px": [int(self.height), int(self.width)],
            "model_batch": self.shape[0],
            "model_pixels_per_image": self.shape[1],
            "params": sum(p.numel() for p in self.task.model.parameters()),
            "torch_threads": self.torch.get_num_threads(),
            "precision": "bf16-autocast" if self.bf16 else "float32",
            "memory_format": "channels_last" if self.mode == "pvdetect" else "contiguous",
        }


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Memory worker: ``warmup + steps`` steps of one configuration, its peak memory and times.

    ``spec``: the :class:`ConfigRunner` keys plus warmup, steps, budget_mb and result (path of
    the result file).
    """
    result_path = Path(spec["result"])
    budget = spec.get("budget_mb")
    if budget and spec["device"] == "cpu":
        _rss_watchdog(float(budget), result_path, spec)
    import torch

    if spec["device"].startswith("cuda") and budget:
        dev = torch.device(spec["device"])
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(float(budget) * 2**20 / total, 1.0), dev)
    try:
        run = ConfigRunner(spec)
        run.sync()
        if run.cuda:
            torch.cuda.reset_peak_memory_stats(run.device)
            base_mb = torch.cuda.memory_allocated(run.device) / 2**20
        else:
            base_mb = _rss_mb()[0]
        times: list[float] = []
        cpu_times: list[float] = []
        for i in range(int(spec["warmup"]) + int(spec["steps"])):
            wall, cpu = run.step()
            if i >= int(spec["warmup"]):
                times.append(wall)
                cpu_times.append(cpu)
    except torch.OutOfMemoryError:
        return {**spec, "fits": False, "stopped_at": "CUDA out of memory"}
    _, hwm = _rss_mb()
    res: dict[str, Any] = {
        **spec,
        **run.facts(),
        "fits": True,
        "isolated_step_seconds": times,
        "isolated_step_cpu_seconds": cpu_times,
        "base_mb": round(base_mb, 1),
        "vm_hwm_mb": round(hwm, 1),
    }
    if run.cuda:
        res["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(run.device) / 2**20, 1)
        res["gpu"] = torch.cuda.get_device_name(run.device)
    return res


def timing_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Timing worker: all configurations in one process, their steps interleaved.

    After ``warmup`` steps of each, ``steps`` rounds run one step of every configuration (the
    order rotated each round), so load from other programs on a shared machine hits all
    configurations alike. Returns the step times per configuration label.
    """
    runners: dict[str, ConfigRunner] = {}
    errors: dict[str, str] = {}
    for c in spec["configs"]:
        try:
            runners[c["label"]] = ConfigRunner(c)
        except Exception as exc:  # noqa: BLE001 - the others are still timed
            errors[c["label"]] = f"{type(exc).__name__}: {exc}"
    labels = list(runners)
    for run in runners.values():
        for _ in range(int(spec["warmup"])):
            run.step()
    times: dict[str, list[float]] = {k: [] for k in labels}
    cpu_times: dict[str, list[float]] = {k: [] for k in labels}
    for r in range(int(spec["steps"])):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            wall, cpu = runners[label].step()
            times[label].append(wall)
            cpu_times[label].append(cpu)
    timing = {k: {"step_seconds": times[k], "step_cpu_seconds": cpu_times[k]} for k in labels}
    return {"timing": timing, "errors": errors}


def _worker_entry(spec_json: str) -> int:
    spec = json.loads(spec_json)
    result_path = Path(spec["result"])
    try:
        res = timing_main(spec) if spec.get("kind") == "timing" else worker_main(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which carries on
        traceback.print_exc()
        res = {**spec, "fits": None, "error": f"{type(exc).__name__}: {exc}"}
    _write_result(result_path, res)
    return 0


# ===================================================================================== parent


def run_worker(spec: dict[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; adds ``process_peak_rss_mb``, ``wall_s``."""
    result = WORK / "results" / f"{spec['label']}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    spec = {**spec, "result": str(result)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {"PYTHONWARNINGS": "ignore", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = run_measured(cmd, timeout=timeout, env=env)
    if result.is_file():
        res = json.loads(result.read_text(encoding="utf-8"))
    else:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        res = {**spec, "fits": None, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    res["process_peak_rss_mb"] = round(proc.peak_rss_mb, 1)  # whole life, exit included
    res["wall_s"] = round(proc.seconds, 1)
    res["exit"] = proc.returncode
    if res.get("error"):
        print(f"    worker {spec['label']} failed: {res['error']}", flush=True)
        if proc.stderr:
            print("    " + "\n    ".join(proc.stderr.strip().splitlines()[-8:]), flush=True)
    return res


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tif_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.tif") if p.is_file())


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / ".bench_complete.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_chips(out: Path, chip_size: int) -> Path:
    """The synthetic native-resolution dataset (generated once, reused while complete)."""
    want = {"chips": CHIPS, "scenes": 0, "seed": 0, "chip_size": chip_size}
    if _marker(out) == want:
        return out
    from pvdetect.synth.dataset import generate_dataset

    print(f"  generating {CHIPS} synthetic {chip_size} px chips in {out}", flush=True)
    generate_dataset(out, chips=CHIPS, scenes=0, seed=0, chip_size=chip_size, overwrite=True)
    (out / ".bench_complete.json").write_text(json.dumps(want), encoding="utf-8")
    return out


def ensure_upscaled(src: Path, out: Path, factor: int, device: str) -> tuple[Path, float | None]:
    """The materialised copy of ``src`` made with ``pvdetect upscale`` (seconds when made now)."""
    from pvdetect.data.layouts import find_chips
    from pvdetect.data.packed import fingerprint
    from pvdetect.inference.upscale import upscale_dataset

    want = {"source": fingerprint(find_chips(src)), "factor": factor, "method": "bicubic"}
    if _marker(out) == want:
        return out, None
    print(f"  pvdetect upscale {src} {out} --factor {factor}", flush=True)
    t0 = time.perf_counter()
    upscale_dataset(src, out, factor, method="bicubic", device=device, overwrite=True)
    secs = time.perf_counter() - t0
    (out / ".bench_complete.json").write_text(json.dumps(want), encoding="utf-8")
    return out, secs


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def derive_memory(res: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """Peak and step memory of a memory worker's result."""
    if res.get("fits"):
        peak = res["cuda_peak_mb"] if cuda else res["vm_hwm_mb"]
        res.update(peak_mb=peak, step_mb=round(peak - res["base_mb"], 1))
    return res


def derive_time(res: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """Step, epoch and throughput figures from the interleaved timing of ``res``'s label."""
    if not res.get("fits"):
        return res
    t = timing.get(res["label"])
    if not t or not t["step_seconds"]:
        res["fits"] = None
        res["error"] = "no timing"
        return res
    res.update(t)
    step_s = min(res["step_seconds"])  # best of N: robust to other programs on the machine
    cpu_s = _median(res["step_cpu_seconds"])
    res["step_s_median"] = _median(res["step_seconds"])
    batch = res["model_batch"]
    px_img = res["model_pixels_per_image"]
    steps_epoch = math.ceil(res["n_train"] / res["batch"])
    epoch_s = step_s * steps_epoch
    px_step = batch * px_img
    h, w = res["chip_px"]  # as packed: upscaled for (a), native for (b)
    f2 = res["true_factor"] ** 2
    native_chip_px = h * w / f2 if res["mode"] == "prototype" else h * w
    native_seen = px_step / f2 * steps_epoch
    res.update(
        step_s=step_s,
        steps_per_epoch=steps_epoch,
        epoch_s=epoch_s,
        images_per_s=batch / step_s,
        mpx_seen_per_s=px_step / step_s / 1e6,
        s_per_mpx=step_s / (px_step / 1e6),
        cpu_s=cpu_s,
        cpu_epoch_s=cpu_s * steps_epoch,
        cpu_s_per_mpx=cpu_s / (px_step / 1e6),
        mpx_seen_per_epoch=px_step * steps_epoch / 1e6,
        native_coverage_per_epoch=native_seen / (res["n_train"] * native_chip_px),
    )
    return res


def budget_model(probe: dict[str, Any]) -> dict[str, float]:
    """The default memory budget from the x1 probe (prototype, batch 5, float32).

    The memory one training step adds to the idle process (peak - base) is the fixed training
    state S (gradients and two AdamW moments: 3 x the parameter bytes) plus activations in
    proportion to the pixels of the batch: ``A`` per native chip. The budget holds the base,
    the state and the activations of ``BUDGET_X4_CHIPS`` (1.5) whole x4 chips:
    ``B + S + 1.5 x 16 x A``. So one whole x4 chip fits (batch 1), two do not (batch 2), and
    batch 5 at x2 (20 x A) fits: the prototype's GPU, on which x4 trained at batch 1.
    """
    base = float(probe["base_mb"])
    step = float(probe["peak_mb"]) - base
    state = 3 * 4 * probe["params"] / 2**20
    act = max(step - state, 0.1 * step) / probe["model_batch"]
    budget = base + state + BUDGET_X4_CHIPS * FACTORS[-1] ** 2 * act
    return {
        "base_mb": base,
        "probe_step_mb": step,
        "state_mb": state,
        "act_per_chip_mb": act,
        "budget_mb": budget,
    }


def run_suite(
    name: str,
    src: Path,
    *,
    encoder: str,
    device: str,
    warmup: int,
    steps: int,
    budget_mb: float | None,
) -> dict[str, Any]:
    """Both ways at x1, x2, x4 for one dataset / encoder / device."""
    from pvdetect.data.layouts import find_chips
    from pvdetect.data.packed import build_cache

    cuda = device.startswith("cuda")
    cache_dir = WORK / "cache"
    data = {1: src}
    disk: dict[int, dict[str, Any]] = {
        1: {"bytes": _dir_bytes(src), "tif_bytes": _tif_bytes(src), "upscale_s": 0.0}
    }
    for f in FACTORS[1:]:
        out, secs = ensure_upscaled(src, WORK / f"{src.name}_x{f}", f, device)
        data[f] = out
        disk[f] = {"bytes": _dir_bytes(out), "tif_bytes": _tif_bytes(out), "upscale_s": secs}
    for f in FACTORS:
        disk[f]["ratio_to_x1"] = disk[f]["tif_bytes"] / disk[1]["tif_bytes"]
        build_cache(find_chips(data[f]), cache_dir=cache_dir)  # packed once, outside the timing
    native_shape = build_cache(find_chips(src), cache_dir=cache_dir).shape
    chip = min(native_shape[-2:]) // FACTORS[-1] * FACTORS[-1]  # crop side, a multiple of 4
    # memory workers: one warm-up step (allocates the optimiser state) + one measured step
    common = {"encoder": encoder, "device": device, "warmup": 1, "steps": 1}
    common["cache_dir"] = str(cache_dir)

    def proto(f: int, b: int, budget: float | None) -> dict[str, Any]:
        spec = {
            **common,
            "label": f"{name}_prototype_x{f}_b{b}",
            "mode": "prototype",
            "data": str(data[f]),
            "factor": 1,
            "true_factor": f,
            "batch": b,
            "budget_mb": budget,
        }
        print(f"  (a) prototype x{f} batch {b} (whole {chip * f} px chips, float32)", flush=True)
        return derive_memory(run_worker(spec), cuda)

    # (a) x1 at batch 5: the probe that sets the budget
    probe = proto(1, START_BATCH, None)
    if not probe.get("fits"):
        raise SystemExit(f"the x1 probe failed: {probe.get('error')}")
    model = budget_model(probe)
    rule = (
        f"B {model['base_mb']:.0f} + state {model['state_mb']:.0f} + "
        f"{BUDGET_X4_CHIPS} x {FACTORS[-1] ** 2} x {model['act_per_chip_mb']:.1f} MiB "
        f"activations per native chip, from the x1 probe"
    )
    if budget_mb is None:
        budget_mb = model["budget_mb"]
    else:
        rule = "--budget-mb"
    budget_mb = round(float(budget_mb), 1)
    print(f"  budget: {budget_mb:.0f} MiB ({rule})", flush=True)
    proto_runs: dict[int, dict[str, Any]] = {}
    attempts: list[dict[str, Any]] = []
    failed_at: set[int] = set()
    for f in FACTORS:
        b = START_BATCH
        while b >= 1:
            if f == 1 and b == START_BATCH:  # the probe
                fits = probe["peak_mb"] <= budget_mb
                attempts.append({"factor": 1, "batch": b, "fits": fits, "by": "probe"})
                if fits:
                    proto_runs[1] = probe
                    break
                failed_at.add(b)
            elif b in failed_at:
                attempts.append({"factor": f, "batch": b, "fits": False, "by": "implied"})
            else:
                res = proto(f, b, budget_mb)
                attempts.append(
                    {"factor": f, "batch": b, "fits": res.get("fits"), "by": "measured"}
                )
                if res.get("fits"):
                    proto_runs[f] = res
                    break
                if res.get("fits") is None:  # an error, not the budget
                    proto_runs[f] = res
                    break
                failed_at.add(b)
            b //= 2
        else:
            proto_runs[f] = {"fits": False, "factor": f, "error": "batch 1 does not fit"}

    # (b) pvdetect: native chips, on-device upscaling, crops of the chip size, batch 5
    pv_runs: dict[int, dict[str, Any]] = {}
    for f in FACTORS:
        spec = {
            **common,
            "label": f"{name}_pvdetect_x{f}_b{START_BATCH}",
            "mode": "pvdetect",
            "data": str(src),
            "factor": f,
            "true_factor": f,
            "batch": START_BATCH,
            "crop": chip,
            "budget_mb": None,
        }
        print(
            f"  (b) pvdetect x{f} batch {START_BATCH} ({chip // f} px crops upscaled to "
            f"{chip} px, bf16)",
            flush=True,
        )
        pv_runs[f] = derive_memory(run_worker(spec), cuda)

    # timing: every configuration that fits, interleaved in one process
    fitting = [r for r in (*proto_runs.values(), *pv_runs.values()) if r.get("fits")]
    keys = ("label", "mode", "data", "cache_dir", "factor", "batch", "crop", "encoder", "device")
    configs = [{k: r.get(k) for k in keys} for r in fitting]
    # reference for the precision's share: pvdetect's x1 step in float32 (timing only)
    reference = {**pv_runs[1], "label": f"{name}_pvdetect_x1_float32", "precision": "float32"}
    if pv_runs[1].get("fits"):
        configs.append({**{k: reference.get(k) for k in keys}, "precision": "float32"})
    tspec = {
        "kind": "timing",
        "label": f"{name}_timing",
        "device": device,
        "warmup": warmup,
        "steps": steps,
        "configs": configs,
    }
    print(
        f"  timing {len(fitting)} configurations interleaved: {warmup} warm-up + {steps} rounds",
        flush=True,
    )
    tres = run_worker(tspec, timeout=1800.0)
    timing = tres.get("timing", {})
    for label, err in tres.get("errors", {}).items():
        print(f"    timing of {label} failed: {err}", flush=True)
    for r in fitting:
        derive_time(r, timing)
        if r["label"] in tres.get("errors", {}):
            r["error"] = tres["errors"][r["label"]]
    if pv_runs[1].get("fits"):
        reference.pop("isolated_step_seconds", None)
        reference.pop("isolated_step_cpu_seconds", None)
        reference["precision"] = "float32"
        derive_time(reference, timing)
    else:
        reference = {}
    return {
        "name": name,
        "encoder": encoder,
        "device": device,
        "chip_px": chip,
        "warmup": warmup,
        "steps": steps,
        "budget_mb": budget_mb,
        "budget_rule": rule,
        "budget_model": model,
        "memory_measure": (
            "torch.cuda.max_memory_allocated" if cuda else "RSS high-water mark (VmHWM)"
        ),
        "disk": {str(f): v for f, v in disk.items()},
        "prototype": {str(f): v for f, v in proto_runs.items()},
        "prototype_attempts": attempts,
        "timing_wall_s": tres.get("wall_s"),
        "pvdetect": {str(f): v for f, v in pv_runs.items()},
        "pvdetect_x1_float32": reference,
        "goals": goals(pv_runs),
    }


def goals(pv: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """PASS/FAIL of pvdetect's way at x4 against x1."""
    r1, r4 = pv.get(1, {}), pv.get(4, {})
    if not (r1.get("fits") and r4.get("fits")):
        return {"all": False, "error": "a pvdetect run failed"}
    mem_ratio = r4["peak_mb"] / r1["peak_mb"]
    spm = [r["s_per_mpx"] for r in pv.values() if r.get("fits")]
    spread = max(spm) / min(spm)
    cpu = [r["cpu_s_per_mpx"] for r in pv.values() if r.get("fits")]
    out = {
        "same_batch": {"x1": r1["model_batch"], "x4": r4["model_batch"]},
        "same_batch_pass": r1["model_batch"] == r4["model_batch"],
        "memory_ratio_x4_x1": mem_ratio,
        "step_memory_ratio_x4_x1": r4["step_mb"] / max(r1["step_mb"], 1e-9),
        "memory_pass": mem_ratio <= GOAL_MEMORY,
        "s_per_mpx_spread": spread,
        "cpu_s_per_mpx_spread": max(cpu) / min(cpu),
        "time_pass": spread <= GOAL_TIME_SPREAD,
    }
    out["all"] = out["same_batch_pass"] and out["memory_pass"] and out["time_pass"]
    return out


# ================================================================================== reporting


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def suite_tables(s: dict[str, Any]) -> str:
    """Markdown tables of one suite."""
    chip = s["chip_px"]
    cuda = s["device"].startswith("cuda")
    header = [
        "way",
        "factor",
        "batch",
        "model input",
        "peak MiB",
        "step MiB",
        "s/step",
        "CPU s/step",
        "steps/epoch",
        "s/epoch",
        "CPU s/epoch",
        "images/s",
        "Mpx seen/s",
        "Mpx seen/epoch",
        "CPU s per Mpx seen",
    ]
    rows = []
    for way, key in (("(a) prototype", "prototype"), ("(b) pvdetect", "pvdetect")):
        for f in FACTORS:
            r = s[key].get(str(f), {})
            if not r.get("fits"):
                rows.append([way, f"x{f}", r.get("error", "does not fit")] + ["-"] * 12)
                continue
            side = int(math.isqrt(r["model_pixels_per_image"]))
            cpu = (lambda v, nd: "-") if cuda else _f
            rows.append(
                [
                    way,
                    f"x{f}",
                    r["model_batch"],
                    f"{side} px" + (" crop" if key == "pvdetect" else " chip"),
                    _f(r["peak_mb"], 0),
                    _f(r["step_mb"], 0),
                    _f(r["step_s"], 3),
                    cpu(r["cpu_s"], 3),
                    r["steps_per_epoch"],
                    _f(r["epoch_s"], 2),
                    cpu(r["cpu_epoch_s"], 2),
                    _f(r["images_per_s"], 1),
                    _f(r["mpx_seen_per_s"], 3),
                    _f(r["mpx_seen_per_epoch"], 2),
                    cpu(r["cpu_s_per_mpx"], 2),
                ]
            )
    ref = s.get("pvdetect_x1_float32") or {}
    if ref.get("fits") and "step_s" in ref:
        cpu = (lambda v, nd: "-") if cuda else _f
        rows.append(
            [
                "(b) in float32 (reference)",
                "x1",
                ref["model_batch"],
                f"{int(math.isqrt(ref['model_pixels_per_image']))} px crop",
                "-",
                "-",
                _f(ref["step_s"], 3),
                cpu(ref["cpu_s"], 3),
                ref["steps_per_epoch"],
                _f(ref["epoch_s"], 2),
                cpu(ref["cpu_epoch_s"], 2),
                _f(ref["images_per_s"], 1),
                _f(ref["mpx_seen_per_s"], 3),
                _f(ref["mpx_seen_per_epoch"], 2),
                cpu(ref["cpu_s_per_mpx"], 2),
            ]
        )
    disk_rows = [
        [
            f"x{f}",
            f"{chip * f} px",
            _mib(d["tif_bytes"]),
            _f(d["ratio_to_x1"], 1),
            _f(d["upscale_s"], 1) if d.get("upscale_s") else "cached",
        ]
        for f, d in ((int(k), v) for k, v in s["disk"].items())
    ]
    tried = ", ".join(
        f"x{a['factor']} b{a['batch']}: {'fits' if a['fits'] else 'over budget'}"
        + (" (implied)" if a["by"] == "implied" else "")
        for a in s["prototype_attempts"]
    )
    return "\n\n".join(
        [
            markdown_table(header, rows),
            f"Budget {s['budget_mb']:.0f} MiB ({s['budget_rule']}); memory = "
            f"{s['memory_measure']}. Batch search of (a): {tried}.",
            "Materialised datasets (GeoTIFF bytes, float32, deflate; upscaled values compress "
            "worse than the native ones, hence more than factor^2):\n\n"
            + markdown_table(["factor", "chip", "on disk", "x of x1", "upscale s"], disk_rows),
        ]
    )


def goal_lines(s: dict[str, Any]) -> list[str]:
    """PASS/FAIL lines of one suite."""
    g = s["goals"]
    if "error" in g:
        return [f"FAIL: {g['error']}"]
    p = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    return [
        f"{p(g['same_batch_pass'])}: (b) batch at x4 = {g['same_batch']['x4']}, "
        f"at x1 = {g['same_batch']['x1']}",
        f"{p(g['memory_pass'])}: (b) peak memory x4 / x1 = {g['memory_ratio_x4_x1']:.2f} "
        f"(goal <= {GOAL_MEMORY}; step memory alone {g['step_memory_ratio_x4_x1']:.2f})",
        f"{p(g['time_pass'])}: (b) seconds per Mpx seen, max/min over x1, x2, x4 = "
        f"{g['s_per_mpx_spread']:.2f} (goal <= {GOAL_TIME_SPREAD}; with CPU seconds: "
        f"{g['cpu_s_per_mpx_spread']:.2f})",
    ]


def comparison_lines(s: dict[str, Any]) -> list[str]:
    """Epoch time and memory of (a) against (b) per factor."""
    out = []
    for f in FACTORS:
        a, b = s["prototype"].get(str(f), {}), s["pvdetect"].get(str(f), {})
        if a.get("fits") and b.get("fits"):
            out.append(
                f"x{f}: (a) {a['epoch_s']:.1f} s/epoch at batch {a['model_batch']}, peak "
                f"{a['peak_mb']:.0f} MiB; (b) {b['epoch_s']:.1f} s/epoch at batch "
                f"{b['model_batch']}, peak {b['peak_mb']:.0f} MiB; (a)/(b) epoch time "
                f"{a['epoch_s'] / b['epoch_s']:.1f}x"
            )
    for way, key in (("(a)", "prototype"), ("(b)", "pvdetect")):
        r1 = s[key].get("1", {})
        rel = [
            f"x{f} {s[key][str(f)]['epoch_s'] / r1['epoch_s']:.1f}x"
            for f in FACTORS[1:]
            if "epoch_s" in r1 and "epoch_s" in s[key].get(str(f), {})
        ]
        if rel:
            out.append(f"{way} time per epoch relative to x1: {', '.join(rel)}")
    ref, b1 = s.get("pvdetect_x1_float32") or {}, s["pvdetect"].get("1", {})
    if "step_s" in ref and "step_s" in b1:
        out.append(
            f"precision: (b) x1 step {b1['step_s']:.3f} s in bf16 autocast, "
            f"{ref['step_s']:.3f} s in float32 (bf16/float32 = {b1['step_s'] / ref['step_s']:.2f})"
        )
        if not s["device"].startswith("cuda") and b1["step_s"] > 1.05 * ref["step_s"]:
            out.append(
                "bf16 autocast is slower than float32 on this CPU for a batch this small (with "
                "256 px chips it is faster, see Training throughput), so at x1 the gap between "
                "(a) and (b) is the precision, not the way of upscaling"
            )
    return out


def results_markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md section body."""
    parts = [
        f"Machine: {machine_line(report['machine'])}. Date {report['machine']['date']}. "
        f"Command: `python benchmarks/upscale_memory.py{' --quick' if report['quick'] else ''}`.",
        "(a) the prototype's way: a copy upscaled on disk with `pvdetect upscale` (bicubic), whole "
        "upscaled chips, float32, batch halved from 5 until one step fits the budget. (b) "
        "pvdetect's way: native chips upscaled on the device by `SegmentationTask.prepare_train` "
        "(random crop of crop/factor px, D4, normalise, bicubic), crop = chip size, batch 5, bf16 "
        "autocast, channels_last. U-Net, random init, AdamW, 4 bands; a fresh process per "
        "configuration for memory, all configurations interleaved step by step in one process for "
        "time (the machine is shared: load average "
        f"{report['loadavg'][0]:.1f} / {report['loadavg'][1]:.1f} at start / end); s/epoch = "
        "best-of-N s/step x ceil(train chips / batch); CPU s = median process CPU seconds. "
        "The CPU suite uses small chips (128 px by default, not the prototype's 256 px) to keep "
        "the CPU run to a few minutes. Peak on CPU = "
        "whole-process RSS high-water mark (interpreter, torch and model included, hence the "
        "large common base); step MiB = peak minus the RSS before the first step. "
        "An epoch of (b) at xF covers 1/F^2 of each upscaled chip "
        "(a random part each epoch); the time per pixel seen is what stays constant.",
    ]
    for s in report["suites"]:
        parts.append(
            f"**{s['name']}**: {s['encoder']}, {s['chip_px']} px chips, {s['device']}, "
            f"{s['warmup']} warm-up + {s['steps']} timed steps per configuration (interleaved)."
        )
        parts.append(suite_tables(s))
        parts.append("\n".join(f"- {line}" for line in goal_lines(s) + comparison_lines(s)))
    if not report.get("cuda"):
        parts.append(
            "No CUDA device on this machine: the 256 px EfficientNet-B7 comparison did not run."
        )
    return "\n\n".join(parts)


# ====================================================================================== main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="native-resolution chip dataset")
    p.add_argument("--quick", action="store_true", help="smoke run: one timed step each")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    p.add_argument("--budget-mb", type=float, default=None, help="memory budget of (a) in MiB")
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps per configuration (default 5)"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    p.add_argument("--no-gpu", action="store_true", help="skip the CUDA suite")
    p.add_argument("--results-md", action="store_true", help="update RESULTS.md even with --quick")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--worker``, one configuration)."""
    args = parse_args(argv)
    if args.worker is not None:
        return _worker_entry(args.worker)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    steps = args.steps if args.steps is not None else (1 if args.quick else 5)
    out = args.out or (
        BENCH_OUT / f"{NAME}_quick.json" if args.quick else BENCH_OUT / f"{NAME}.json"
    )
    WORK.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(WORK / "results", ignore_errors=True)
    import torch

    info = machine_info()
    cuda = torch.cuda.is_available()
    src = args.data.resolve() if args.data else ensure_chips(WORK / "chips128", 128)
    print(f"upscale_memory: {machine_line(info)}", flush=True)
    suites = [
        run_suite(
            "cpu_resnet18",
            src,
            encoder="resnet18",
            device="cpu",
            warmup=args.warmup,
            steps=steps,
            budget_mb=args.budget_mb,
        )
    ]
    if cuda and not args.no_gpu:
        gsrc = ensure_chips(WORK / "chips256", 256)
        suites.append(
            run_suite(
                "cuda_efficientnet_b7",
                gsrc,
                encoder="efficientnet-b7",
                device="cuda",
                warmup=args.warmup,
                steps=min(steps, 3),
                budget_mb=None,
            )
        )
    report = {
        "benchmark": NAME,
        "quick": args.quick,
        "machine": info,
        "cuda": cuda,
        "suites": suites,
        "loadavg": [load_start, os.getloadavg()[0]],
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    path = write_json(out, report)
    for s in suites:
        print(f"\n## {s['name']}\n")
        print(suite_tables(s))
        print()
        for line in goal_lines(s) + comparison_lines(s):
            print(line)
    if not args.quick or args.results_md:
        update_results_section(SECTION, results_markdown(report))
        print("\nupdated benchmarks/RESULTS.md")
    print(f"wrote {path} ({report['total_s']:.0f} s)")
    ok = all(s["goals"].get("all") for s in suites)
    print("GOALS:", "PASS" if ok else "FAIL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
