"""Lightning data module over a packed chip cache.

Batches are raw tensors read straight from the cache's memory maps (one fancy-indexed read per
batch): ``image`` float32 ``[B, C, H, W]`` reflectance (invalid pixels 0), ``mask`` uint8
``[B, H, W]`` (0/1, 255 = ignore), ``valid`` bool ``[B, H, W]`` and ``index`` int64 ``[B]``.
Normalisation, augmentation, cropping and upscaling happen on the device in
:class:`pvdetect.training.task.SegmentationTask`, never in the workers.

The order of training chips is a pure function of ``(seed, epoch)``: every epoch draws its own
permutation (and its own set of dropped empty chips, and its own weighted draw when PV chips are
oversampled) from ``numpy.random.default_rng([seed, epoch])``, so an interrupted run that is
resumed sees exactly the batches an uninterrupted run would. Under DDP every rank draws the
same global order and takes every ``world_size``-th element of it.

With several sources (a :class:`~pvdetect.data.sources.SourceSet`), :func:`mixed_epoch_order`
draws the epoch: as many draws as the sources' training chips after ``drop_empty``; each draw
picks a source with probability weight / (sum of weights) and takes the next chip of that
source's own order (see :class:`SourcePool`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from pvdetect.data.packed import ChipDataset, PackedCache
from pvdetect.errors import ConfigError, DataError

__all__ = [
    "ChipBatchDataset",
    "EpochSampler",
    "PVDataModule",
    "SourcePool",
    "epoch_order",
    "mixed_epoch_order",
]


def _epoch_pool(
    indices: np.ndarray, has_pv: np.ndarray, rng: np.random.Generator, drop_empty: float
) -> tuple[np.ndarray, np.ndarray]:
    """The chips left after dropping ``round(drop_empty * n_empty)`` empty chips at random."""
    if drop_empty <= 0:
        return indices, has_pv
    empty = indices[~has_pv]
    keep = len(empty) - int(round(drop_empty * len(empty)))
    survivors = np.sort(rng.choice(empty, size=keep, replace=False)) if keep else empty[:0]
    pool = np.concatenate([indices[has_pv], survivors])
    return pool, np.concatenate([np.ones(int(has_pv.sum()), bool), np.zeros(keep, bool)])


def epoch_order(
    indices: np.ndarray,
    pv_fraction: np.ndarray,
    *,
    epoch: int,
    seed: int = 0,
    drop_empty: float = 0.0,
    oversample_pv: float = 0.0,
) -> np.ndarray:
    """The training chips of one epoch, in order (a pure function of its arguments).

    Args:
        indices: Cache indices of the training chips.
        pv_fraction: PV share per chip, aligned with ``indices``.
        epoch: Epoch number (0-based).
        seed: Run seed.
        drop_empty: Probability of dropping a chip without PV from this epoch. Exactly
            ``round(drop_empty * n_empty)`` empty chips are left out, chosen uniformly at
            random, so every empty chip is dropped with that probability and the epoch length
            stays constant.
        oversample_pv: With ``W > 0``, the epoch is a weighted draw with replacement (as
            :class:`torch.utils.data.WeightedRandomSampler`) in which a chip holding PV weighs
            ``1 + W`` and an empty chip 1; without, a permutation.

    Returns:
        int64 cache indices, ``epoch_length`` of them.
    """
    indices = np.asarray(indices, dtype=np.int64)
    pv = np.asarray(pv_fraction, dtype=np.float64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)])
    pool, has_pv = _epoch_pool(indices, pv > 0, rng, drop_empty)
    if oversample_pv > 0 and len(pool):
        weights = 1.0 + float(oversample_pv) * has_pv
        return rng.choice(pool, size=len(pool), replace=True, p=weights / weights.sum())
    return rng.permutation(pool)


@dataclass(frozen=True)
class SourcePool:
    """The training chips of one source and how :func:`mixed_epoch_order` draws them.

    Attributes:
        indices: int64 cache indices of the source's training chips.
        pv_fraction: PV share per chip, aligned with ``indices``.
        weight: Sampling weight: the expected share of an epoch's draws is
            ``weight / sum(weights)``.
        drop_empty: Share of the source's empty chips left out of each epoch (as in
            :func:`epoch_order`).
        oversample_pv: With ``W > 0`` the source's chips are drawn with replacement, a chip
            holding PV weighing ``1 + W``; else they come in shuffled order, a fresh
            permutation each time the source runs out.
        name: For messages.
        until_epoch: The source is drawn in the epochs before this one only (a final phase
            without it, e.g. on the labelled data alone); None: in every epoch.
    """

    indices: np.ndarray
    pv_fraction: np.ndarray
    weight: float = 1.0
    drop_empty: float = 0.0
    oversample_pv: float = 0.0
    name: str = ""
    until_epoch: int | None = None

    def weight_at(self, epoch: int) -> float:
        """Sampling weight in ``epoch`` (0 from ``until_epoch`` on)."""
        if self.until_epoch is not None and epoch >= self.until_epoch:
            return 0.0
        return self.weight

    @property
    def size(self) -> int:
        """Chips in the source's pool of an epoch (after ``drop_empty``)."""
        n_empty = int((np.asarray(self.pv_fraction) <= 0).sum())
        return len(self.indices) - int(round(self.drop_empty * n_empty))


