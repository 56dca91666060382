"""Tests of pvdetect.evaluation.evaluate with real Sentinel-2 conventions: --bands, offsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from pvdetect.cli import main
from pvdetect.data.loading import load_split
from pvdetect.model.bundle import BundleMeta, save_bundle
from pvdetect.model.factory import build_model
from tests.evaluation.test_engine import write_dataset


def _rewrite(root: Path, how: str) -> Path:
    """Every chip of ``root`` rewritten in place, as whole numbers (digital numbers, exact in
    float32 with +1000): as they are, as 6 named bands, or with +1000 and its metadata."""
    for img in sorted(root.glob("*/input/img(*).tif")):
        with rasterio.open(img) as ds:
            data, prof = np.round(ds.read()), ds.profile
        valid = (data != prof["nodata"]).all(0)
        names = [None] * 4
        tags: dict[str, str] = {}
        if how == "six":  # B08 B11 B02 B03 B05 B04
            data = np.stack([data[3], data[0] * 2, data[2], data[1], data[0] + 7, data[0]])
            names = ["B08", "B11", "B02", "B03", "B05", "B04"]
        elif how == "offset":
            data = np.where(valid, data + 1000, data)
            names = ["B04", "B03", "B02", "B08"]
            tags = {f"BOA_ADD_OFFSET_B{b}": "-1000" for b in (2, 3, 4, 8)}
        prof.update(count=len(names))
        with rasterio.open(img, "w", **prof) as ds:
            ds.write(data.astype(prof["dtype"]))
            for i, n in enumerate(names, start=1):
                if n:
                    ds.set_band_description(i, n)
            ds.update_tags(**tags)
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("eval")
    split = {"train": 3, "val": 1, "test": 3}
    return {
        "plain": _rewrite(write_dataset(tmp / "plain", split, seed=4), "plain"),
        "six": _rewrite(write_dataset(tmp / "six", split, seed=4), "six"),
        "post2022": _rewrite(write_dataset(tmp / "new", split, seed=4), "offset"),
    }


@pytest.fixture(scope="module")
def bundle(roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache, _ = load_split(roots["plain"], "train")
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4, weights=None)
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=cache.stats.to_dict())
    return save_bundle(tmp_path_factory.mktemp("b") / "bundle", model, meta)


def _evaluate(bundle: Path, root: Path, out: Path, *extra: str) -> dict:
    code = main(["evaluate", str(bundle), str(root), "--out", str(out), "--device", "cpu",
                 "-q", *extra])  # fmt: skip
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def test_bands_and_offsets_give_the_same_metrics(
    roots: dict[str, Path], bundle: Path, tmp_path: Path
) -> None:
    ref = _evaluate(bundle, roots["plain"], tmp_path / "plain")["pixel"]
    by_names = _evaluate(bundle, roots["six"], tmp_path / "six")["pixel"]
    by_index = _evaluate(bundle, roots["six"], tmp_path / "idx", "--bands", "6,4,3,1")["pixel"]
    by_meta = _evaluate(bundle, roots["post2022"], tmp_path / "new")["pixel"]
    for got in (by_names, by_index, by_meta):
        assert got == ref
    # --offset on top of the metadata: the file's metadata is then not used
    shifted = _evaluate(bundle, roots["post2022"], tmp_path / "off", "--offset", "0")["pixel"]
    assert shifted != ref
    assert (tmp_path / "plain" / "pvdetect.log").read_text().count("pvdetect evaluate") == 1


def test_excluded_chips_are_not_scored(
    roots: dict[str, Path], bundle: Path, tmp_path: Path
) -> None:
    full = _evaluate(bundle, roots["plain"], tmp_path / "full")
    lst = tmp_path / "bad.txt"
    lst.write_text("# a field under a PV label\ntest/input/img(6).tif\n")
    part = _evaluate(bundle, roots["plain"], tmp_path / "part", "--exclude", str(lst))
    assert [r["key"] for r in full["per_image"]] == ["test/5", "test/6", "test/7"]
    assert [r["key"] for r in part["per_image"]] == ["test/5", "test/7"]
    gone = full["per_image"][1]
    for k in ("tp", "fp", "fn", "tn"):
        assert part["pixel"][k] == full["pixel"][k] - gone[k]
    assert part["data"]["exclude"] == ["test/input/img(6).tif"] and part["data"]["excluded"] == 1
    # an entry naming no chip: one line naming the entry, exit 2, nothing written
    lst.write_text("test/input/img(9).tif\n")
    out = tmp_path / "typo"
    code = main(["evaluate", str(bundle), str(roots["plain"]), "--out", str(out), "--device",
                 "cpu", "-q", "--exclude", str(lst)])  # fmt: skip
    assert code == 2 and not out.exists()


def test_mirrored_windows_score_the_whole_chip(tmp_path: Path) -> None:
    from pvdetect.model.bundle import load_bundle
    from tests.fixtures import window_chip, write_brazil_dataset

    rows, cols = (8, 40), (12, 52)
    root = write_brazil_dataset(
        tmp_path / "cut",
        {"train": 3, "val": 1, "test": 2},
        lambda split, n: window_chip(100 + n, 64, rows, cols),
        numbering="global",
    )
    cache, _ = load_split(root, "train", cache_dir=tmp_path / "cache")
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4, weights=None)
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=cache.stats.to_dict())
    path = save_bundle(tmp_path / "bundle", model, meta)
    extra = ("--cache-dir", str(tmp_path / "cache"), "--baselines")
    cut = _evaluate(path, root, tmp_path / "as_cut", *extra)
    mirrored = _evaluate(path, root, tmp_path / "mirrored", *extra, "--mirror-windows")

    def logged(name: str) -> str:
        return (tmp_path / name / "pvdetect.log").read_text()

    # the bundle's threshold was not calibrated on mirrored windows: said when they are
    assert "calibrated with the windows" not in logged("as_cut")
    assert logged("mirrored").count("calibrated with the windows as cut") == 1

    def total(px: dict) -> int:
        return sum(px[k] for k in ("tp", "fp", "fn", "tn"))

    assert not cut["data"]["windows_mirrored"] and mirrored["data"]["windows_mirrored"]
    assert total(cut["pixel"]) == 2 * 32 * 40
    for name, entry in mirrored["comparison"]["entries"].items():  # model and baselines alike
        assert total(entry["pixel"]) == 2 * 64 * 64, name
    # the model's counts are those of its predictions on the windows padded symmetrically
    bundle = load_bundle(path)
    pads = ((0, 0), (rows[0], 64 - rows[1]), (cols[0], 64 - cols[1]))
    for r in mirrored["per_image"]:
        img, mask = window_chip(100 + int(r["key"].split("/")[1]), 64, rows, cols)
        win = (slice(None), slice(*rows), slice(*cols))
        big = torch.from_numpy(np.pad(img[win], pads, mode="symmetric"))[None]
        truth = np.pad(mask[win], pads, mode="symmetric")[0] == 1
        probs = bundle.predict_probs(big, torch.ones(1, 64, 64, dtype=torch.bool), native=True)
        p, thr = probs[0].numpy(), mirrored["threshold"]["used"]
        pred = p >= thr
        near = int((np.abs(p - thr) < 1e-5).sum())  # batch-size rounding may flip these
        want = (int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum()))
        got = (r["tp"], r["fp"], r["fn"])
        assert sum(abs(a - b) for a, b in zip(got, want, strict=True)) <= near
        assert r["tp"] + r["fn"] == int(truth.sum()) > 0
    assert "mirrored over each chip" in (tmp_path / "mirrored" / "report.html").read_text()
    assert "mirrored over each chip" not in (tmp_path / "as_cut" / "report.html").read_text()
    # pvdetect baselines scores so too, and evaluate flags a baselines file scored otherwise
    out = tmp_path / "baselines"
    code = main(["baselines", str(root), "--out", str(out), "--device", "cpu", "-q",
                 "--cache-dir", str(tmp_path / "cache"), "--mirror-windows"])  # fmt: skip
    assert code == 0
    for e in json.loads((out / "metrics.json").read_text())["baselines"].values():
        assert e["data"]["windows_mirrored"] and total(e["pixel"]) == 2 * 64 * 64
    assert "mirrored over each chip" in (out / "report.html").read_text()
    cache = ("--cache-dir", str(tmp_path / "cache"))
    same = _evaluate(path, root, tmp_path / "same", *cache, "--mirror-windows")["comparison"]
    other = _evaluate(path, root, tmp_path / "other", *cache)["comparison"]
    assert str(out) in same["note"] and "WARNING" not in same["note"]
    assert "WARNING: the baselines were scored with the windows mirrored" in other["note"]
    # a bundle calibrated on mirrored windows, scored as cut: the hint to pass the flag
    meta.val_metrics = {"windows_mirrored": True}
    path = save_bundle(tmp_path / "bundle_m", model, meta)
    _evaluate(path, root, tmp_path / "m_as_cut", *cache)
    assert "pass --mirror-windows to score them as in training" in logged("m_as_cut")
