"""Tests of exclusion lists: chips left out of every split, the statistics and the folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pvdetect.config import DataConfig
from pvdetect.data.exclude import EXCLUDED, excluded_chips, read_exclude
from pvdetect.data.layouts import find_chips
from pvdetect.data.sources import cv_splits
from pvdetect.data.stats import band_stats
from pvdetect.errors import ConfigError, DataError
from pvdetect.training.sources import open_sources
from tests.data.folders import write_two_layouts


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_two_layouts(tmp_path_factory.mktemp("exclude"))


def test_a_file_lists_entries_with_comments(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("# dates before construction\ntrain/input/img(2).tif  # ploughed\n\n  val/1\n")
    assert read_exclude(str(f)) == ["train/input/img(2).tif", "val/1"]
    assert read_exclude([" a ", ""]) == ["a"] and read_exclude(None) == []
    with pytest.raises(ConfigError, match=r"^data.exclude: .*nope.txt: no such file$"):
        read_exclude(str(tmp_path / "nope.txt"), "data.exclude")


def test_entries_name_chips_by_path_key_or_pattern(roots: dict[str, Path]) -> None:
    records = find_chips(roots["brazil"])
    keys = [r.key for r in records]
    hits, unmatched = excluded_chips(
        records,
        roots["brazil"],
        ["train/input/img([23]).tif", "val/1", "test/labels/target(2).tif"],
    )
    assert [keys[i] for i in hits] == ["train/2", "train/3", "val/1", "test/2"]
    assert unmatched == set()
    _, unmatched = excluded_chips(records, roots["brazil"], ["train/input/img(99).tif", "val/1"])
    assert unmatched == {"train/input/img(99).tif"}
    # the folders layout: images/ and masks/ paths
    rec = find_chips(roots["folders"])
    hits, _ = excluded_chips(rec, roots["folders"], ["masks/site1_*.tif"])
    assert [rec[i].key for i in hits] == ["site1_0", "site1_1"]


def test_excluded_chips_leave_splits_statistics_and_nothing_else(roots: dict[str, Path]) -> None:
    cache = str(roots["cache"])
    plain = open_sources(DataConfig(root=str(roots["brazil"]), cache_dir=cache))
    gone = ["train/input/img(1).tif", "train/input/img(2).tif", "val/2"]
    sset = open_sources(DataConfig(root=str(roots["brazil"]), cache_dir=cache, exclude=gone))
    # the packed cache is the same (nothing repacked), the splits are not
    assert sset.sources[0].cache.path == plain.sources[0].cache.path
    assert [sset.records[i].key for i in sset.indices(EXCLUDED)] == ["train/1", "train/2", "val/2"]
    assert [sset.records[i].key for i in sset.indices("train")] == [
        f"train/{k}" for k in (3, 4, 5, 6)
    ]
    assert [sset.records[i].key for i in sset.indices("val")] == ["val/1"]
    assert sset.indices("test").size == 2
    # band statistics of the remaining training chips only
    want = band_stats(sset.images, sset.valid, sset.indices("train"))
    np.testing.assert_allclose(sset.stats.mean, want.mean)
    assert not np.allclose(sset.stats.mean, plain.stats.mean)
    desc = sset.describe()[0]
    assert desc["chips"] == {"train": 4, "val": 1, "test": 2, EXCLUDED: 3}
    assert desc["settings"]["exclude"] == gone
    assert sset.fingerprint != plain.fingerprint
    # other splits (as the folds set them) never bring an excluded chip back
    again = sset.with_splits(["train"] * len(sset))
    assert list(again.indices(EXCLUDED)) == list(sset.indices(EXCLUDED))


def test_exclusion_moves_no_site_between_folds(roots: dict[str, Path]) -> None:
    cache = str(roots["cache"])
    data = {"root": str(roots["folders"]), "cache_dir": cache, "val_fraction": 0.3}
    plain = open_sources(DataConfig(**data))
    sset = open_sources(DataConfig(**data, exclude=["images/site2_*.tif", "images/site4_0.tif"]))
    for k in (1, 2, 3):
        a, b = cv_splits(plain, 3, k), cv_splits(sset, 3, k)
        sites_a = {a.records[i].site for i in a.indices("val")}
        sites_b = {b.records[i].site for i in b.indices("val")}
        assert sites_b == sites_a - {"site2"}
        assert {b.records[i].key for i in b.indices(EXCLUDED)} == {"site2_0", "site2_1", "site4_0"}
        assert not set(b.indices(EXCLUDED)) & (set(b.indices("train")) | set(b.indices("val")))


def test_an_entry_naming_no_chip_is_an_error(roots: dict[str, Path]) -> None:
    data = DataConfig(
        root=str(roots["brazil"]),
        sources=[{"root": str(roots["folders"]), "exclude": ["images/site9_*.tif"]}],
        cache_dir=str(roots["cache"]),
    )
    with pytest.raises(DataError, match=r"^data.sources\[0\].exclude \(.*folders_layout\): "
                       r"exclude entry 'images/site9_\*.tif' names no chip$"):  # fmt: skip
        open_sources(data)
