"""Training throughput: pvdetect's loop against the bare model step, TorchGeo and the prototype.

Usage::

    python benchmarks/train_throughput.py [--data DIR] [--steps N] [--quick]
                                          [--out bench_out/train_throughput.json]

All loops train the same network (U-Net with a ResNet-18 encoder, 4 bands, random init) on the
same chips (default: 40 synthetic 256 px chips, generated once into ``bench_out/data_train``)
with batch size 5, the same number of torch threads and the same number of DataLoader workers:

(a) pvdetect: ``pvdetect.training.train.train(TrainConfig)``, i.e. ``SegmentationTask`` +
    ``PVDataModule`` through the Lightning Trainer that ``pvdetect.training.train`` builds
    (precision
    ``auto``: bf16-mixed on CPU), timed by a callback slipped into that Trainer;
(b) the ceiling: the bare model step on in-memory tensors (bf16 autocast, channels_last, Adam,
    plain BCE; forward + backward + step), half of its steps right before and half right after
    (a) in the same process, so that load from other programs hits both alike;
(c) TorchGeo 0.8: ``SemanticSegmentationTask(model="unet", backbone="resnet18")`` on
    ``SolarPlantsBrazil`` with a plain Lightning Trainer at its fastest precision here
    (``--tg-precision auto`` measures bf16 autocast against float32 for this model first);
(d) the prototype's way: float32, rasterio decode per item, per-image min/max scaling, BCE plus a
    Jaccard term from thresholded predictions on the host every step (a device sync).

Each loop runs in a fresh subprocess ((a) and (b) share one). A step's time is the interval
between the ends of two consecutive training batches of the same epoch: it holds data loading,
host-to-device copies, forward, backward, the optimiser step and the per-step callbacks. The first
batch of every epoch (DataLoader start) and ``--warmup`` further steps are not timed; then
``--steps`` steps are. Images per second = images in the timed steps / their total time.

Goals (printed as PASS/FAIL): (a) >= 0.9 x (b) and (a) >= 1.5 x (c).

On a CUDA machine the script also measures the bare step and pvdetect's loop for U-Net with an
EfficientNet-B7 encoder at 256, 512 and 1024 px (batch 16, 8, 2; synthetic 256 px chips and
2x2 / 4x4 mosaics of them); ``--gpu-results FILE`` copies those figures from an earlier run's
JSON into this run's report. ``--tg-python PY`` runs (c) with another interpreter, for when
TorchGeo lives in another environment than pvdetect.

Results: JSON (``--out``) and the section "Training throughput" of ``benchmarks/RESULTS.md``
(not for ``--quick`` runs unless ``--results-md`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_OUT,
    REPO_ROOT,
    machine_info,
    machine_line,
    markdown_table,
    run_measured,
    summarize,
    update_results_section,
    write_json,
)

NAME = "train_throughput"
SECTION = "Training throughput"
DEFAULT_DATA = BENCH_OUT / "data_train"
GOAL_VS_BARE = 0.9
GOAL_VS_TORCHGEO = 1.5
GPU_CASES = ((256, 16), (512, 8), (1024, 2))  # (px, batch) for EfficientNet-B7 on CUDA
GPU_ENCODER = "efficientnet-b7"
#: a run whose slowest timed step took this many times its fastest was slowed by other programs
CONTENDED_SPREAD = 2.0

LABELS = {
    "a": "(a) pvdetect loop (SegmentationTask + PVDataModule, Lightning)",
    "b": "(b) bare model step, in-memory tensors (ceiling)",
    "c": "(c) TorchGeo SemanticSegmentationTask + SolarPlantsBrazil",
    "d": "(d) prototype-style loop (fp32, rasterio per item, min/max, host Jaccard)",
}


# =========================================================================== timing primitives


@dataclass
class StepEvent:
    """One training batch as seen by a timing probe (``perf_counter`` seconds)."""

    epoch: int
    start: float
    end: float
    images: int


def step_intervals(events: Sequence[StepEvent]) -> list[dict[str, float]]:
    """Per-step intervals: end of the previous batch to the end of this one, same epoch only.

    The first batch of each epoch has no interval (its time holds the DataLoader start-up).
    ``wait`` is the part spent before the batch reached the training step (data loading).
    """
    out: list[dict[str, float]] = []
    prev: StepEvent | None = None
    for ev in events:
        if prev is not None and prev.epoch == ev.epoch:
            out.append(
                {"seconds": ev.end - prev.end, "wait": ev.start - prev.end, "images": ev.images}
            )
        prev = ev
    return out


def throughput(events: Sequence[StepEvent], warmup: int, steps: int) -> dict[str, Any]:
    """Images per second over ``steps`` intervals after ``warmup`` intervals.

    Raises:
        RuntimeError: fewer than ``warmup + steps`` intervals were recorded.
    """
    intervals = step_intervals(events)
    use = intervals[warmup : warmup + steps]
    if len(use) < steps:
        raise RuntimeError(
            f"only {len(intervals)} timed intervals recorded, {warmup + steps} needed"
        )
    seconds = sum(i["seconds"] for i in use)
    images = sum(int(i["images"]) for i in use)
    step_ms = summarize([1000 * i["seconds"] for i in use])
    wait_ms = summarize([1000 * max(0.0, i["wait"]) for i in use])
    per_step = images / len(use)
    fast_ms = _quantile([1000 * i["seconds"] for i in use], 0.25)
    return {
        "images_per_s": images / seconds,
        "images_per_s_median_step": per_step / (step_ms["median"] / 1000),
        "images_per_s_fast_quartile_step": per_step / (fast_ms / 1000),
        "images": images,
        "seconds": seconds,
        "steps": len(use),
        "warmup_steps": warmup,
        "step_ms_median": step_ms["median"],
        "step_ms_min": step_ms["min"],
        "step_ms_max": step_ms["max"],
        "data_wait_ms_median": wait_ms["median"],
        "step_ms_all": [round(1000 * i["seconds"], 2) for i in use],
        "contended": step_ms["max"] > CONTENDED_SPREAD * step_ms["min"],
        "epochs_seen": len({e.epoch for e in events}),
    }


def _median(values: Sequence[float]) -> float:
    return summarize(values)["median"]


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty sequence."""
    vals = sorted(values)
    pos = q * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def _batch_images(batch: Any) -> int:
    """Number of samples in a collated batch (dict, list/tuple or tensor)."""
    import torch

    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        for key in ("image", "images", "x"):
            if isinstance(batch.get(key), torch.Tensor):
                return int(batch[key].shape[0])
        items: Sequence[Any] = list(batch.values())
    elif isinstance(batch, list | tuple):
        items = batch
    else:
        raise TypeError(f"cannot count the samples of a {type(batch).__name__} batch")
    for v in items:
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
    raise TypeError("batch holds no tensor")


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def make_probe(needed: int, device: str) -> Any:
    """A Lightning callback recording :class:`StepEvent` per training batch.

    It asks the Trainer to stop once ``needed`` intervals exist (the current epoch ends then).
    On CUDA each timestamp follows a device synchronisation.
    """
    from lightning.pytorch.callbacks import Callback

    class ThroughputProbe(Callback):
        def __init__(self) -> None:
            self.events: list[StepEvent] = []
            self._start = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
            _sync(device)
            self._start = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
        ) -> None:
            _sync(device)
            now = time.perf_counter()
            self.events.append(
                StepEvent(int(trainer.current_epoch), self._start, now, _batch_images(batch))
            )
            if len(step_intervals(self.events)) >= needed:
                trainer.should_stop = True

    return ThroughputProbe()


