"""Tests of the data module: epoch composition, oversampling, sharding, batches, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pvdetect.data.layouts import find_chips
from pvdetect.data.module import EpochSampler, PVDataModule, epoch_order
from pvdetect.data.packed import build_cache
from pvdetect.errors import DataError
from pvdetect.synth.dataset import generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("module") / "ds"
    generate_dataset(out, chips=14, scenes=0, seed=0, chip_size=64)
    return out


def _pools(n_empty: int = 100, n_pv: int = 20) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(1000, 1000 + n_empty + n_pv)
    pv = np.r_[np.zeros(n_empty), np.linspace(0.01, 0.5, n_pv)]
    return idx, pv


def test_drop_empty_drops_each_empty_chip_with_the_probability() -> None:
    idx, pv = _pools()
    kept = np.zeros(len(idx))
    epochs = 300
    for e in range(epochs):
        order = epoch_order(idx, pv, epoch=e, seed=1, drop_empty=0.3)
        assert len(order) == 20 + 70  # constant epoch length
        assert len(np.unique(order)) == len(order)  # no repeats without oversampling
        kept += np.isin(idx, order)
    assert np.all(kept[100:] == epochs)  # PV chips are never dropped
    rate = kept[:100] / epochs
    assert abs(rate.mean() - 0.7) < 1e-9  # exactly round(0.3 * 100) dropped per epoch
    assert rate.min() > 0.55 and rate.max() < 0.85  # and every empty chip has its turn
    # resampled per epoch, reproducible per (seed, epoch)
    a = epoch_order(idx, pv, epoch=0, seed=1, drop_empty=0.3)
    assert not np.array_equal(a, epoch_order(idx, pv, epoch=1, seed=1, drop_empty=0.3))
    assert np.array_equal(a, epoch_order(idx, pv, epoch=0, seed=1, drop_empty=0.3))
    assert not np.array_equal(a, epoch_order(idx, pv, epoch=0, seed=2, drop_empty=0.3))
    # drop everything empty
    assert set(epoch_order(idx, pv, epoch=0, drop_empty=1.0)) == set(idx[100:])


def test_oversampling_pv_chips_follows_the_weights() -> None:
    idx, pv = _pools()
    w = 4.0
    draws = np.concatenate(
        [epoch_order(idx, pv, epoch=e, seed=0, oversample_pv=w) for e in range(200)]
    )
    share = np.isin(draws, idx[100:]).mean()
    expected = 20 * (1 + w) / (100 + 20 * (1 + w))  # 0.5
    assert abs(share - expected) < 0.02
    plain = np.concatenate([epoch_order(idx, pv, epoch=e) for e in range(50)])
    assert abs(np.isin(plain, idx[100:]).mean() - 20 / 120) < 1e-9
    # combined: drop half the empty chips and oversample what is left
    both = np.concatenate(
        [epoch_order(idx, pv, epoch=e, drop_empty=0.5, oversample_pv=w) for e in range(200)]
    )
    assert abs(np.isin(both, idx[100:]).mean() - 100 / 150) < 0.02


def test_sampler_shards_training_and_evaluation() -> None:
    idx, pv = _pools(9, 4)
    shards = [EpochSampler(idx, pv, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(5)
    lists = [list(s) for s in shards]
    assert len(lists[0]) == len(lists[1]) == len(shards[0]) == 7  # 13 padded to 14
    merged = [x for pair in zip(*lists, strict=True) for x in pair]
    glob = epoch_order(idx, pv, epoch=5, seed=3)
    assert merged[:13] == glob.tolist() and merged[13] == glob[0]
    ev = [EpochSampler(idx, shuffle=False, rank=r, world_size=2) for r in range(2)]
    assert sorted(list(ev[0]) + list(ev[1])) == idx.tolist()  # no padding, no repeats
    assert len(ev[0]) == 7 and len(ev[1]) == 6


def test_datamodule_batches_and_epoch_order(dataset: Path, tmp_path: Path) -> None:
    cache = build_cache(find_chips(dataset), tmp_path / "cache")
    dm = PVDataModule(cache, batch_size=3, val_batch_size=2, num_workers=0, seed=0)
    loader = dm.train_dataloader()
    assert len(loader) == len(cache.indices("train")) // 3  # incomplete batch dropped
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 4, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (3, 64, 64) and batch["mask"].dtype == torch.uint8
    assert batch["valid"].dtype == torch.bool
    i = int(batch["index"][0])
    assert cache.records[i].split == "train"
    np.testing.assert_array_equal(batch["image"][0].numpy(), cache.images[i])
    np.testing.assert_array_equal(batch["mask"][0].numpy(), cache.masks[i])
    # the order is a function of the epoch, set by Lightning through the batch sampler
    sampler = loader.batch_sampler.sampler
    first = [b["index"].tolist() for b in loader]
    sampler.set_epoch(1)
    second = [b["index"].tolist() for b in loader]
    sampler.set_epoch(0)
    assert [b["index"].tolist() for b in loader] == first != second
    val = list(dm.val_dataloader())
    got = torch.cat([b["index"] for b in val]).tolist()
    assert got == cache.indices("val").tolist()


def test_empty_split_is_a_data_error(dataset: Path, tmp_path: Path) -> None:
    records = [
        dataclasses.replace(r, split="train") if r.split == "val" else r
        for r in find_chips(dataset)
    ]
    cache = build_cache(records, tmp_path / "cache")
    with pytest.raises(DataError, match="validation split is empty"):
        PVDataModule(cache, source=dataset)
