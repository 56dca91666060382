"""Tests of the packed chip cache and its Dataset."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from pvdetect.data.layouts import ChipRecord, find_chips
from pvdetect.data.packed import (
    BandStats,
    ChipDataset,
    PackedCache,
    build_cache,
    default_cache_dir,
)
from pvdetect.data.raster import write_raster
from pvdetect.errors import ConfigError, DataError
from tests.fixtures import random_chip, write_folders_dataset

ND = -9999.0
T = Affine(10, 0, 500000, 0, -10, 5200000)


def chip(seed: int, size: int = 32, bands: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Image with a nodata band in the top rows, a NaN pixel, and a mask with nodata columns."""
    img, mask = random_chip(seed, size, bands=bands, low=-500, high=6000, pv_fraction=0.25)
    img[:, :3, :] = ND
    img[1, 5, 5] = ND  # one band nodata is enough to invalidate the pixel
    img[2, 6, 6] = np.nan
    mask[:, :, :2] = ND
    return img, mask


def write_dataset(root: Path, sizes: dict[str, list[int]], bands: int = 4) -> list[ChipRecord]:
    """Folders of chips ``s<i>_<split>`` (chip i from seed i) with explicit splits; returns
    records in file order."""
    chips = [(split, size) for split, chip_sizes in sizes.items() for size in chip_sizes]
    stems = [f"s{i}_{split}" for i, (split, _) in enumerate(chips)]
    pairs = write_folders_dataset(
        root, stems, lambda i, _: chip(i, chips[i][1], bands), transform=T, nodata=ND
    )
    return [
        ChipRecord(ip, mp, split, f"s{i}", stems[i])
        for i, ((ip, mp), (split, _)) in enumerate(zip(pairs, chips, strict=True))
    ]


@pytest.fixture
def records(tmp_path: Path) -> list[ChipRecord]:
    return write_dataset(tmp_path / "ds", {"train": [32, 32, 32], "val": [32]})