@contextlib.contextmanager
def callback_injected(callback: Any) -> Iterator[None]:
    """Append ``callback`` to every Lightning Trainer built inside the block."""
    from lightning.pytorch import Trainer

    original = Trainer.__init__

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        cbs = kwargs.get("callbacks") or []
        cbs = list(cbs) if isinstance(cbs, list | tuple) else [cbs]
        kwargs["callbacks"] = [*cbs, callback]
        original(self, *args, **kwargs)

    Trainer.__init__ = patched  # type: ignore[method-assign]
    try:
        yield
    finally:
        Trainer.__init__ = original  # type: ignore[method-assign]


def epochs_for(n_train: int, batch: int, warmup: int, steps: int) -> int:
    """Epochs that certainly give ``warmup + steps`` timed intervals (drop_last assumed)."""
    per_epoch = max(1, n_train // batch - 1)
    return math.ceil((warmup + steps) / per_epoch) + 1


# ================================================================================= data


def _tif_number(path: str) -> int:
    m = re.search(r"\((\d+)\)", os.path.basename(path))
    return int(m.group(1)) if m else -1


def split_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a Solar-Plants-Brazil split, matched by N."""
    images = {
        _tif_number(p): Path(p) for p in glob.glob(str(root / split / "input" / "img(*).tif"))
    }
    masks = {
        _tif_number(p): Path(p) for p in glob.glob(str(root / split / "labels" / "target(*).tif"))
    }
    return [(images[n], masks[n]) for n in sorted(images) if n in masks]


def _complete(root: Path) -> bool:
    return (root / ".bench_complete").is_file() and bool(split_pairs(root, "train"))


def ensure_dataset(
    root: Path, chips: int = 40, seed: int = 0, chip_size: int = 256, verbose: bool = True
) -> Path:
    """Generate (once) a synthetic Solar-Plants-Brazil dataset for the benchmark."""
    if _complete(root):
        return root
    from pvdetect.synth.dataset import generate_dataset

    if verbose:
        print(f"generating {chips} synthetic {chip_size} px chips into {root} ...", flush=True)
    generate_dataset(
        root, chips=chips, scenes=0, seed=seed, chip_size=chip_size, overwrite=root.exists()
    )
    (root / ".bench_complete").write_text("generated by benchmarks/train_throughput.py\n")
    return root


def mosaic_dataset(src: Path, dst: Path, factor: int) -> Path:
    """Stitch ``factor x factor`` chips of each split of ``src`` into larger chips in ``dst``.

    Pixel content does not matter for throughput; this gives large chips quickly.
    """
    if _complete(dst):
        return dst
    import numpy as np
    from affine import Affine

    from pvdetect.data.raster import read_raster, write_raster

    group = factor * factor
    if dst.exists():
        shutil.rmtree(dst)
    for split in ("train", "val", "test"):
        pairs = split_pairs(src, split)
        for k in range(len(pairs) // group):
            chunk = pairs[k * group : (k + 1) * group]
            imgs, masks = [], []
            info = None
            for img_path, mask_path in chunk:
                img, info = read_raster(img_path)
                mask, _ = read_raster(mask_path)
                imgs.append(img)
                masks.append(mask)
            rows_i = [
                np.concatenate(imgs[r * factor : (r + 1) * factor], axis=2) for r in range(factor)
            ]
            rows_m = [
                np.concatenate(masks[r * factor : (r + 1) * factor], axis=2) for r in range(factor)
            ]
            assert info is not None
            transform = info.transform if info.crs is not None else Affine.identity()
            n = k + 1
            write_raster(
                dst / split / "input" / f"img({n}).tif",
                np.concatenate(rows_i, axis=1),
                crs=info.crs,
                transform=transform,
                nodata=info.nodata,
            )
            write_raster(
                dst / split / "labels" / f"target({n}).tif",
                np.concatenate(rows_m, axis=1),
                crs=info.crs,
                transform=transform,
                nodata=info.nodata,
            )
    (dst / ".bench_complete").write_text(f"mosaic x{factor} of {src}\n")
    return dst


def chip_size_of(root: Path) -> int:
    """Side of the first training chip (chips are assumed square and equal)."""
    import rasterio

    pairs = split_pairs(root, "train")
    if not pairs:
        raise SystemExit(f"{root}: no training chips (expected train/input/img(N).tif)")
    with rasterio.open(pairs[0][0]) as ds:
        return int(ds.height)


# ============================================================================= the four loops


def autocast_dtype(device: str) -> Any:
    """bf16 on CPU and bf16-capable GPUs, else float16."""
    import torch

    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@dataclass
class Stepper:
    """One bare training step per call (see :func:`make_stepper`)."""

    run: Callable[[], StepEvent]
    precision: str

    def __call__(self) -> StepEvent:
        return self.run()


def make_stepper(
    make_model: Callable[[], Any],
    *,
    size: int,
    batch: int,
    device: str,
    amp: bool = True,
    channels_last: bool = True,
    seed: int = 0,
) -> Stepper:
    """A bare training step (forward + backward + Adam) on fixed in-memory tensors.

    Each call runs one step and returns its :class:`StepEvent`; steppers of different settings
    can be called alternately so that load from other programs hits them alike.
    """
    import torch

    torch.manual_seed(seed)
    model = make_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 4, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.97).float()
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device, enabled=amp and dtype == torch.float16)

    def step() -> StepEvent:
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=dtype, enabled=amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        return StepEvent(0, t0, time.perf_counter(), batch)

    precision = f"{str(dtype).removeprefix('torch.')} autocast" if amp else "float32"
    return Stepper(step, precision)


def bare_step(
    make_model: Callable[[], Any],
    *,
    size: int,
    batch: int,
    warmup: int,
    steps: int,
    device: str,
    amp: bool = True,
    channels_last: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """(b): forward + backward + Adam step on fixed in-memory tensors, timed per step."""
    step = make_stepper(
        make_model,
        size=size,
        batch=batch,
        device=device,
        amp=amp,
        channels_last=channels_last,
        seed=seed,
    )
    events = [step() for _ in range(warmup + steps + 1)]
    res = throughput(events, warmup, steps)
    res["precision"] = step.precision
    res["channels_last"] = channels_last
    return res


def pvdetect_loop(
    data: Path,
    *,
    batch: int,
    workers: int,
    warmup: int,
    steps: int,
    device: str,
    encoder: str = "resnet18",
    work_dir: Path,
) -> dict[str, Any]:
    """(a): ``pvdetect.training.train.train`` with a timing callback in its Trainer."""
    from pvdetect.config import config_from_dict
    from pvdetect.data.layouts import find_chips
    from pvdetect.device import resolve_precision
    from pvdetect.training.train import train

    n_train = sum(1 for r in find_chips(data) if r.split == "train")
    accelerator = "gpu" if device == "cuda" else "cpu"
    cfg = config_from_dict(
        {
            "data": {"root": str(data), "batch_size": batch, "num_workers": workers},
            "model": {"arch": "unet", "encoder": encoder, "weights": None},
            "out": str(work_dir / f"run_{encoder}_{os.getpid()}_{time.time_ns()}"),
            "epochs": epochs_for(n_train, batch, warmup, steps),
            "max_val_batches": 1,
            "accelerator": accelerator,
            "devices": 1,
            "progress": False,
            "tensorboard": False,
            "seed": 0,
        }
    )
    probe = make_probe(warmup + steps, device)
    t0 = time.perf_counter()
    try:
        with callback_injected(probe), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(cfg)
    finally:
        shutil.rmtree(cfg.out, ignore_errors=True)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    res = throughput(probe.events, warmup, steps)
    res.update(
        precision=resolve_precision(cfg.precision, accelerator),
        train_call_seconds=wall,
        train_chips=n_train,
        num_workers=workers,
    )
    return res


def _tg_scale(sample: dict[str, Any]) -> dict[str, Any]:
    """TorchGeo transform: reflectance x 10000 -> reflectance (a typical minimal transform)."""
    sample["image"] = sample["image"] / 10000.0
    return sample


def torchgeo_loop(
    data: Path,
    *,
    batch: int,
    workers: int,
    warmup: int,
    steps: int,
    device: str,
    precision: str,
) -> dict[str, Any]:
    """(c): TorchGeo's SemanticSegmentationTask on SolarPlantsBrazil, plain Lightning Trainer."""
    import lightning.pytorch as pl
    import torch
    import torchgeo
    from torch.utils.data import DataLoader
    from torchgeo.datasets import SolarPlantsBrazil
    from torchgeo.trainers import SemanticSegmentationTask

    train_ds = SolarPlantsBrazil(str(data), split="train", transforms=_tg_scale)
    val_ds = SolarPlantsBrazil(str(data), split="val", transforms=_tg_scale)
    loader_kw: dict[str, Any] = {
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": device == "cuda",
    }
    train_dl = DataLoader(train_ds, batch_size=batch, shuffle=True, drop_last=True, **loader_kw)
    val_dl = DataLoader(val_ds, batch_size=batch, **loader_kw)
    torch.manual_seed(0)
    task = SemanticSegmentationTask(
        model="unet",
        backbone="resnet18",
        weights=None,
        in_channels=4,
        task="binary",
        loss="bce",
        lr=1e-3,
    )
    probe = make_probe(warmup + steps, device)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=precision,  # type: ignore[arg-type]
        max_epochs=epochs_for(len(train_ds), batch, warmup, steps),
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, train_dataloaders=train_dl, val_dataloaders=val_dl)
    res = throughput(probe.events, warmup, steps)
    res.update(precision=precision, torchgeo=torchgeo.__version__, num_workers=workers)
    return res


