"""Tests of dataset layout discovery and the site-grouped split."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from pvdetect.data.layouts import find_chips, scan_layout, site_from_name
from pvdetect.data.records import ChipRecord
from pvdetect.data.splits import SPLIT_FILE, site_split
from pvdetect.errors import ConfigError, DataError
from tests.fixtures import (
    constant_chip,
    write_brazil_dataset,
    write_chip,
    write_folders_dataset,
    write_manifest_dataset,
)

#: a small valid chip, written at paths outside a layout's pattern
STRAY = constant_chip(100.0)


def brazil(root: Path, numbers: dict[str, list[int]]) -> Path:
    """Brazil layout; chip N's image holds N everywhere."""
    return write_brazil_dataset(root, numbers, lambda split, n: constant_chip(float(n)))


def folders(root: Path, stems: list[str]) -> Path:
    """images/ + masks/ layout; the i-th chip's image holds i everywhere."""
    write_folders_dataset(root, stems, lambda i, stem: constant_chip(float(i)))
    return root


def leaks(records: list[ChipRecord]) -> dict[str, set[str]]:
    by_site: dict[str, set[str]] = defaultdict(set)
    for r in records:
        by_site[r.site].add(r.split)
    return {s: v for s, v in by_site.items() if len(v) > 1}


# --------------------------------------------------------------------------- Brazil layout


def test_brazil_pairs_by_number_not_sort_order(tmp_path: Path) -> None:
    root = brazil(tmp_path, {"train": [2, 10, 1], "val": [3]})
    # an extra mask without image and vice versa must not shift the pairing
    write_chip(tmp_path / "x.tif", tmp_path / "train" / "labels" / "target(7).tif", *STRAY)
    recs = find_chips(root)
    by_key = {r.key: r for r in recs}
    assert set(by_key) == {"train/1", "train/2", "train/10", "val/3"}
    for key, r in by_key.items():
        n = key.split("/")[1]
        assert r.image.name == f"img({n}).tif"
        assert r.mask.name == f"target({n}).tif"
        assert r.split == key.split("/")[0]
        assert r.site == f"{r.split}-{n}"
    # natural order: 1, 2, 10 then val
    assert [r.key for r in recs] == ["train/1", "train/2", "train/10", "val/3"]


def test_brazil_sites_csv_and_problems(tmp_path: Path) -> None:
    root = brazil(tmp_path, {"train": [1, 2, 3, 4], "val": [1, 2]})
    (root / "sites.csv").write_text(
        "split,n,site,date\ntrain,1,A,2022-01-01\ntrain,2,A,x\ntrain,3,B,\ntrain,4,B,\n"
        "val,1,C,median\nval,2,D,median\n"
    )
    # missing partner both ways and a duplicate number
    (root / "train" / "labels" / "target(4).tif").unlink()
    write_chip(root / "x" / "img.tif", root / "train" / "labels" / "target(9).tif", *STRAY)
    write_chip(root / "train" / "input" / "img(01).tif", root / "y" / "m.tif", *STRAY)
    scan = scan_layout(root)
    sites = {r.key: r.site for r in scan.records}
    assert sites == {"train/2": "A", "train/3": "B", "val/1": "C", "val/2": "D"}
    text = "\n".join(scan.problems)
    assert "img(4).tif: no mask" in text
    assert "target(9).tif: no image" in text
    assert "duplicate chip number 1" in text
    assert len(scan.problems) == 3
    assert scan.declared_splits == ("train", "val")
    assert not (root / SPLIT_FILE).exists()  # splits were declared


def test_brazil_site_crossing_splits_is_a_problem(tmp_path: Path) -> None:
    root = brazil(tmp_path, {"train": [1, 2], "val": [1]})
    (root / "sites.csv").write_text("split,n,site\ntrain,1,A\ntrain,2,B\nval,1,A\n")
    scan = scan_layout(root)
    assert any("site A appears in several splits (train, val)" in p for p in scan.problems)


def test_brazil_without_val_carves_val_by_site(tmp_path: Path) -> None:
    root = brazil(tmp_path, {"train": list(range(1, 13))})
    (root / "sites.csv").write_text(
        "split,n,site\n" + "".join(f"train,{n},S{(n - 1) // 3}\n" for n in range(1, 13))
    )
    recs = find_chips(root, val_fraction=0.25)
    assert {r.split for r in recs} == {"train", "val"}
    assert not leaks(recs)


# --------------------------------------------------------------------------- folders layout


def test_folders_site_prefix_and_saved_split(tmp_path: Path) -> None:
    stems = [f"plant{p}_{i}" for p in range(8) for i in range(3)] + ["solo", "x-1", "x-2"]
    root = folders(tmp_path, stems)
    recs = find_chips(root, seed=3)
    assert {r.key for r in recs} == set(stems)
    assert {r.site for r in recs} == {f"plant{p}" for p in range(8)} | {"solo", "x"}
    assert not leaks(recs)
    assert {"train", "val", "test"} <= {r.split for r in recs}
    saved = json.loads((root / SPLIT_FILE).read_text())
    assert saved["seed"] == 3 and saved["splits"] == {r.key: r.split for r in recs}
    # same seed: identical; the saved file is reused (a hand edit survives)
    moved = next(r for r in recs if r.split == "train").site
    saved["splits"] = {
        k: ("test" if k.startswith(moved) else v) for k, v in saved["splits"].items()
    }
    (root / SPLIT_FILE).write_text(json.dumps(saved))
    scan = scan_layout(root, seed=3)
    assert scan.split_source == "saved"
    assert all(r.split == "test" for r in scan.records if r.site == moved)
    # another seed: recomputed and saved again
    other = scan_layout(root, seed=4)
    assert other.split_source == "site"
    assert json.loads((root / SPLIT_FILE).read_text())["seed"] == 4