def expected(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ok = np.isfinite(img).all(0) & (img != ND).all(0)
    packed = np.where(ok, img, 0).astype(np.float32)
    m = mask[0]
    target = np.where(ok & (m != ND), m, 255).astype(np.uint8)
    return packed, target, ok


def test_arrays_match_files(records: list[ChipRecord], tmp_path: Path) -> None:
    cache = build_cache(records, tmp_path / "cache")
    assert cache.images.shape == (4, 4, 32, 32) and cache.images.dtype == np.float32
    assert cache.masks.dtype == np.uint8 and cache.valid.dtype == np.bool_
    for i in range(4):
        img, mask, ok = expected(*chip(i))
        np.testing.assert_array_equal(cache.images[i], img)
        np.testing.assert_array_equal(cache.masks[i], mask)
        np.testing.assert_array_equal(cache.valid[i], ok)
        lab = mask != 255
        assert cache.pv_fraction()[i] == pytest.approx((mask[lab] == 1).mean())
    np.testing.assert_array_equal(cache.indices("train"), [0, 1, 2])
    np.testing.assert_array_equal(cache.indices("val"), [3])
    assert cache.indices("test").size == 0
    assert [r.key for r in cache.records] == [r.key for r in records]
    assert cache.chips[0]["height"] == 32 and cache.chips[0]["transform"] == list(T)[:6]


def test_stats_are_train_valid_pixels_only(records: list[ChipRecord], tmp_path: Path) -> None:
    cache = build_cache(records, tmp_path / "cache")
    vals = []
    for i in range(3):  # train only; the val chip must not count
        img, _ = chip(i)
        ok = np.isfinite(img).all(0) & (img != ND).all(0)
        vals.append(img[:, ok].astype(np.float64))
    v = np.concatenate(vals, axis=1)
    np.testing.assert_allclose(cache.stats.mean, v.mean(1), rtol=1e-9)
    np.testing.assert_allclose(cache.stats.std, v.std(1), rtol=1e-9)
    np.testing.assert_allclose(cache.stats.p2, np.percentile(v, 2, axis=1), rtol=1e-6)
    np.testing.assert_allclose(cache.stats.p98, np.percentile(v, 98, axis=1), rtol=1e-6)
    assert BandStats.from_dict(cache.stats.to_dict()) == cache.stats


def test_reuse_when_unchanged(records: list[ChipRecord], tmp_path: Path) -> None:
    a = build_cache(records, tmp_path / "cache")
    meta_mtime = (a.path / "meta.json").stat().st_mtime_ns
    b = build_cache(records, tmp_path / "cache")
    assert b.fingerprint == a.fingerprint and b.path == a.path
    assert (b.path / "meta.json").stat().st_mtime_ns == meta_mtime
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [a.fingerprint]


def test_rebuild_when_a_file_changes(records: list[ChipRecord], tmp_path: Path) -> None:
    base = tmp_path / "cache"
    a = build_cache(records, base)
    # rewrite with new content: new fingerprint, new pixels, stale cache removed
    img, mask = chip(99)
    write_raster(records[1].image, img, crs="EPSG:32633", transform=T, nodata=ND)
    b = build_cache(records, base)
    assert b.fingerprint != a.fingerprint
    np.testing.assert_array_equal(b.images[1], expected(img, mask)[0])
    assert [p.name for p in base.iterdir()] == [b.fingerprint]
    # touching a file is enough
    st = records[2].mask.stat()
    os.utime(records[2].mask, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    c = build_cache(records, base)
    assert c.fingerprint != b.fingerprint
    assert [p.name for p in base.iterdir()] == [c.fingerprint]
    # another band order is another cache too
    d = build_cache(records, base, band_order=[2, 1, 0, 3])
    assert d.fingerprint != c.fingerprint


def test_other_datasets_in_a_shared_cache_dir_survive(tmp_path: Path) -> None:
    base = tmp_path / "cache"
    a = build_cache(write_dataset(tmp_path / "a", {"train": [32]}), base)
    b = build_cache(write_dataset(tmp_path / "b", {"train": [32]}), base)
    assert sorted(p.name for p in base.iterdir()) == sorted([a.fingerprint, b.fingerprint])


def test_failed_build_leaves_nothing(records: list[ChipRecord], tmp_path: Path) -> None:
    base = tmp_path / "cache"
    raw = records[2].image.read_bytes()
    records[2].image.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=str(records[2].image).replace("(", r"\(")):
        build_cache(records, base)
    assert list(base.iterdir()) == []


def test_bad_mask_values_rejected(records: list[ChipRecord], tmp_path: Path) -> None:
    _, mask = chip(0)
    mask[0, 10, 10] = 3
    write_raster(records[0].mask, mask, crs="EPSG:32633", transform=T, nodata=ND)
    with pytest.raises(DataError, match=r"mask value\(s\) outside \{0, 1, nodata -9999\}: 3"):
        build_cache(records, tmp_path / "cache")


def test_padding_to_largest_chip(tmp_path: Path) -> None:
    recs = write_dataset(tmp_path / "ds", {"train": [32, 40], "val": [24]})
    cache = build_cache(recs, tmp_path / "cache")
    assert cache.images.shape == (3, 4, 40, 40)
    img, mask, ok = expected(*chip(2, 24))
    np.testing.assert_array_equal(cache.images[2, :, :24, :24], img)
    assert (cache.masks[2, 24:, :] == 255).all() and (cache.masks[2, :, 24:] == 255).all()
    assert not cache.valid[2, 24:, :].any() and (cache.images[2, :, :, 24:] == 0).all()
    assert cache.chips[2]["height"] == 24


def test_band_order(tmp_path: Path) -> None:
    recs = write_dataset(tmp_path / "ds", {"train": [32]}, bands=6)
    with pytest.raises(DataError, match="image has 6 band"):
        build_cache(recs, tmp_path / "cache")
    cache = build_cache(recs, tmp_path / "cache", band_order=[3, 2, 1, 5])
    img, mask = chip(0, 32, 6)
    sel = img[[3, 2, 1, 5]]
    np.testing.assert_array_equal(cache.images[0], expected(sel, mask)[0])
    assert cache.band_order == [3, 2, 1, 5]
    with pytest.raises(DataError, match=r"has 6 band\(s\), expected at least 8"):
        build_cache(recs, tmp_path / "cache", band_order=[0, 1, 2, 7])
    with pytest.raises(ConfigError):
        build_cache(recs, tmp_path / "cache", band_order=[0, -1, 2, 3])


def test_dataset_items_and_loader(records: list[ChipRecord], tmp_path: Path) -> None:
    cache = build_cache(records, tmp_path / "cache")
    ds = ChipDataset(cache, cache.indices("train"))
    assert len(ds) == 3
    item = ds[1]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (4, 32, 32)
    assert item["mask"].dtype == torch.uint8 and item["mask"].shape == (32, 32)
    assert item["valid"].dtype == torch.bool and item["index"] == 1
    np.testing.assert_array_equal(item["image"].numpy(), cache.images[1])
    item["image"][:] = 7  # items are copies: the cache stays read-only and unchanged
    assert cache.images[1, 0, 10, 10] != 7
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, shuffle=False)))
    assert batch["image"].shape == (2, 4, 32, 32) and batch["index"].tolist() == [0, 1]
    with pytest.raises(ConfigError):
        ChipDataset(cache, [0, 9])