class PrototypeDataset:
    """The prototype's Dataset: rasterio decode per item, per-image min/max scaling."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import numpy as np
        import rasterio
        import torch

        img_path, mask_path = self.pairs[i]
        with rasterio.open(img_path) as src:
            x = src.read().astype(np.float32)
        with rasterio.open(mask_path) as src:
            y = (src.read(1) > 0).astype(np.float32)
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo + 1e-6)
        return torch.from_numpy(x), torch.from_numpy(y)


def prototype_loop(
    data: Path, *, batch: int, workers: int, warmup: int, steps: int, device: str
) -> dict[str, Any]:
    """(d): float32 loop with BCE plus a host-side Jaccard term every step."""
    import segmentation_models_pytorch as smp
    import torch
    from torch.utils.data import DataLoader

    pairs = split_pairs(data, "train")
    loader = DataLoader(
        PrototypeDataset(pairs),  # type: ignore[arg-type]
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
    )
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=1).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bce = torch.nn.BCEWithLogitsLoss()
    events: list[StepEvent] = []
    needed = warmup + steps
    jaccards: list[float] = []
    epoch = 0
    while len(step_intervals(events)) < needed:
        it = iter(loader)
        while True:
            try:
                x, y = next(it)
            except StopIteration:
                break
            _sync(device)
            t0 = time.perf_counter()
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            logits = model(x)
            loss = bce(logits, y[:, None])
            pred = torch.sigmoid(logits).detach().cpu().numpy() > 0.5
            true = y.cpu().numpy()[:, None] > 0.5
            union = (pred | true).sum()
            jac = float((pred & true).sum() / union) if union else 1.0
            jaccards.append(jac)
            total = loss + (1.0 - jac)  # the Jaccard term carries no gradient
            total.backward()
            opt.step()
            _sync(device)
            events.append(StepEvent(epoch, t0, time.perf_counter(), int(x.shape[0])))
            if len(step_intervals(events)) >= needed:
                break
        epoch += 1
        if epoch > 1000:  # pragma: no cover - guards an empty loader
            raise RuntimeError("prototype loop produced no batches")
    res = throughput(events, warmup, steps)
    res.update(precision="float32", channels_last=False, num_workers=workers)
    return res


def pick_torchgeo_precision(device: str, size: int, batch: int, quick: bool) -> dict[str, Any]:
    """TorchGeo's fastest precision here: bf16 autocast vs float32 on the same bare U-Net step.

    On CUDA: ``bf16-mixed`` when supported, else ``16-mixed`` (no measurement needed).
    """
    import torch

    if device == "cuda":
        prec = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return {"precision": prec, "how": "CUDA: mixed precision"}
    import segmentation_models_pytorch as smp

    def make() -> Any:
        return smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=1)

    kw = {"size": size, "batch": batch, "device": device, "channels_last": False}
    bf16 = make_stepper(make, amp=True, **kw)
    fp32 = make_stepper(make, amp=False, **kw)
    bf16(), fp32()  # warm-up
    times: dict[str, list[float]] = {"bf16": [], "fp32": []}
    for _ in range(2 if quick else 3):  # alternate, so both see the same load
        for name, step in (("bf16", bf16), ("fp32", fp32)):
            ev = step()
            times[name].append(ev.end - ev.start)
    med = {k: _median(v) for k, v in times.items()}
    fast = "bf16-mixed" if med["bf16"] <= med["fp32"] else "32-true"
    return {
        "precision": fast,
        "how": "bare model step (NCHW, as TorchGeo runs it), bf16 and fp32 steps alternated",
        "bf16_images_per_s": batch / med["bf16"],
        "fp32_images_per_s": batch / med["fp32"],
    }


# ================================================================================= workers


def _setup_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(max(1, min(threads, 2)))


def worker_main(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement group in this (fresh) process and return its results."""
    _setup_threads(spec["threads"])
    data = Path(spec["data"])
    kw = {
        "batch": spec["batch"],
        "warmup": spec["warmup"],
        "steps": spec["steps"],
        "device": spec["device"],
    }
    work = Path(spec["work_dir"])
    if kind == "ab":
        from pvdetect.model.factory import build_model

        def make() -> Any:
            return build_model("unet", "resnet18", in_channels=4, weights=None)

        size = spec["size"]
        half = {**kw, "steps": math.ceil(kw["steps"] / 2)}
        b1 = bare_step(make, size=size, **half)
        print(f"    (b) before: {b1['images_per_s']:.2f} img/s", flush=True)
        a = pvdetect_loop(data, workers=spec["workers"], work_dir=work, **kw)
        print(f"    (a) pvdetect: {a['images_per_s']:.2f} img/s", flush=True)
        half["steps"] = max(1, kw["steps"] - half["steps"])
        b2 = bare_step(make, size=size, **half)
        print(f"    (b) after: {b2['images_per_s']:.2f} img/s", flush=True)
        images = b1["images"] + b2["images"]
        seconds = b1["seconds"] + b2["seconds"]
        b = {
            **b2,
            "images_per_s": images / seconds,
            "images": images,
            "seconds": seconds,
            "steps": b1["steps"] + b2["steps"],
            "step_ms_all": b1["step_ms_all"] + b2["step_ms_all"],
            "step_ms_median": _median(b1["step_ms_all"] + b2["step_ms_all"]),
            "images_per_s_median_step": kw["batch"]
            / (_median(b1["step_ms_all"] + b2["step_ms_all"]) / 1000),
            "images_per_s_fast_quartile_step": kw["batch"]
            / (_quantile(b1["step_ms_all"] + b2["step_ms_all"], 0.25) / 1000),
            "contended": max(b1["step_ms_all"] + b2["step_ms_all"])
            > CONTENDED_SPREAD * min(b1["step_ms_all"] + b2["step_ms_all"]),
            "before_images_per_s": b1["images_per_s"],
            "after_images_per_s": b2["images_per_s"],
        }
        return {"a": a, "b": b}
    if kind == "c":
        try:
            import torchgeo  # noqa: F401
        except ImportError as exc:
            return {"c": {"skipped": f"torchgeo not importable ({exc})"}}
        prec = spec.get("tg_precision", "auto")
        choice = (
            pick_torchgeo_precision(spec["device"], spec["size"], spec["batch"], spec["quick"])
            if prec == "auto"
            else {"precision": prec, "how": "given"}
        )
        print(f"    TorchGeo precision: {choice['precision']} ({choice['how']})", flush=True)
        c = torchgeo_loop(data, workers=spec["workers"], precision=choice["precision"], **kw)
        c["precision_choice"] = choice
        return {"c": c}
    if kind == "d":
        return {"d": prototype_loop(data, workers=spec["workers"], **kw)}
    if kind == "gpu":
        return {"gpu": gpu_main(spec)}
    raise SystemExit(f"unknown worker {kind!r}")