def test_site_split_deterministic_per_seed_and_differs_between_seeds(tmp_path: Path) -> None:
    root = folders(tmp_path, [f"s{p}_{i}" for p in range(12) for i in range(2)])
    runs = {}
    for seed in (0, 1, 2, 3):
        (root / SPLIT_FILE).unlink(missing_ok=True)
        a = {r.key: r.split for r in find_chips(root, seed=seed)}
        (root / SPLIT_FILE).unlink()
        b = {r.key: r.split for r in find_chips(root, seed=seed)}
        assert a == b
        runs[seed] = a
    assert len({tuple(sorted(v.items())) for v in runs.values()}) > 1


def test_read_only_root_skips_split_file(tmp_path: Path) -> None:
    root = folders(tmp_path / "ro", ["a_1", "b_1", "c_1", "d_1"])
    root.chmod(0o555)
    try:
        scan = scan_layout(root)
        assert scan.split_file is None
        assert not (root / SPLIT_FILE).exists()
        assert len(scan.records) == 4
    finally:
        root.chmod(0o755)


def test_folders_missing_partner(tmp_path: Path) -> None:
    root = folders(tmp_path, ["a_1", "b_1", "c_1"])
    (root / "masks" / "b_1.tif").unlink()
    scan = scan_layout(root)
    assert sorted(r.key for r in scan.records) == ["a_1", "c_1"]
    assert scan.problems == [f"{root / 'images' / 'b_1.tif'}: no mask with the same name in "
                             f"{root / 'masks'}"]  # fmt: skip


def test_site_from_name() -> None:
    assert site_from_name("plantA_2022-05-01") == "plantA"
    assert site_from_name("p7-3_x") == "p7"
    assert site_from_name("single") == "single"


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_site_split_properties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sites = {f"s{i}": int(rng.integers(1, 10)) for i in range(20)}
    out = site_split(sites, seed=seed, val_fraction=0.2, test_fraction=0.1)
    assert set(out) == set(sites)
    total = sum(sites.values())
    share = {s: sum(n for k, n in sites.items() if out[k] == s) / total for s in ("val", "test")}
    assert 0.1 <= share["val"] <= 0.32 and 0.03 <= share["test"] <= 0.22
    assert "train" in out.values()
    # tiny: every split with a positive fraction still gets a site, train keeps one
    small = site_split({"a": 5, "b": 1, "c": 1}, seed=seed, val_fraction=0.1, test_fraction=0.1)
    assert sorted(small.values()) == ["test", "train", "val"]
    assert site_split({"a": 3}, seed=seed, val_fraction=0.2, test_fraction=0.2) == {"a": "train"}


# --------------------------------------------------------------------------- manifest layout


def test_manifest_relative_paths_split_and_site(tmp_path: Path) -> None:
    splits = ["train", "train", "validation", "val"]  # "validation" is read as val
    sites = ["P0", "P1", "P0", "P9"]
    rows = [
        {"image": f"img/c{i}.tif", "mask": f"lab/c{i}.tif", "split": splits[i], "site": sites[i]}
        for i in range(4)
    ]
    write_manifest_dataset(tmp_path / "manifest.csv", rows, lambda i, row: constant_chip(float(i)))
    recs = find_chips(tmp_path)
    assert [(r.key, r.split, r.site) for r in recs] == [
        ("img/c0", "train", "P0"),
        ("img/c1", "train", "P1"),
        ("img/c2", "val", "P0"),
        ("img/c3", "val", "P9"),
    ]
    assert recs[0].image == tmp_path / "img" / "c0.tif"


def test_manifest_path_without_split_and_missing_file(tmp_path: Path) -> None:
    sub = tmp_path / "lists"
    rows = [{"image": f"../d/site{i}_a.tif", "mask": f"../m/site{i}_a.tif"} for i in range(6)]
    manifest = write_manifest_dataset(sub / "chips.csv", rows)
    with manifest.open("a") as f:
        f.write("../d/nope.tif,../m/nope.tif\n")  # a row whose files do not exist
    scan = scan_layout(sub / "chips.csv", seed=1)
    assert len(scan.records) == 6
    assert {r.site for r in scan.records} == {f"site{i}" for i in range(6)}
    assert scan.split_source == "site" and (sub / SPLIT_FILE).is_file()
    assert len(scan.problems) == 2 and "nope.tif: image file not found" in scan.problems[0]


def test_manifest_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("img,label\na.tif,b.tif\n")
    with pytest.raises(DataError, match=r"manifest.csv: missing column\(s\) image, mask"):
        find_chips(tmp_path)


# --------------------------------------------------------------------------- errors


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset not found"):
        find_chips(tmp_path / "nope")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match=r"no dataset layout recognised; expected .*img\(N\)"):
        find_chips(tmp_path / "stuff")
    (tmp_path / "empty" / "train" / "input").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "labels").mkdir(parents=True)
    with pytest.raises(DataError, match="no complete image/mask pair"):
        find_chips(tmp_path / "empty")
    with pytest.raises(ConfigError, match="val_fraction"):
        find_chips(tmp_path / "empty", val_fraction=1.5)


# --------------------------------------------------------------------------- real data


def test_austria_layout(austria_root: Path) -> None:
    recs = find_chips(austria_root)
    splits = defaultdict(list)
    for r in recs:
        splits[r.split].append(r)
    assert len(splits["train"]) == 182 and len(splits["val"]) == 6
    assert len({r.site for r in splits["train"]}) == 23
    assert len({r.site for r in splits["val"]}) == 6
    assert not leaks(recs)
    assert all(r.image.name.replace("img", "target") == r.mask.name for r in recs)
