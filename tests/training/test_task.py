"""Tests of the Lightning task: on-device preprocessing, padding, optimiser, metrics."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from pvdetect.config import config_from_dict
from pvdetect.data.layouts import find_chips
from pvdetect.data.module import PVDataModule
from pvdetect.data.packed import build_cache
from pvdetect.errors import ConfigError
from pvdetect.synth.dataset import generate_dataset
from pvdetect.training.task import SegmentationTask, cosine_factor

STATS = {"mean": [1000.0, 900.0, 700.0, 2500.0], "std": [400.0, 300.0, 250.0, 1000.0]}


def _task(**over) -> SegmentationTask:
    cfg = {"model": {"weights": None}, "seed": 3}
    for k, v in over.items():
        section, _, key = k.partition("__")
        if key:
            cfg.setdefault(section, {})[key] = v
        else:
            cfg[section] = v
    return SegmentationTask(config_from_dict(cfg), STATS, in_channels=4, chip_size=(64, 64))


def _batch(b: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 4, size, size, generator=g) * 3000
    valid = torch.ones(b, size, size, dtype=torch.bool)
    valid[:, ::8] = False  # every crop holds invalid rows
    image[:, :, ::8] = 0
    mask = torch.zeros(b, size, size, dtype=torch.uint8)
    mask[:, 20:40, 10:30] = 1
    mask[~valid] = 255
    return {"image": image, "mask": mask, "valid": valid, "index": torch.arange(b)}


def test_train_crops_before_upscaling_and_keeps_batch_geometry() -> None:
    task = _task(upscale__factor=2, data__crop_size=64)
    assert task.crop_size == 64
    batch = _batch()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x, mask, valid = task.prepare_train(batch, g1)
    # 32 px crop at the native resolution, upscaled x2 to the 64 px crop size
    assert x.shape == (2, 4, 64, 64) and mask.shape == valid.shape == (2, 64, 64)
    assert set(mask.unique().tolist()) <= {0, 1, 255}
    assert bool((mask[~valid] == 255).all())  # invalid pixels are never labelled
    assert bool((~valid).any()) and float((x * (~valid).unsqueeze(1)).abs().sum()) == 0.0
    x2, mask2, _ = task.prepare_train(batch, g2)
    assert torch.equal(x, x2) and torch.equal(mask, mask2)  # reproducible per generator
    # the default crop is the whole upscaled chip
    full = _task(upscale__factor=2)
    assert full.crop_size == 128
    assert full.prepare_train(batch, torch.Generator().manual_seed(0))[0].shape[-1] == 128


def test_eval_covers_whole_chips_normalised() -> None:
    task = _task(upscale__factor=4)
    batch = _batch()
    x, mask, valid = task.prepare_eval(batch)
    assert x.shape == (2, 4, 256, 256) and mask.shape == (2, 256, 256)
    plain = _task()
    x1, _, v1 = plain.prepare_eval(batch)
    mean = torch.tensor(STATS["mean"]).view(1, 4, 1, 1)
    std = torch.tensor(STATS["std"]).view(1, 4, 1, 1)
    expect = torch.where(v1.unsqueeze(1), (batch["image"] - mean) / std, torch.zeros(()))
    torch.testing.assert_close(x1, expect)


def test_crop_larger_than_chip_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="crop_size"):
        _task(data__crop_size=96)


def test_forward_pads_sizes_that_are_not_a_multiple() -> None:
    task = _task().eval()
    with torch.no_grad():
        out = task(torch.randn(1, 4, 48, 40))
    assert out.shape == (1, 1, 48, 40)


def test_optimizer_and_scheduler() -> None:
    conf = _task(optim={"optimizer": "adam", "lr": 0.01}).configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.Adam)
    assert not isinstance(conf["optimizer"], torch.optim.AdamW)
    sched = conf["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert sched.factor == 0.5 and sched.patience == 5
    assert conf["lr_scheduler"]["monitor"] == "val_loss"
    opt = _task().configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"]  # fused kernel on CPU


def test_cosine_factor_warms_up_then_decays_to_the_floor() -> None:
    f = [cosine_factor(i, total=100, warmup=0.1, floor=0.01) for i in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:9], f[1:10], strict=True))  # linear rise
    assert all(a >= b for a, b in zip(f[10:100], f[11:101], strict=True))  # then falls
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down at mid-decay
    assert f[100] == pytest.approx(0.01) and f[119] == pytest.approx(0.01)  # stays at the floor
    assert cosine_factor(0, total=10, warmup=0.0) == pytest.approx(1.0)


def test_plateau_scheduler_steps_with_validation_rounds() -> None:
    conf = _task(val_every=3).configure_optimizers()
    assert conf["lr_scheduler"]["frequency"] == 3


def test_validation_logs_upscaled_and_native_metrics(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    generate_dataset(ds, chips=6, scenes=0, seed=1, chip_size=64)
    cache = build_cache(find_chips(ds), tmp_path / "cache")
    dm = PVDataModule(cache, batch_size=2, val_batch_size=4, num_workers=0)
    task = SegmentationTask(
        config_from_dict({"model": {"weights": None}, "upscale": {"factor": 2}}),
        cache.stats,
        chip_size=(64, 64),
    )
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.validate(task, datamodule=dm, verbose=False)
    m = trainer.callback_metrics
    for key in ("val_loss", "val_iou", "val_f1", "val_iou_native", "val_f1_native"):
        assert key in m and 0 <= float(m[key]) < 10, key
    n_val = len(cache.indices("val"))
    labelled = int((cache.masks[cache.indices("val")] != 255).sum())
    # histograms count every labelled pixel once, at x2 (4 sub-pixels) and at native resolution
    assert task.last_val["hist"].total == 4 * labelled
    assert task.last_val["hist_native"].total == labelled
    assert n_val >= 1


def test_mirrored_windows_in_training_and_validation() -> None:
    batch = _batch()
    batch["valid"][:] = False
    batch["valid"][:, 16:48, 8:40] = True  # the imaged window of a plant-cut chip
    batch["mask"][batch["valid"] & (batch["mask"] == 255)] = 0
    batch["mask"][~batch["valid"]] = 255
    on, off = _task(data__mirror_windows=True), _task()
    x, mask, valid = on.prepare_eval(batch)
    assert bool(valid.all()) and not bool((mask == 255).any())
    assert int((mask == 1).sum()) > int((batch["mask"] == 1).sum())  # the plant mirrored too
    x_off, _, valid_off = off.prepare_eval(batch)
    assert torch.equal(valid_off, batch["valid"]) and torch.equal(
        x[:, :, 16:48, 8:40], x_off[:, :, 16:48, 8:40]
    )
    _, mask_t, valid_t = on.prepare_train(batch, torch.Generator().manual_seed(2))
    assert bool(valid_t.all()) and not bool((mask_t == 255).any())
    assert on.hparams["config"]["data"]["mirror_windows"] is True
    assert off.hparams["config"]["data"]["mirror_windows"] is False


def test_spectral_augmentation_changes_training_inputs_only() -> None:
    on = _task(augment__spectral=True, augment__p=1.0)
    off = _task()
    batch = _batch()
    x_on, m_on, v_on = on.prepare_train(batch, torch.Generator().manual_seed(4))
    x_off, m_off, v_off = off.prepare_train(batch, torch.Generator().manual_seed(4))
    # the same flips (the spectral draws come after them), other spectra on valid pixels only
    assert torch.equal(m_on, m_off) and torch.equal(v_on, v_off)
    inv = ~v_on.unsqueeze(1).expand_as(x_on)
    assert bool(inv.any()) and bool((x_on[inv] == 0).all())  # nodata stays the band mean
    assert bool((x_on[~inv] != x_off[~inv]).float().mean() > 0.99)
    # off at validation: the same inputs with and without it
    assert torch.equal(on.prepare_eval(batch)[0], off.prepare_eval(batch)[0])
    # off by default, and recorded in the configuration
    assert off.jitter is None and off.hparams["config"]["augment"]["spectral"] is False
    assert on.hparams["config"]["augment"]["spectral"] is True
