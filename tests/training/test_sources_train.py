"""End-to-end: ``pvdetect train`` over two datasets in different layouts plus synthetic chips,
per-source metrics, resuming, and the per-dataset evaluation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from pvdetect import cli
from pvdetect.config import TrainConfig, load_config
from pvdetect.training.sources import open_sources
from tests.data.folders import write_two_layouts

FAST = [
    "--weights", "none", "--batch-size", "2", "--val-batch-size", "4",
    "--max-train-batches", "1", "--num-workers", "0", "--no-progress", "--seed", "0",
    "--precision", "32",  # bf16 autocast is ~10x slower on CPUs without native bf16
]  # fmt: skip
NAMES = ("brazil_layout", "folders_layout", "synthetic-brazil")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_two_layouts(tmp_path_factory.mktemp("multi"))


def _args(roots: dict[str, Path], run: Path) -> list[str]:
    return [
        "train", str(roots["brazil"]), "--data", f"{roots['folders']}:2",
        "--synthetic", "12", "--synthetic-style", "brazil", "--cache-dir", str(roots["cache"]),
        "--spectral-augment", "--out", str(run), *FAST,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(roots: dict[str, Path]) -> Path:
    out = roots["base"] / "run"
    assert cli.main([*_args(roots, out), "--epochs", "2"]) == 0
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


COUNTS = ("tp", "fp", "fn", "tn")


def test_sources_train_together_with_metrics_per_source(run: Path, roots: dict[str, Path]) -> None:
    rows = _rows(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for name in NAMES:
        for m in ("val_loss", "val_iou", "val_f1"):
            assert all(math.isfinite(float(r[f"{m}@{name}"])) for r in rows), (m, name)
    # the validation loss is that of the real datasets' chips (synthetic ones not counted)
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    sources = meta["sources"]
    assert [s["name"] for s in sources] == list(NAMES)
    assert [s["kind"] for s in sources] == ["dataset", "dataset", "synthetic"]
    assert [s["weight"] for s in sources] == [1.0, 2.0, 1.0]
    assert sources[2]["settings"] == {"style": "brazil", "chips": 12, "seed": 0, "chip_size": 64}
    assert all(s["chips"]["val"] > 0 and s["band_stats"]["mean"] for s in sources)
    vm = {s["name"]: s["val_metrics"] for s in sources}
    assert [vm[n]["primary"] for n in NAMES] == [True, True, False]
    # the per-dataset confusion counts add up to the totals
    for k in COUNTS:
        assert vm[NAMES[0]][k] + vm[NAMES[1]][k] == meta["val_metrics"][k], k
    assert all(v["threshold"] == meta["threshold"] for v in vm.values())
    # band statistics of the combined training split
    cfg = load_config(run / "config.yaml")
    assert cfg.data.sources[0].root == str(roots["folders"].resolve())
    assert cfg.data.synthetic.chips == 12 and cfg.augment.spectral is True
    sset = open_sources(cfg.data, seed=cfg.seed)
    assert meta["band_stats"] == sset.stats.to_dict()
    assert meta["data_fingerprint"] == sset.fingerprint


def test_evaluate_with_several_datasets_has_a_per_dataset_table(
    run: Path, roots: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    out = roots["base"] / "eval"
    code = cli.main(["evaluate", str(run / "bundle"), str(roots["brazil"]), "--data",
                     str(roots["folders"]), "--split", "val", "--out", str(out),
                     "--cache-dir", str(roots["cache"])])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"  {NAMES[0]}: IoU" in printed and f"  {NAMES[1]}: IoU" in printed
    m = json.loads((out / "metrics.json").read_text())
    per = m["per_source"]
    assert list(per) == list(NAMES[:2])
    for k in COUNTS:
        assert sum(per[n][k] for n in per) == m["pixel"][k]
    # the same chips as the run's own per-dataset validation (evaluate splits a layout without
    # splits with seed 0, as the run did): the same labelled and PV pixels (the predictions
    # differ a little: evaluate runs under bf16 autocast, the run validated in float32)
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    for s in meta["sources"][:2]:
        got, want = per[s["name"]], s["val_metrics"]
        assert got["tp"] + got["fn"] == want["tp"] + want["fn"]
        assert sum(got[k] for k in COUNTS) == sum(want[k] for k in COUNTS)
        assert got["n_images"] == s["chips"]["val"]
        assert abs(got["iou"] - want["iou"]) < 0.05
    for v in per.values():
        assert v["fp_ha"] == pytest.approx(v["fp"] * 100 / 1e4)  # 10 m pixels
    html = (out / "report.html").read_text()
    assert "<h3>Per dataset</h3>" in html and NAMES[1] in html
    # one dataset: the report as before, without the table
    single = roots["base"] / "eval1"
    args = ["--split", "val", "--out", str(single), "--cache-dir", str(roots["cache"]), "--quiet"]
    code = cli.main(["evaluate", str(run / "bundle"), str(roots["brazil"]), *args])
    assert code == 0
    one = json.loads((single / "metrics.json").read_text())
    assert "per_source" not in one and "Per dataset" not in (single / "report.html").read_text()
    assert {k: one["pixel"][k] for k in COUNTS} == {k: per[NAMES[0]][k] for k in COUNTS}


def test_a_run_with_synthetic_sources_resumes_and_reproduces(
    run: Path, roots: dict[str, Path]
) -> None:
    again = roots["base"] / "run_resumed"
    assert cli.main([*_args(roots, again), "--epochs", "1"]) == 0
    assert cli.main(["train", "--out", str(again), "--resume", "--epochs", "2"]) == 0
    rows, ref = _rows(again / "metrics.csv"), _rows(run / "metrics.csv")
    assert list(rows[0]) == list(ref[0]) and len(rows) == 2
    for a, b in zip(rows, ref, strict=True):
        for col in ("train_loss", "val_loss", *(f"val_loss@{n}" for n in NAMES)):
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-4, abs=1e-6), col


def test_a_config_saved_by_an_older_version_still_loads(tmp_path: Path) -> None:
    old = TrainConfig().to_dict()
    for key in ("augment", "cv", "cv_fold"):
        old.pop(key)
    for key in ("sources", "synthetic"):
        old["data"].pop(key)
    old["data"]["root"] = "/data/pv"
    old["out"] = "/runs/a"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = load_config(path)
    assert cfg.data.root == "/data/pv" and cfg.data.sources == [] and cfg.data.synthetic.chips == 0
    assert cfg.augment.spectral is False and cfg.cv is None


def test_train_bands_choose_the_chips_bands(tmp_path: Path) -> None:
    """``train --bands`` (``data.bands``): 5-band chips, the model's bands picked by index."""
    import numpy as np
    import rasterio

    from pvdetect.config import DataConfig
    from pvdetect.errors import DataError
    from tests.fixtures import random_chip, write_brazil_dataset

    def five(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = random_chip(n, 16, bands=5)
        return image, mask

    root = write_brazil_dataset(tmp_path / "five", {"train": 3, "val": 2}, five)
    picked = (
        open_sources(DataConfig(root=str(root), bands="5,3,2,1", cache_dir=str(tmp_path / "c")))
        .sources[0]
        .cache
    )
    assert picked.images.shape[1] == 4
    sset = open_sources(DataConfig(root=str(root), bands="5,3,2,1", cache_dir=str(tmp_path / "c")))
    assert sset.describe()[0]["settings"]["bands"] == "5,3,2,1"  # bundle.json "sources"
    with rasterio.open(picked.records[0].image) as ds:
        raw = ds.read()
    np.testing.assert_array_equal(picked.images[0][:, :16, :16], raw[[4, 2, 1, 0]])
    with pytest.raises(DataError, match=r"img\(1\).tif: --bands 1,2,9,4: band 9 does not exist"):
        open_sources(DataConfig(root=str(root), bands="1,2,9,4", cache_dir=str(tmp_path / "c")))


def test_the_final_phase_on_the_datasets_reaches_the_sampler(roots: dict[str, Path]) -> None:
    from pvdetect.config import config_from_dict
    from pvdetect.training.train import _data

    cfg = config_from_dict({
        "data": {"root": str(roots["brazil"]), "sources": [str(roots["folders"])],
                 "synthetic": {"chips": 12, "style": "brazil", "off_last": 2},
                 "cache_dir": str(roots["cache"])},
        "epochs": 5,
    })  # fmt: skip
    cache, dm = _data(cfg)
    assert [s.kind for s in cache.sources] == ["dataset", "dataset", "synthetic"]
    assert [p.until_epoch for p in dm.pools] == [None, None, 3]  # epochs 3 and 4: datasets only
    sampler = dm.train_sampler(0, 1)
    sampler.set_epoch(4)
    assert {cache.sources[s].kind for s in cache.source_of[list(sampler)]} == {"dataset"}


def test_train_leaves_the_excluded_chips_out(
    roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bad.txt").write_text("# before construction\ntrain/input/img([12]).tif\n")
    run = tmp_path / "run"
    args = ["train", str(roots["brazil"]), "--exclude", "bad.txt", "--cache-dir",
            str(roots["cache"]), "--out", str(run), "--epochs", "1", *FAST]  # fmt: skip
    assert cli.main(args) == 0
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    (src,) = meta["sources"]
    assert src["chips"] == {"train": 4, "val": 2, "test": 2, "excluded": 2}
    assert src["settings"]["exclude"] == ["train/input/img([12]).tif"]
    cfg = load_config(run / "config.yaml")  # the file, absolute: the run resumes from anywhere
    assert cfg.data.exclude == str(tmp_path / "bad.txt")
    sset = open_sources(cfg.data, seed=cfg.seed)
    assert (
        meta["data_fingerprint"] == sset.fingerprint and meta["band_stats"] == sset.stats.to_dict()
    )