def test_pickle_reopens_memmaps(records: list[ChipRecord], tmp_path: Path) -> None:
    cache = build_cache(records, tmp_path / "cache")
    blob = pickle.dumps(cache)
    assert len(blob) < cache.images.nbytes  # arrays are not copied into the pickle
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.images, cache.images)
    assert isinstance(back.images, np.memmap)


def test_reopen_and_incomplete_cache(records: list[ChipRecord], tmp_path: Path) -> None:
    cache = build_cache(records, tmp_path / "cache")
    again = PackedCache(cache.path)
    assert again.stats == cache.stats
    meta = json.loads((cache.path / "meta.json").read_text())
    meta["complete"] = False
    (cache.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="incomplete"):
        PackedCache(cache.path)
    rebuilt = build_cache(records, tmp_path / "cache")  # a broken cache is rebuilt
    assert rebuilt.fingerprint == cache.fingerprint and len(rebuilt) == 4


def test_stale_temp_folders_cleaned(records: list[ChipRecord], tmp_path: Path) -> None:
    base = tmp_path / "cache"
    old = base / ".tmp-crashed-abc"
    old.mkdir(parents=True)
    (old / "images.npy").write_bytes(b"x")
    past = time.time() - 7200
    os.utime(old, (past, past))
    build_cache(records, base)
    assert not old.exists()


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    recs = write_dataset(root, {"train": [32]})
    assert default_cache_dir(recs) == root / ".pvdetect_cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root.chmod(0o555)
    try:
        assert default_cache_dir(recs) == tmp_path / "xdg" / "pvdetect"
    finally:
        root.chmod(0o755)


def test_austria(austria_root: Path, tmp_path: Path) -> None:
    recs = find_chips(austria_root)
    cache = build_cache(recs, tmp_path / "cache")
    assert cache.images.shape == (188, 4, 64, 64)
    assert cache.indices("val").size == 6
    # labels are -9999 outside the imaged window: ignored there, and image is invalid there
    assert ((cache.masks == 255) | cache.valid).all()
    assert 0.05 < float(cache.valid.mean()) < 0.5
    train = cache.indices("train")
    v = np.asarray(cache.images[train]).transpose(1, 0, 2, 3)[:, np.asarray(cache.valid[train])]
    np.testing.assert_allclose(cache.stats.mean, v.astype(np.float64).mean(1), rtol=1e-9)
    np.testing.assert_allclose(cache.stats.std, v.astype(np.float64).std(1), rtol=1e-9)