def mixed_epoch_order(pools: Sequence[SourcePool], *, epoch: int, seed: int = 0) -> np.ndarray:
    """The training chips of one epoch drawn from several sources (a pure function).

    The epoch has ``sum(pool.size)`` draws. The source of each draw is chosen independently
    with probability ``weight / sum(weights)`` (so the counts per source are multinomial);
    the draws of a source take its chips in the order of its own generator
    (``default_rng([seed, epoch, 1 + source])``): the pool after ``drop_empty``, then a
    permutation of it, repeated as needed, or weighted draws with replacement when
    ``oversample_pv`` is set. Sources with an empty pool, or past their ``until_epoch``, are
    never chosen.

    Returns:
        int64 cache indices.
    """
    key = int(seed) & 0xFFFFFFFF
    sizes = np.array([p.size for p in pools], dtype=np.int64)
    weights = np.array(
        [p.weight_at(epoch) if n > 0 else 0.0 for p, n in zip(pools, sizes, strict=True)]
    )
    total = int(sizes.sum())
    if total == 0 or weights.sum() <= 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([key, int(epoch)])
    choice = rng.choice(len(pools), size=total, p=weights / weights.sum())
    out = np.empty(total, np.int64)
    for s, pool in enumerate(pools):
        rows = np.nonzero(choice == s)[0]
        if rows.size == 0:
            continue
        sub = np.random.default_rng([key, int(epoch), 1 + s])
        idx = np.asarray(pool.indices, dtype=np.int64)
        chips, has_pv = _epoch_pool(idx, np.asarray(pool.pv_fraction) > 0, sub, pool.drop_empty)
        if pool.oversample_pv > 0:
            w = 1.0 + float(pool.oversample_pv) * has_pv
            out[rows] = sub.choice(chips, size=rows.size, replace=True, p=w / w.sum())
        else:
            reps = -(-rows.size // len(chips))
            out[rows] = np.concatenate([sub.permutation(chips) for _ in range(reps)])[: rows.size]
    return out


class EpochSampler(Sampler[int]):
    """Cache indices for one rank and one epoch; call :meth:`set_epoch` each epoch.

    Training (``shuffle=True``): :func:`epoch_order` of the epoch (with ``pools`` of several
    sources: :func:`mixed_epoch_order`), padded by wrapping around to a multiple of
    ``world_size`` and sharded ``rank::world_size``. Evaluation: the indices in
    order, sharded without padding (no chip counts twice in the metrics).
    """

    def __init__(
        self,
        indices: Sequence[int] | np.ndarray,
        pv_fraction: Sequence[float] | np.ndarray | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_empty: float = 0.0,
        oversample_pv: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
        pools: Sequence[SourcePool] | None = None,
    ) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        pv = np.zeros(len(self.indices)) if pv_fraction is None else pv_fraction
        self.pv_fraction = np.asarray(pv, dtype=np.float64)
        if self.pv_fraction.shape != self.indices.shape:
            raise ValueError("pv_fraction must have one value per index")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.shuffle = shuffle
        self.seed = seed
        self.drop_empty = float(drop_empty) if shuffle else 0.0
        self.oversample_pv = float(oversample_pv) if shuffle else 0.0
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        #: several sources: the epoch is :func:`mixed_epoch_order` of these (training only)
        self.pools = list(pools) if pools is not None and len(pools) > 1 and shuffle else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    @property
    def epoch_length(self) -> int:
        """Chips per epoch over all ranks (constant across epochs)."""
        if self.pools is not None:
            return int(sum(p.size for p in self.pools))
        n = len(self.indices)
        if self.drop_empty > 0:
            n_empty = int((self.pv_fraction <= 0).sum())
            n -= int(round(self.drop_empty * n_empty))
        return n

    def global_order(self) -> np.ndarray:
        """Order of the current epoch over all ranks."""
        if not self.shuffle:
            return self.indices.copy()
        if self.pools is not None:
            return mixed_epoch_order(self.pools, epoch=self.epoch, seed=self.seed)
        return epoch_order(
            self.indices,
            self.pv_fraction,
            epoch=self.epoch,
            seed=self.seed,
            drop_empty=self.drop_empty,
            oversample_pv=self.oversample_pv,
        )

    def __len__(self) -> int:
        n = self.epoch_length
        if self.shuffle:
            return math.ceil(n / self.world_size) if n else 0
        return len(range(self.rank, n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        if self.shuffle and self.world_size > 1 and len(order):
            total = math.ceil(len(order) / self.world_size) * self.world_size
            order = np.resize(order, total)  # wraps around
        return iter(order[self.rank :: self.world_size].tolist())


class ChipBatchDataset(ChipDataset):
    """:class:`ChipDataset` that reads a whole batch with one indexed read per array."""

    def __getitems__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = self.indices[np.asarray(positions, dtype=np.int64)]
        c = self.cache
        return {
            "image": torch.from_numpy(np.ascontiguousarray(c.images[idx])),
            "mask": torch.from_numpy(np.ascontiguousarray(c.masks[idx])),
            "valid": torch.from_numpy(np.ascontiguousarray(c.valid[idx])),
            "index": torch.from_numpy(idx.copy()),
        }


def _passthrough(batch: Any) -> Any:
    """Collate function for batches that :meth:`ChipBatchDataset.__getitems__` built."""
    return batch


class PVDataModule(L.LightningDataModule):
    """Train/val/test loaders over a :class:`~pvdetect.data.packed.PackedCache` or a
    :class:`~pvdetect.data.sources.SourceSet`.

    With several sources, each source's weight, ``drop_empty`` and ``oversample_pv`` apply to
    its own training chips (:func:`mixed_epoch_order`; the arguments here are then unused for
    training), and the validation and test loaders hold the chips of every source.

    Args:
        cache: The packed chips (splits from its records).
        batch_size: Training batch size per device.
        val_batch_size: Validation batch size per device.
        test_batch_size: Test batch size per device.
        num_workers: Loader worker processes (0: main process).
        drop_empty: Probability of dropping a chip without PV from each training epoch.
        oversample_pv: Extra sampling weight ``W`` of chips holding PV (see :func:`epoch_order`).
        seed: Seed of the data order.
        pin_memory: Pin host memory (for CUDA).
        source: Dataset path named in error messages.
        synthetic_until: With several sources, the synthetic ones are drawn in the epochs
            before this one only (the last epochs train on the datasets alone); None: always.

    Raises:
        DataError: the training or validation split is empty.
    """

    def __init__(
        self,
        cache: PackedCache,
        *,
        batch_size: int = 5,
        val_batch_size: int = 5,
        test_batch_size: int = 40,
        num_workers: int = 0,
        drop_empty: float = 0.0,
        oversample_pv: float = 0.0,
        seed: int = 0,
        pin_memory: bool = False,
        source: str | Path | None = None,
        synthetic_until: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("batch_size", batch_size),
            ("val_batch_size", val_batch_size),
            ("test_batch_size", test_batch_size),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= drop_empty <= 1.0:
            raise ConfigError(f"drop_empty must be a probability in [0, 1], got {drop_empty}")
        if oversample_pv < 0:
            raise ConfigError(f"oversample_pv must be >= 0, got {oversample_pv}")
        self.cache = cache
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.test_batch_size = test_batch_size
        self.num_workers = num_workers
        self.drop_empty = drop_empty
        self.oversample_pv = oversample_pv
        self.seed = seed
        self.pin_memory = pin_memory
        self.synthetic_until = synthetic_until
        where = Path(source) if source is not None else cache.path
        self.train_idx = cache.indices("train")
        self.val_idx = cache.indices("val")
        self.test_idx = cache.indices("test")
        if len(self.train_idx) == 0:
            raise DataError(f"{where}: the training split is empty")
        if len(self.val_idx) == 0:
            raise DataError(f"{where}: the validation split is empty")
        self._pv = cache.pv_fraction()
        if drop_empty >= 1.0 and not (self._pv[self.train_idx] > 0).any():
            raise DataError(f"{where}: no training chip holds PV, and drop_empty=1 drops all")
        self.pools = self._source_pools(cache)
        self.dataset = ChipBatchDataset(cache, np.arange(len(cache)))

    def _source_pools(self, cache: Any) -> list[SourcePool] | None:
        """One :class:`SourcePool` per source of a multi-source cache (None for one source)."""
        sources = getattr(cache, "sources", None)
        if not sources or len(sources) < 2:
            return None
        pools = []
        for s, src in enumerate(sources):
            idx = cache.indices("train", s)
            if idx.size == 0:
                raise DataError(f"{src.where}: the training split is empty")
            until = self.synthetic_until if src.kind == "synthetic" else None
            pool = SourcePool(idx, self._pv[idx], float(src.weight), float(src.drop_empty),
                              float(src.oversample_pv), src.name, until)  # fmt: skip
            if pool.size == 0:
                raise DataError(
                    f"{src.where}: no training chip holds PV, and drop_empty=1 drops all"
                )
            pools.append(pool)
        return pools

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_sampler(self, rank: int | None = None, world_size: int | None = None) -> EpochSampler:
        """The epoch-aware training sampler for ``rank`` (default: the trainer's)."""
        r, w = self._rank_world()
        return EpochSampler(
            self.train_idx,
            self._pv[self.train_idx],
            shuffle=True,
            seed=self.seed,
            drop_empty=self.drop_empty,
            oversample_pv=self.oversample_pv,
            rank=r if rank is None else rank,
            world_size=w if world_size is None else world_size,
            pools=self.pools,
        )

    def _loader(self, sampler: EpochSampler, batch_size: int, drop_last: bool) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_sampler=BatchSampler(sampler, batch_size, drop_last=drop_last),
            collate_fn=_passthrough,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (per seed and epoch) training batches; an incomplete last batch is dropped."""
        sampler = self.train_sampler()
        drop_last = len(sampler) >= self.batch_size
        return self._loader(sampler, self.batch_size, drop_last)

    def _eval_loader(self, idx: np.ndarray, batch_size: int) -> DataLoader:
        r, w = self._rank_world()
        sampler = EpochSampler(idx, shuffle=False, rank=r, world_size=w)
        return self._loader(sampler, batch_size, False)

    def val_dataloader(self) -> DataLoader:
        """Validation chips in order, whole."""
        return self._eval_loader(self.val_idx, self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test chips in order, whole (empty when the dataset has no test split)."""
        return self._eval_loader(self.test_idx, self.test_batch_size)