def gpu_main(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """EfficientNet-B7 U-Net: bare step and pvdetect's loop at 256/512/1024 px on CUDA."""
    import torch

    from pvdetect.model.factory import build_model

    encoder = spec.get("gpu_encoder", GPU_ENCODER)
    base = Path(spec["gpu_data"])
    rows = []
    for size, batch in spec.get("gpu_cases", GPU_CASES):
        data = base / f"px{size}"
        row: dict[str, Any] = {"size": size, "batch": batch, "encoder": encoder}
        kw = {
            "batch": batch,
            "warmup": spec["warmup"],
            "steps": spec["steps"],
            "device": spec["device"],
        }

        def make(encoder: str = encoder) -> Any:
            return build_model("unet", encoder, in_channels=4, weights=None)

        for key in ("bare", "pvdetect"):
            try:
                if key == "bare":
                    res = bare_step(make, size=size, **kw)
                else:
                    res = pvdetect_loop(
                        data,
                        workers=spec["workers"],
                        work_dir=Path(spec["work_dir"]),
                        encoder=encoder,
                        **kw,
                    )
                res["megapixels_per_s"] = res["images_per_s"] * size * size / 1e6
                if spec["device"] == "cuda":
                    res["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
                    torch.cuda.reset_peak_memory_stats()
                row[key] = res
                print(
                    f"    {encoder} {size} px x{batch} {key}: {res['images_per_s']:.1f} img/s",
                    flush=True,
                )
            except Exception as exc:  # noqa: BLE001 - one failing case must not hide the rest
                row[key] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                print(f"    {encoder} {size} px {key}: FAILED {row[key]['error']}", flush=True)
            if spec["device"] == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def prepare_gpu_data(base: Path, sizes: Sequence[tuple[int, int]], chips: int = 240) -> None:
    """256 px synthetic chips plus 2x2 and 4x4 mosaics of them (one folder per size).

    240 chips give ~168 training chips: 10 batches of 16 at 256 px, 5 batches of 8 at 512 px
    and 5 of 2 at 1024 px per epoch (the probe spans epochs where needed).
    """
    src = ensure_dataset(base / "px256", chips=chips, seed=1)
    for size, _ in sizes:
        if size != 256:
            mosaic_dataset(src, base / f"px{size}", size // 256)


# =================================================================================== driver


def _run_worker(
    kind: str, spec: dict[str, Any], timeout: float | None, python: str | None = None
) -> dict[str, Any]:
    """Run ``worker_main(kind)`` in a fresh interpreter (default: this one).

    Errors become ``{"error": ...}`` entries.
    """
    with tempfile.TemporaryDirectory(prefix="ttp_") as tmp:
        spec_path = Path(tmp) / "spec.json"
        res_path = Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({**spec, "work_dir": tmp}))
        env = {"OMP_NUM_THREADS": str(spec["threads"]), "PYTHONUNBUFFERED": "1"}
        cmd = [
            python or sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            kind,
            "--spec",
            str(spec_path),
            "--result",
            str(res_path),
        ]
        load_before = os.getloadavg()[0]
        proc = run_measured(cmd, env=env, capture=False, timeout=timeout)
        load_after = os.getloadavg()[0]
        if res_path.is_file():
            out = json.loads(res_path.read_text())
        else:
            out = {"error": f"worker {kind} exited with {proc.returncode} without a result"}
        for value in out.values():
            if isinstance(value, dict):
                value.setdefault("worker_peak_rss_mb", round(proc.peak_rss_mb, 1))
                value.setdefault("load_avg_1min", [round(load_before, 2), round(load_after, 2)])
        return out


def best_of_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per loop, the round with the highest images/s (other programs only ever slow a run).

    Each kept entry lists every round's figure under ``rounds_images_per_s``; (a)/(b) of each
    round (measured in one process) goes to ``a_over_b_rounds`` of (a).
    """
    out: dict[str, Any] = {}
    for key in "abcd":
        entries = [r[key] for r in rounds if key in r]
        if not entries:
            continue
        ok = [e for e in entries if "images_per_s" in e]
        best = dict(max(ok, key=lambda e: e["images_per_s"]) if ok else entries[-1])
        best["rounds_images_per_s"] = [e.get("images_per_s") for e in entries]
        out[key] = best
    if "a" in out:
        out["a"]["a_over_b_rounds"] = [
            r["a"]["images_per_s"] / r["b"]["images_per_s"]
            for r in rounds
            if "images_per_s" in r.get("a", {}) and "images_per_s" in r.get("b", {})
        ]
    return out


def _fmt(x: Any, nd: int = 2) -> str:
    return f"{x:.{nd}f}" if isinstance(x, int | float) else "n/a"


def _ips(res: dict[str, Any] | None, key: str = "images_per_s") -> float | None:
    if not res or key not in res:
        return None
    return float(res[key])


def evaluate_goals(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios and PASS/FAIL of the two goals (None where a figure is missing)."""
    a, b, c, d = (_ips(results.get(k)) for k in "abcd")

    def ratio(x: float | None, y: float | None) -> float | None:
        return x / y if x is not None and y else None

    ab, ac, ad = ratio(a, b), ratio(a, c), ratio(a, d)
    am, bm, cm, dm = (_ips(results.get(k), "images_per_s_median_step") for k in "abcd")
    aq, bq, cq, dq = (_ips(results.get(k), "images_per_s_fast_quartile_step") for k in "abcd")
    qab, qac = ratio(aq, bq), ratio(aq, cq)
    return {
        "a_over_b": ab,
        "a_over_c": ac,
        "a_over_d": ad,
        "median_step_a_over_b": ratio(am, bm),
        "median_step_a_over_c": ratio(am, cm),
        "median_step_a_over_d": ratio(am, dm),
        "fast_quartile_a_over_b": qab,
        "fast_quartile_a_over_c": qac,
        "fast_quartile_a_over_d": ratio(aq, dq),
        "goal_a_ge_0.9b": None if ab is None else ab >= GOAL_VS_BARE,
        "goal_a_ge_1.5c": None if ac is None else ac >= GOAL_VS_TORCHGEO,
        "fast_quartile_goal_a_ge_0.9b": None if qab is None else qab >= GOAL_VS_BARE,
        "fast_quartile_goal_a_ge_1.5c": None if qac is None else qac >= GOAL_VS_TORCHGEO,
    }


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def render_markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md section body."""
    s = report["settings"]
    res = report["results"]
    g = report["goals"]
    lines = [
        f"Date: {report['machine']['date']}. Machine: {machine_line(report['machine'])}.",
        "",
        f"U-Net + ResNet-18, 4 bands, {s['size']} px, batch {s['batch']}, random init; "
        f"{s['steps']} timed steps after {s['warmup']} warm-up step(s) (and the first batch of "
        f"every epoch); {s['threads']} torch threads and {s['workers']} DataLoader workers in "
        f"every loop; data: {s['data_desc']}. Each loop ran {s.get('repeats', 1)} time(s), in "
        f"rounds (a+b, c, d, a+b, ...); the table shows each loop's best round. "
        f"Command: `{s['command']}`.",
        "",
    ]
    rows = []
    for key in "abcd":
        r = res.get(key) or {}
        if "images_per_s" in r:
            rows.append(
                [
                    LABELS[key],
                    _fmt(r["images_per_s"]) + (" (contended)" if r.get("contended") else ""),
                    _fmt(r.get("images_per_s_fast_quartile_step")),
                    _fmt(r.get("step_ms_median"), 0),
                    _fmt(r.get("data_wait_ms_median"), 0),
                    r.get("precision", ""),
                ]
            )
        else:
            why = r.get("skipped") or r.get("error") or "not run"
            rows.append([LABELS[key], "n/a", "", "", "", f"not measured: {why}"])
    lines.append(
        markdown_table(
            [
                "loop",
                "images/s",
                "images/s, fastest quarter of steps",
                "median ms/step",
                "median data wait ms/step",
                "precision",
            ],
            rows,
        )
    )
    b = res.get("b") or {}
    if "before_images_per_s" in b:
        lines += [
            "",
            f"(b) combines two runs in the same process as (a), right before "
            f"({_fmt(b['before_images_per_s'])} img/s) and right after "
            f"({_fmt(b['after_images_per_s'])} img/s) it.",
        ]
    choice = (res.get("c") or {}).get("precision_choice")
    if choice and "bf16_images_per_s" in choice:
        lines.append(
            f"TorchGeo precision {choice['precision']}: the bare NCHW step ran "
            f"{_fmt(choice['bf16_images_per_s'])} img/s with bf16 autocast and "
            f"{_fmt(choice['fp32_images_per_s'])} img/s in float32 here."
        )
    lines += [
        "",
        f"- (a) / (b) = {_fmt(g['a_over_b'])} (goal >= {GOAL_VS_BARE}): "
        f"**{_verdict(g['goal_a_ge_0.9b'])}**",
        f"- (a) / (c) = {_fmt(g['a_over_c'])} (goal >= {GOAL_VS_TORCHGEO}): "
        f"**{_verdict(g['goal_a_ge_1.5c'])}**",
        f"- (a) / (d) = {_fmt(g['a_over_d'])} (pvdetect against the prototype's way)",
        f"- the same ratios from median step times (less sensitive to other programs' load): "
        f"(a)/(b) {_fmt(g['median_step_a_over_b'])}, (a)/(c) {_fmt(g['median_step_a_over_c'])}, "
        f"(a)/(d) {_fmt(g['median_step_a_over_d'])}",
        f"- and from the fastest quarter of the steps (close to an unloaded machine): "
        f"(a)/(b) {_fmt(g.get('fast_quartile_a_over_b'))}, "
        f"(a)/(c) {_fmt(g.get('fast_quartile_a_over_c'))}, "
        f"(a)/(d) {_fmt(g.get('fast_quartile_a_over_d'))}; goals on these: "
        f"{_verdict(g.get('fast_quartile_goal_a_ge_0.9b'))}, "
        f"{_verdict(g.get('fast_quartile_goal_a_ge_1.5c'))}",
    ]
    if any((res.get(k) or {}).get("contended") for k in "abcd"):
        lines.append(
            "- (contended): the slowest timed step took more than "
            f"{CONTENDED_SPREAD:g}x the fastest, i.e. other programs slowed that run"
        )
    rounds = {k: (res.get(k) or {}).get("rounds_images_per_s") for k in "abcd"}
    if any(v and len(v) > 1 for v in rounds.values()):
        shown = "; ".join(f"({k}) " + ", ".join(_fmt(x) for x in v) for k, v in rounds.items() if v)
        lines.append(f"- images/s of every round: {shown}")
        per_round = (res.get("a") or {}).get("a_over_b_rounds")
        if per_round:
            lines.append(
                "- (a)/(b) within each round (same process, back to back): "
                + ", ".join(_fmt(x) for x in per_round)
            )
    loads = {k: (res.get(k) or {}).get("load_avg_1min") for k in "abcd" if (res.get(k) or {})}
    if any(loads.values()):
        shown = ", ".join(f"({k}) {v[0]}-{v[1]}" for k, v in loads.items() if v)
        lines.append(f"- 1-minute load average before/after the best round of each: {shown}")
    gpu = res.get("gpu")
    gm = report.get("gpu_machine") or report["machine"]
    if isinstance(gpu, list) and gpu:
        lines += [
            "",
            f"GPU ({gm.get('gpu')}, torch {gm.get('torch')}, {gm.get('date', '')[:10]}), "
            f"U-Net + {GPU_ENCODER}, random init, bf16 autocast, channels_last, "
            f"{gpu[0].get('bare', {}).get('steps', '?')} timed steps after warm-up; "
            f"pvdetect's loop on synthetic chips (256 px, and 2x2 / 4x4 mosaics of them):",
            "",
        ]
        grow = []
        for row in gpu:
            bare, pv = row.get("bare", {}), row.get("pvdetect", {})
            grow.append(
                [
                    f"{row['size']} px",
                    row["batch"],
                    _fmt(bare.get("images_per_s"), 1),
                    _fmt(bare.get("megapixels_per_s"), 1),
                    _fmt(pv.get("images_per_s"), 1),
                    _fmt(pv.get("megapixels_per_s"), 1),
                    _fmt(
                        pv["images_per_s"] / bare["images_per_s"]
                        if "images_per_s" in pv and "images_per_s" in bare
                        else None
                    ),
                ]
            )
        lines.append(
            markdown_table(
                [
                    "size",
                    "batch",
                    "bare img/s",
                    "bare MP/s",
                    "pvdetect img/s",
                    "pvdetect MP/s",
                    "pvdetect / bare",
                ],
                grow,
            )
        )
    lines += [
        "",
        "A step is timed from the end of one training batch to the end of the next in the same "
        "epoch, so data loading, copies, forward, backward, optimiser step and per-step callbacks "
        "all count. (a) is timed by a callback added to the Trainer that "
        "`pvdetect.training.train.train` "
        "builds; (c) uses TorchGeo's own dataset and task, plus only a /10000 scaling transform. "
        "The machine may be shared: compare ratios, which come from back-to-back runs, rather "
        "than absolute figures.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="Solar-Plants-Brazil layout folder")
    p.add_argument("--steps", type=int, default=None, help="timed steps per loop (default 10)")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps after the first batch of the run (default 1)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, 1 round")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds of all loops; each loop's best round counts (default 2, --quick 1)",
    )
    p.add_argument("--out", type=Path, default=BENCH_OUT / f"{NAME}.json")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--num-workers", type=int, default=None, help="default: pvdetect's default")
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument(
        "--tg-precision",
        default="auto",
        choices=("auto", "bf16-mixed", "16-mixed", "32-true"),
        help="TorchGeo precision (auto: the faster of bf16-mixed and 32-true here)",
    )
    p.add_argument(
        "--tg-python",
        default=None,
        help="interpreter for the TorchGeo loop when torchgeo lives in another environment",
    )
    p.add_argument(
        "--only",
        default="abcdg",
        help="parts to run: any of a, b, c, d (a and b run together) and g (the CUDA "
        "EfficientNet-B7 part, only where CUDA is available)",
    )
    p.add_argument("--no-gpu", action="store_true", help="skip the CUDA EfficientNet-B7 part")
    p.add_argument(
        "--gpu-results",
        type=Path,
        default=None,
        help="JSON of an earlier run on a CUDA machine whose GPU figures to include",
    )
    p.add_argument("--gpu-steps", type=int, default=None, help="timed steps on GPU (default 10)")
    p.add_argument(
        "--results-md",
        dest="results_md",
        action="store_true",
        default=None,
        help="update benchmarks/RESULTS.md (default: yes, except with --quick)",
    )
    p.add_argument("--no-results-md", dest="results_md", action="store_false")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    p.add_argument("--strict", action="store_true", help="exit 3 when a goal fails")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 3 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--steps and --batch-size must be >= 1, --warmup >= 0")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.results_md is None:
        args.results_md = not args.quick
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.spec.read_text())
        try:
            result = worker_main(args.worker, spec)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which goes on
            traceback.print_exc()
            result = {k: {"error": f"{type(exc).__name__}: {exc}"} for k in args.worker}
            if args.worker == "gpu":
                result = {"gpu": {"error": f"{type(exc).__name__}: {exc}"}}
        args.result.write_text(json.dumps(result, default=str))
        return 0

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = args.threads or torch.get_num_threads()
    workers = args.num_workers
    if workers is None:
        from pvdetect.config import DataConfig

        workers = DataConfig().num_workers
    data = args.data.resolve() if args.data else ensure_dataset(DEFAULT_DATA, chips=40, seed=0)
    if not split_pairs(data, "train"):
        msg = "no train/input/img(N).tif with train/labels/target(N).tif"
        print(f"error: {data}: {msg}", file=sys.stderr)
        return 2
    size = chip_size_of(data)
    command = (
        "python benchmarks/train_throughput.py"
        + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    spec = {
        "data": str(data),
        "size": size,
        "batch": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": threads,
        "workers": workers,
        "device": device,
        "quick": args.quick,
        "tg_precision": args.tg_precision,
    }
    info = machine_info()
    print(f"training throughput on {machine_line(info)}", flush=True)
    print(
        f"  data {data} ({size} px), batch {args.batch_size}, {args.steps} timed steps after "
        f"{args.warmup} warm-up, {threads} threads, {workers} workers",
        flush=True,
    )
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    rounds: list[dict[str, Any]] = []
    groups = [("ab", "(a)+(b)"), ("c", "(c) TorchGeo"), ("d", "(d) prototype")]
    for rnd in range(args.repeats):
        this: dict[str, Any] = {}
        for kind, label in groups:
            if not set(kind) & set(args.only):
                continue
            print(f"- round {rnd + 1}/{args.repeats}: {label} ...", flush=True)
            t0 = time.perf_counter()
            python = args.tg_python if kind == "c" else None
            this.update(_run_worker(kind, spec, args.timeout, python))
            timings[f"{kind}_round{rnd + 1}"] = time.perf_counter() - t0
            for k in kind:
                r = this.get(k, {})
                msg = _fmt(r.get("images_per_s")) + " img/s" if "images_per_s" in r else r
                print(f"  {LABELS[k]}: {msg}", flush=True)
            choice = (this.get("c") or {}).get("precision_choice")
            if kind == "c" and choice:  # later rounds reuse the measured choice
                spec["tg_precision"] = choice["precision"]
        rounds.append(this)
    results.update(best_of_rounds(rounds))

    gpu_machine = info
    if device == "cuda" and not args.no_gpu and "g" in args.only:
        gpu_steps = args.gpu_steps or (3 if args.quick else 10)
        gpu_warm = 1 if args.quick else 3
        gpu_data = BENCH_OUT / "data_train_gpu"
        print("- GPU: EfficientNet-B7 U-Net ...", flush=True)
        prepare_gpu_data(gpu_data, GPU_CASES)
        gspec = {**spec, "steps": gpu_steps, "warmup": gpu_warm, "gpu_data": str(gpu_data)}
        t0 = time.perf_counter()
        results.update(_run_worker("gpu", gspec, args.timeout))
        timings["gpu"] = time.perf_counter() - t0

    elif args.gpu_results is not None:
        try:
            earlier = json.loads(args.gpu_results.read_text())
            results["gpu"] = earlier["results"]["gpu"]
            gpu_machine = earlier["machine"]
            results["gpu_source"] = str(args.gpu_results)
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: {args.gpu_results}: no GPU results in it ({exc})", file=sys.stderr)
            return 2

    goals = evaluate_goals(results)
    data_desc = (
        f"{len(split_pairs(data, 'train'))} training chips in "
        + (str(data.relative_to(REPO_ROOT)) if data.is_relative_to(REPO_ROOT) else str(data))
        + (" (synthetic, seed 0)" if args.data is None else "")
    )
    report = {
        "benchmark": NAME,
        "machine": info,
        "settings": {
            **spec,
            "repeats": args.repeats,
            "data_desc": data_desc,
            "command": command,
            "quick": args.quick,
        },
        "results": results,
        "goals": goals,
        "worker_seconds": timings,
        "gpu_machine": gpu_machine if "gpu" in results else None,
    }
    out = write_json(args.out, report)
    print()
    for key in "abcd":
        print(f"{LABELS[key]:<80s} {_fmt(_ips(results.get(key))):>8s} img/s")
    print(
        f"goal (a) >= {GOAL_VS_BARE} x (b): (a)/(b) = {_fmt(goals['a_over_b'])} "
        f"{_verdict(goals['goal_a_ge_0.9b'])}"
    )
    print(
        f"goal (a) >= {GOAL_VS_TORCHGEO} x (c): (a)/(c) = {_fmt(goals['a_over_c'])} "
        f"{_verdict(goals['goal_a_ge_1.5c'])}"
    )
    print(f"(a)/(d) = {_fmt(goals['a_over_d'])}")
    contended = [k for k in "abcd" if (results.get(k) or {}).get("contended")]
    if contended:
        print(f"note: other programs slowed the best run of {', '.join(contended)}")
    print(
        "from median step times: "
        f"(a)/(b) = {_fmt(goals['median_step_a_over_b'])}, "
        f"(a)/(c) = {_fmt(goals['median_step_a_over_c'])}, "
        f"(a)/(d) = {_fmt(goals['median_step_a_over_d'])}"
    )
    print(
        "from the fastest quarter of steps: "
        f"(a)/(b) = {_fmt(goals['fast_quartile_a_over_b'])}, "
        f"(a)/(c) = {_fmt(goals['fast_quartile_a_over_c'])}, "
        f"(a)/(d) = {_fmt(goals['fast_quartile_a_over_d'])}; goals "
        f"{_verdict(goals['fast_quartile_goal_a_ge_0.9b'])}, "
        f"{_verdict(goals['fast_quartile_goal_a_ge_1.5c'])}"
    )
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores; figures are noisy")
    print(f"wrote {out}")
    if args.results_md:
        md = update_results_section(SECTION, render_markdown(report))
        print(f"updated {md} (section '{SECTION}')")
    failed = [k for k in "abcd" if k in args.only and "error" in (results.get(k) or {})]
    gpu_res = results.get("gpu")
    if isinstance(gpu_res, dict) or (
        isinstance(gpu_res, list)
        and any("error" in v for r in gpu_res for v in r.values() if isinstance(v, dict))
    ):
        failed.append("gpu")
    if failed:
        print(f"error: measurement failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.strict and (goals["goal_a_ge_0.9b"] is False or goals["goal_a_ge_1.5c"] is False):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
