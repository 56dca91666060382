"""Tests of several training sources seen as one cache: datasets, synthetic chips, sampling,
cross-validation folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pvdetect.config import DataConfig
from pvdetect.data.layouts import find_chips
from pvdetect.data.module import PVDataModule, SourcePool, mixed_epoch_order
from pvdetect.data.packed import build_cache
from pvdetect.data.raster import IGNORE_INDEX
from pvdetect.data.sources import Source, SourceSet, cv_splits, fold_of_sites
from pvdetect.data.stats import weighted_band_stats
from pvdetect.errors import ConfigError, DataError
from pvdetect.synth.dataset import generate_dataset
from pvdetect.synth.packed import open_synthetic
from pvdetect.training.sources import open_sources
from tests.data.folders import write_two_layouts


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_two_layouts(tmp_path_factory.mktemp("sources"))


def _data(roots: dict[str, Path], **synthetic: object) -> DataConfig:
    return DataConfig(
        root=str(roots["brazil"]),
        sources=[f"{roots['folders']}:3"],
        synthetic=synthetic or {"chips": 0},
        cache_dir=str(roots["cache"]),
    )


def test_two_layouts_and_synthetic_chips_are_one_cache(roots: dict[str, Path]) -> None:
    sset = open_sources(_data(roots, chips=12, style="brazil", weight=0.5), seed=0)
    assert sset.names == ["brazil_layout", "folders_layout", "synthetic-brazil"]
    assert [s.kind for s in sset.sources] == ["dataset", "dataset", "synthetic"]
    assert [s.weight for s in sset.sources] == [1.0, 3.0, 0.5]
    assert list(sset.offsets) == [0, 10, 22, 34] and sset.shape == (34, 4, 64, 64)
    # the folders chips (48 px) are padded to 64 px with invalid, ignored pixels
    i = int(sset.offsets[1])
    own = sset.sources[1].cache
    np.testing.assert_array_equal(sset.images[i][:, :48, :48], own.images[0])
    assert not sset.valid[i][48:].any() and not sset.valid[i][:, 48:].any()
    assert (sset.masks[i][48:] == IGNORE_INDEX).all() and (sset.images[i][:, :, 48:] == 0).all()
    # fancy indexing across sources keeps the order; (index, band) as the baselines read it
    idx = np.array([30, 3, 12, 3])
    batch = sset.images[idx]
    for j, g in enumerate(idx):
        np.testing.assert_array_equal(batch[j], sset.images[int(g)])
    np.testing.assert_array_equal(sset.images[idx, 3], batch[:, 3])
    assert sset.images[5, 3].shape == (64, 64)
    # every source keeps its own split handling; synthetic chips carry pvdetect synth's split
    assert {r.split for r in sset.records[10:22]} == {"train", "val", "test"}
    assert {r.site[:2] for r in sset.records[22:]} == {"br"}  # style brazil: Brazil sites only
    # validation and threshold come from the real datasets' validation chips
    assert sset.primary() == [True, True, False]
    # band statistics of the combined training split (valid pixels only), each source
    # weighing its share of the draws (1 : 3 : 0.5), not its pixel count
    train = sset.indices("train")
    assert set(sset.source_of[train]) == {0, 1, 2}
    share = np.array([1.0, 3.0, 0.5]) / 4.5
    pix = [
        np.concatenate(
            [sset.images[int(g)][:, sset.valid[int(g)]] for g in sset.indices("train", s)], axis=1
        ).astype(np.float64)
        for s in range(3)
    ]
    mean = sum(p * x.mean(axis=1) for p, x in zip(share, pix, strict=True))
    second = sum(p * (x**2).mean(axis=1) for p, x in zip(share, pix, strict=True))
    np.testing.assert_allclose(sset.stats.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(sset.stats.std, np.sqrt(second - mean**2), rtol=1e-5)
    pooled = np.concatenate(pix, axis=1)
    assert np.abs(np.asarray(sset.stats.mean) - pooled.mean(axis=1)).max() > 1.0
    described = sset.describe()
    assert [d["name"] for d in described] == sset.names
    assert described[1]["band_stats"] == own.stats.to_dict()
    assert sum(sum(d["chips"].values()) for d in described) == 34


def test_one_source_keeps_its_cache_and_fingerprint(roots: dict[str, Path]) -> None:
    sset = open_sources(DataConfig(root=str(roots["brazil"]), cache_dir=str(roots["cache"])))
    cache = build_cache(find_chips(roots["brazil"]), roots["cache"])
    assert sset.fingerprint == cache.fingerprint and sset.stats == cache.stats
    assert sset.path == cache.path and len(sset.sources) == 1
    assert open_sources(_data(roots)).fingerprint != cache.fingerprint


def test_synthetic_chips_equal_what_pvdetect_synth_writes(roots: dict[str, Path], tmp_path) -> None:
    written = tmp_path / "synth"
    generate_dataset(written, chips=12, scenes=0, seed=5, chip_size=64)
    files = build_cache(find_chips(written), tmp_path / "c")
    mixed = open_synthetic(12, style="mixed", seed=5, chip_size=64, cache_dir=tmp_path / "c")
    pos = {r.key: i for i, r in enumerate(files.records)}
    assert sorted(pos) == sorted(r.key for r in mixed.records)
    for j, r in enumerate(mixed.records):
        i = pos[r.key]
        assert (files.records[i].split, files.records[i].site) == (r.split, r.site)
        np.testing.assert_array_equal(files.images[i], mixed.images[j])
        np.testing.assert_array_equal(files.masks[i], mixed.masks[j])
        np.testing.assert_array_equal(files.valid[i], mixed.valid[j])
        assert files.chips[i] == mixed.chips[j]
    assert mixed.stats == files.stats
    # a region style keeps the site landscapes: a chip of a Brazil site it shares with the
    # mixed dataset (same site, same window) has the same pixels
    brazil = open_synthetic(12, style="brazil", seed=5, chip_size=64, cache_dir=tmp_path / "c")
    windows = zip(mixed.records, mixed.chips, strict=True)
    by_window = {(r.site, tuple(c["transform"])): i for i, (r, c) in enumerate(windows)}
    shared = 0
    for j, (r, c) in enumerate(zip(brazil.records, brazil.chips, strict=True)):
        assert r.site.startswith("br")
        i = by_window.get((r.site, tuple(c["transform"])))
        if i is not None:
            shared += 1
            np.testing.assert_array_equal(mixed.images[i], brazil.images[j])
    assert shared >= 2
    # packed once: opening again finds the cache
    again = open_synthetic(12, style="mixed", seed=5, chip_size=64, cache_dir=tmp_path / "c")
    assert again.path == mixed.path


def test_mixed_epochs_draw_each_source_at_its_weight() -> None:
    rng = np.random.default_rng(0)
    sizes, weights = (500, 1500, 1000), (1.0, 1.0, 2.0)
    starts = np.cumsum((0, *sizes))
    pools = [
        SourcePool(np.arange(a, a + n), rng.random(n) * (rng.random(n) < 0.4), w)
        for a, n, w in zip(starts, sizes, weights, strict=False)
    ]
    total = sum(sizes)
    expected = np.array(weights) / sum(weights) * total  # 750, 750, 1500
    for epoch in range(3):
        order = mixed_epoch_order(pools, epoch=epoch, seed=4)
        assert len(order) == total
        spans = zip(starts, sizes, strict=False)
        counts = np.array([((order >= a) & (order < a + n)).sum() for a, n in spans])
        # multinomial: 5 standard deviations (about 120 draws); chip-proportional sampling
        # would give 500, 1500, 1000 (off by 250 or more)
        sd = np.sqrt(total * (expected / total) * (1 - expected / total))
        assert np.all(np.abs(counts - expected) < 5 * sd), counts
        # within a source: a permutation before any repeat (the small source cycles, the big
        # one is never repeated)
        big = order[(order >= 500) & (order < 2000)]
        assert len(np.unique(big)) == len(big)
        small = order[order < 500]
        assert len(np.unique(small)) == 500 and np.bincount(small).max() <= 2
    again = mixed_epoch_order(pools, epoch=1, seed=4)
    assert np.array_equal(again, mixed_epoch_order(pools, epoch=1, seed=4))
    assert not np.array_equal(again, mixed_epoch_order(pools, epoch=2, seed=4))
    # per-source drop_empty: the epoch shrinks by the dropped chips of that source
    n_empty = int((pools[1].pv_fraction == 0).sum())
    dropped = SourcePool(pools[1].indices, pools[1].pv_fraction, 1.0, drop_empty=1.0)
    order = mixed_epoch_order([pools[0], dropped], epoch=0, seed=1)
    assert len(order) == 500 + 1500 - n_empty
    mid = order[order >= 500]
    assert np.all(pools[1].pv_fraction[mid - 500] > 0)  # only PV chips of the dropping source


def test_a_source_past_its_last_epoch_is_no_longer_drawn() -> None:
    real = SourcePool(np.arange(0, 300), np.full(300, 0.1), 1.0, name="real")
    synth = SourcePool(np.arange(300, 1300), np.full(1000, 0.1), 1.0, name="s", until_epoch=3)
    for epoch in range(5):
        order = mixed_epoch_order([real, synth], epoch=epoch, seed=2)
        assert len(order) == 1300  # the epoch keeps its length
        from_synth = int((order >= 300).sum())
        if epoch < 3:
            assert 550 < from_synth < 750  # about half the draws (weights 1 : 1)
        else:
            assert from_synth == 0 and set(order) == set(range(300))  # the real chips cycle
    assert synth.weight_at(2) == 1.0 and synth.weight_at(3) == 0.0 and real.weight_at(99) == 1.0


def test_data_module_draws_the_datasets_alone_in_the_final_phase(roots: dict[str, Path]) -> None:
    sset = open_sources(_data(roots, chips=30, weight=1.0), seed=0)
    dm = PVDataModule(sset, batch_size=4, seed=3, synthetic_until=2)
    assert [p.until_epoch for p in dm.pools] == [None, None, 2]
    sampler = dm.train_sampler(0, 1)
    kinds = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        kinds.append({sset.sources[s].kind for s in sset.source_of[np.array(list(sampler))]})
    assert kinds == [{"dataset", "synthetic"}] * 2 + [{"dataset"}] * 2


def test_data_module_samples_the_sources_at_their_weights(roots: dict[str, Path]) -> None:
    sset = open_sources(_data(roots, chips=30, weight=1.0), seed=0)
    dm = PVDataModule(sset, batch_size=4, seed=3)
    sampler = dm.train_sampler(0, 1)
    n_train = [sset.indices("train", s).size for s in range(3)]
    assert sampler.epoch_length == sum(n_train)
    counts = np.zeros(3)
    epochs = 40
    for e in range(epochs):
        sampler.set_epoch(e)
        drawn = np.array(list(sampler))
        counts += np.bincount(sset.source_of[drawn], minlength=3)
    total = epochs * sum(n_train)
    share = counts / total
    want = np.array([1.0, 3.0, 1.0]) / 5.0  # weights 1, 3 (folders), 1 (synthetic)
    sd = np.sqrt(want * (1 - want) / total)
    assert np.all(np.abs(share - want) < 5 * sd), (share, want, n_train)
    chip_share = np.array(n_train) / sum(n_train)  # what shuffling all chips would give
    assert np.abs(chip_share - want).max() > 10 * sd.max()
    # a batch mixes sources, read through the padded view
    batch = dm.dataset.__getitems__(list(range(0, len(sset), 7)))
    assert batch["image"].shape[1:] == (4, 64, 64)


def test_cv_folds_are_site_grouped_and_leave_test_and_synthetic_alone(
    roots: dict[str, Path],
) -> None:
    sset = open_sources(_data(roots, chips=12), seed=0)
    real = [i for i in range(len(sset)) if sset.sources[sset.source_of[i]].kind == "dataset"]
    pool = [i for i in real if sset.records[i].split in ("train", "val")]
    folds = [cv_splits(sset, 3, k, seed=2) for k in (1, 2, 3)]
    val_sets = [set(f.indices("val")) & set(pool) for f in folds]
    assert set().union(*val_sets) == set(pool)  # every train/val chip validates once
    assert sum(len(v) for v in val_sets) == len(pool)
    for f in folds:
        for i, r in enumerate(f.records):
            src = f.sources[f.source_of[i]]
            if src.kind == "synthetic" or sset.records[i].split == "test":
                assert r.split == sset.records[i].split
        sites = {}
        for i in pool:
            key = (int(f.source_of[i]), f.records[i].site)
            sites.setdefault(key, set()).add(f.records[i].split)
        assert all(len(v) == 1 for v in sites.values())  # no site in two splits
        # statistics of the fold's own training split (each source at its weight)
        groups = [(f.indices("train", s), src.weight) for s, src in enumerate(f.sources)]
        assert f.stats == weighted_band_stats(f.images, f.valid, groups)
    assert folds[0].fingerprint != folds[1].fingerprint != sset.fingerprint
    with pytest.raises(ConfigError, match="at least 50 sites"):
        cv_splits(sset, 50, 1)
    assignment = fold_of_sites({"a": 5, "b": 1, "c": 1, "d": 3}, 2, seed=0)
    load = [sum(n for s, n in {"a": 5, "b": 1, "c": 1, "d": 3}.items() if assignment[s] == k)
            for k in (0, 1)]  # fmt: skip
    assert sorted(load) == [5, 5]


def test_sources_that_do_not_fit_are_refused(roots: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no dataset given"):
        open_sources(DataConfig())
    with pytest.raises(DataError, match="dataset not found"):
        open_sources(DataConfig(sources=[str(tmp_path / "nowhere")]))
    a = open_sources(_data(roots)).sources[0]
    only_val = Source("v", "dataset", a.cache, settings={"root": "VALONLY"})
    splits = [r.split for r in a.cache.records] + ["val"] * len(a.cache)
    with pytest.raises(DataError, match="^VALONLY: the training split is empty$"):
        PVDataModule(SourceSet([a, only_val], splits=splits))
