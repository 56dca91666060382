"""Tests of pvdetect.evaluation.engine: metrics against plain NumPy, outputs, CLI, a real bundle."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pvdetect.cli import main
from pvdetect.data.loading import load_split
from pvdetect.data.raster import read_raster
from pvdetect.errors import ConfigError
from pvdetect.evaluation.baseline_runs import run_baselines
from pvdetect.evaluation.engine import EvalSettings, evaluate_predictor
from pvdetect.evaluation.grids import select_grid
from pvdetect.evaluation.sections import SECTIONS
from tests.fixtures import (
    brazil_paths,
    grid,
    plant_pattern,
    window_chip,
    write_brazil_dataset,
)

ND = -9999.0


def write_dataset(root: Path, splits: dict[str, int], seed: int = 0) -> Path:
    """A tiny Solar-Plants-Brazil dataset; chip numbers are unique across splits.

    Chips of 32 px with 0-2 plants that are dark in NIR; PV and background NIR ranges overlap
    around the fake model's threshold (2050), so it makes errors of both kinds. Image nodata in
    the 3 left columns and in one band of pixel (5, 10); an unlabelled 4 x 4 bottom-right corner.
    """
    rng = np.random.default_rng(seed)

    def make(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        img, mask = plant_pattern(rng, 32, pv_nir=(900, 2300), bg_nir=(1800, 3200))
        img[:, :, :3] = ND  # image nodata strip
        img[2, 5, 10] = ND  # a single invalid band
        mask[:, -4:, -4:] = ND  # unlabelled corner
        return img, mask

    return write_brazil_dataset(
        root, splits, make, numbering="global", transform=lambda n: grid(500_000 + 1000 * n, 5.3e6)
    )


def nir_prob_np(img: np.ndarray) -> np.ndarray:
    """The fake model in NumPy: a monotone function of NIR."""
    return 1.0 / (1.0 + np.exp(-(2050.0 - img[3].astype(np.float64)) / 250.0))


def nir_prob_torch(raw: torch.Tensor, valid: torch.Tensor, indices=None) -> torch.Tensor:
    """The same fake model on tensors (float64 so both agree bit for bit at the threshold)."""
    p = torch.sigmoid((2050.0 - raw[:, 3].double()) / 250.0)
    return (p * valid).float()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    return write_dataset(root, {"train": 4, "val": 1, "test": 5}, seed=1)


def numpy_reference(root: Path, split: str, threshold: float) -> dict:
    """Per-chip confusions straight from the GeoTIFFs, no pvdetect code but read_raster."""
    rows = {}
    for img_path in sorted((root / split / "input").glob("img(*).tif")):
        n = re.search(r"\((\d+)\)", img_path.name).group(1)
        img, _ = read_raster(img_path)
        mask, _ = read_raster(brazil_paths(root, split, int(n))[1])
        mask = mask[0]
        ok = (img != ND).all(0) & np.isfinite(img).all(0) & (mask != ND)
        prob = nir_prob_np(img).astype(np.float32)
        pred = prob >= threshold
        t = mask == 1
        rows[f"{split}/{n}"] = dict(
            tp=int((pred & t & ok).sum()),
            fp=int((pred & ~t & ok).sum()),
            fn=int((~pred & t & ok).sum()),
            tn=int((~pred & ~t & ok).sum()),
            probs=prob[ok],
            truth=t[ok],
        )
    return rows


def test_metrics_agree_with_numpy(dataset: Path, tmp_path: Path) -> None:
    cache, idx = load_split(dataset, "test", cache_dir=tmp_path / "cache")
    ev = evaluate_predictor(
        nir_prob_torch, cache, idx, 0.5, EvalSettings(batch_size=2, split="test")
    )
    m = ev.metrics
    ref = numpy_reference(dataset, "test", 0.5)

    # per image
    assert [r["key"] for r in m["per_image"]] == sorted(ref, key=lambda k: int(k.split("/")[1]))
    for r in m["per_image"]:
        want = ref[r["key"]]
        assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (
            want["tp"],
            want["fp"],
            want["fn"],
            want["tn"],
        )
        assert r["pv_true"] == want["tp"] + want["fn"]
    # pixel level
    tp, fp, fn, tn = (sum(v[k] for v in ref.values()) for k in ("tp", "fp", "fn", "tn"))
    px = m["pixel"]
    assert (px["tp"], px["fp"], px["fn"], px["tn"]) == (tp, fp, fn, tn)
    assert fp > 0 and fn > 0 and tp > 0  # a case with errors of both kinds
    assert px["precision"] == pytest.approx(tp / (tp + fp))
    assert px["recall"] == pytest.approx(tp / (tp + fn))
    assert px["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert px["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert px["accuracy"] == pytest.approx((tp + tn) / (tp + tn + fp + fn))
    assert px["specificity"] == pytest.approx(tn / (tn + fp))
    assert px["miou"] == pytest.approx(0.5 * (tp / (tp + fp + fn) + tn / (tn + fp + fn)))
    # threshold sweep: exact at bin edges
    probs = np.concatenate([v["probs"] for v in ref.values()])
    truth = np.concatenate([v["truth"] for v in ref.values()])
    curve = m["threshold"]["curve"]
    for k in (100, 350, 500, 800):
        t = curve["thresholds"][k]
        p = probs >= t
        ctp, cfp, cfn = (p & truth).sum(), (p & ~truth).sum(), (~p & truth).sum()
        assert curve["f1"][k] == pytest.approx(2 * ctp / (2 * ctp + cfp + cfn))
        assert curve["precision"][k] == pytest.approx(ctp / (ctp + cfp))
    best = m["threshold"]["best"]
    f1_all = [
        2 * ((probs >= t) & truth).sum() / ((probs >= t).sum() + truth.sum())
        for t in curve["thresholds"]
    ]
    assert m["threshold"]["at_best"]["f1"] == pytest.approx(max(f1_all))
    assert m["threshold"]["at_best"]["f1"] >= px["f1"] - 1e-12
    assert 0 <= best <= 1
    hist = m["threshold"]["histogram"]
    assert sum(hist["pos"]) == truth.sum() and sum(hist["neg"]) == (~truth).sum()
    # per site (no sites.csv: each chip is its own site)
    assert set(m["per_site"]) == {f"test-{k.split('/')[1]}" for k in ref}
    # JSON-clean and complete
    assert set(m) == set(SECTIONS)
    json.dumps(m, allow_nan=False)


def test_object_metrics_and_areas(dataset: Path, tmp_path: Path) -> None:
    """A predictor that reproduces the labels exactly: every plant found, no area error."""
    cache, idx = load_split(dataset, "test", cache_dir=tmp_path / "cache")

    def oracle(raw: torch.Tensor, valid: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        m = torch.from_numpy(np.asarray(cache.masks[indices])).to(raw.device)
        return ((m == 1) & valid).float()

    ob = evaluate_predictor(oracle, cache, idx, 0.5, EvalSettings(split="test")).metrics["object"]
    ref = numpy_reference(dataset, "test", 0.5)
    n_pv = sum(v["truth"].sum() for v in ref.values())
    assert ob["n_true"] > 0
    assert ob["precision"] == ob["recall"] == ob["f1"] == 1.0
    assert ob["total_true_ha"] == pytest.approx(n_pv * 100 / 10_000)  # 10 m pixels
    assert ob["area_error_ha"] == pytest.approx(0.0)
    # now an empty prediction: every plant missed, detected area zero
    empty = evaluate_predictor(
        lambda r, v, i: torch.zeros_like(v, dtype=torch.float32), cache, idx, 0.5
    ).metrics["object"]
    assert empty["recall"] == 0.0 and empty["n_pred"] == 0
    assert empty["area_error_ha"] == pytest.approx(-n_pv * 0.01)


def test_upscaled_evaluation_matches_native_counts(dataset: Path, tmp_path: Path) -> None:
    """Predictions at 2x with nearest-upscaled truth: 4x the pixel counts, same areas."""
    cache, idx = load_split(dataset, "test", cache_dir=tmp_path / "cache")
    native = evaluate_predictor(nir_prob_torch, cache, idx, 0.5).metrics

    def up(raw: torch.Tensor, valid: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        p = nir_prob_torch(raw, valid)
        return p.repeat_interleave(2, -2).repeat_interleave(2, -1)

    ups = evaluate_predictor(up, cache, idx, 0.5, EvalSettings(upscale_factor=2)).metrics
    for k in ("tp", "fp", "fn", "tn"):
        assert ups["pixel"][k] == 4 * native["pixel"][k]
    assert ups["object"]["total_true_ha"] == pytest.approx(native["object"]["total_true_ha"])
    assert ups["data"]["resolution"] == "upscaled x2"
    msg = r"^predictions of shape \(64, 64\) do not match chips of 32x32 \(upscale factor 1\)$"
    with pytest.raises(ConfigError, match=msg):
        evaluate_predictor(up, cache, idx, 0.5, EvalSettings(upscale_factor=1))


def test_select_grid_best_and_worst() -> None:
    rows = [
        {"iou": 0.9, "pv_true": 5, "pv_pred": 5},
        {"iou": 1.0, "pv_true": 0, "pv_pred": 0},  # nothing to see: never shown
        {"iou": 0.1, "pv_true": 5, "pv_pred": 1},
        {"iou": 0.5, "pv_true": 0, "pv_pred": 3},
        {"iou": 0.7, "pv_true": 2, "pv_pred": 2},
    ]
    best, worst = select_grid(rows, 2)
    assert best == [0, 4]
    assert worst == [2, 3]
    best, worst = select_grid(rows, 4)
    assert best == [0, 4, 3, 2] and worst == []


def test_grid_chips_are_repredicted(dataset: Path, tmp_path: Path) -> None:
    cache, idx = load_split(dataset, "test", cache_dir=tmp_path / "cache")
    ev = evaluate_predictor(nir_prob_torch, cache, idx, 0.5, EvalSettings(n_grid=2))
    assert 1 <= len(ev.grids) <= 4
    keys = [g.key for g in ev.grids]
    assert len(set(keys)) == len(keys)
    by_key = {r["key"]: r for r in ev.metrics["per_image"]}
    for g in ev.grids:
        i = int(by_key[g.key]["index"])
        img = np.asarray(cache.images[i])
        ok = np.asarray(cache.valid[i])
        want = (nir_prob_np(img) * ok).astype(np.float32)
        # the grid crops the nodata frame to the valid extent plus a 1 px margin
        cols = np.flatnonzero(ok.any(0))
        assert cols[0] == 3
        np.testing.assert_allclose(g.prob, want[:, 2:], atol=1e-6)
        assert g.rgb.shape == (*g.truth.shape, 3) and g.rgb.dtype == np.uint8
        assert by_key[g.key]["pv_true"] + by_key[g.key]["pv_pred"] > 0
    ious = [g.score for g in ev.grids if g.label.startswith("best")]
    assert ious == sorted(ious, reverse=True)


def test_mirrored_windows_count_every_labelled_pixel(tmp_path: Path) -> None:
    rows, cols = (8, 40), (12, 52)
    root = write_brazil_dataset(
        tmp_path / "cut", {"test": 3}, lambda split, n: window_chip(n, 64, rows, cols)
    )
    cache, idx = load_split(root, "test", cache_dir=tmp_path / "cache")
    cut = evaluate_predictor(nir_prob_torch, cache, idx, 0.5, EvalSettings(n_grid=1))
    mirrored = evaluate_predictor(
        nir_prob_torch, cache, idx, 0.5, EvalSettings(n_grid=1, mirror_windows=True)
    )
    assert cut.metrics["data"]["windows_mirrored"] is False
    assert mirrored.metrics["data"]["windows_mirrored"] is True
    pads = ((rows[0], 64 - rows[1]), (cols[0], 64 - cols[1]))
    for r_cut, r_mir in zip(cut.metrics["per_image"], mirrored.metrics["per_image"], strict=True):
        n = int(r_cut["key"].split("/")[1])
        img, mask = window_chip(n, 64, rows, cols)
        win = (slice(*rows), slice(*cols))
        big = np.pad(img[:, win[0], win[1]], ((0, 0), *pads), mode="symmetric")
        truth = np.pad(mask[0][win], pads, mode="symmetric") == 1
        pred = nir_prob_np(big) >= 0.5
        want = [int((pred & truth).sum()), int((pred & ~truth).sum()),
                int((~pred & truth).sum()), int((~pred & ~truth).sum())]  # fmt: skip
        assert [r_mir[k] for k in ("tp", "fp", "fn", "tn")] == want
        assert sum(want) == 64 * 64 and truth.sum() >= 2 * mask.sum() > 0  # the plant mirrored
        assert sum(r_cut[k] for k in ("tp", "fp", "fn", "tn")) == 32 * 40  # the window only
    # the grids show the mirrored chips
    assert mirrored.grids and mirrored.grids[0].truth.shape == (64, 64)
    assert cut.grids[0].truth.shape[0] < 40


def _tiny_bundle(path: Path, stats: dict) -> Path:
    from pvdetect.model.bundle import BundleMeta, save_bundle
    from pvdetect.model.factory import build_model

    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels=4, weights=None)
    meta = BundleMeta(arch="unet", encoder="resnet18", band_stats=stats, threshold=0.5)
    return save_bundle(path, model, meta)


@pytest.fixture(scope="module")
def bundle(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache, _ = load_split(dataset, "train")
    return _tiny_bundle(tmp_path_factory.mktemp("b") / "bundle", cache.stats.to_dict())


def test_evaluate_cli_end_to_end(
    dataset: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(bundle),
            str(dataset),
            "--split",
            "test",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "3",
            "--baselines",
        ]
    )
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == set(SECTIONS) | {"comparison"}
    assert m["data"]["n_images"] == 5 and len(m["per_image"]) == 5
    assert m["model"]["arch"] == "unet" and m["threshold"]["used"] == 0.5
    assert set(m["comparison"]["entries"]) == {"model", "random", "nir_threshold", "logistic"}
    html = (out / "report.html").read_text()
    assert 'id="model-per-image"' in html and "test/" in html
    assert "data:image/png;base64," in html
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<script src" not in html and "<link" not in html
    assert len(html) < 5_000_000
    assert "wrote" in capsys.readouterr().out


def test_metrics_keys_identical_to_baselines(dataset: Path, bundle: Path, tmp_path: Path) -> None:
    """evaluate and baselines write the same structure; evaluate finds ../baselines itself."""
    base_all = run_baselines(dataset, "test", None, device="cpu", sample_size=2000)
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "metrics.json").write_text(json.dumps(base_all))
    assert (
        main(
            [
                "evaluate",
                str(bundle),
                str(dataset),
                "--out",
                str(tmp_path / "model"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    model = json.loads((tmp_path / "model" / "metrics.json").read_text())
    base = json.loads((tmp_path / "baselines" / "metrics.json").read_text())["baselines"]
    assert set(base) == {"random", "nir_threshold", "logistic"}
    assert "comparison" in model  # picked up from OUT/../baselines/metrics.json

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k not in ("per_site", "model", "params", "val_metrics"):
                out |= keys(v, prefix + k + ".")
        return out

    want = keys({k: v for k, v in model.items() if k != "comparison"})
    want = {k for k in want if not k.startswith(("model.", "data."))}
    for entry in base.values():
        got = {k for k in keys(entry) if not k.startswith(("model.", "data."))}
        assert got == want
        assert set(entry["per_image"][0]) == set(model["per_image"][0])


def test_cli_bad_bundle_path(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", str(tmp_path / "nope"), str(dataset), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nope" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_cli_empty_split(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_dataset(tmp_path / "ds", {"train": 2, "val": 1})
    code = main(
        [
            "evaluate",
            str(bundle),
            str(root),
            "--split",
            "test",
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "split 'test' has no chips" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_cli_bad_threshold(
    dataset: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["evaluate", str(bundle), str(dataset), "--out", str(tmp_path / "o"), "--threshold", "1.5"]
    )
    assert code == 2 and "threshold" in capsys.readouterr().err


def test_real_data_val_split(austria_root: Path, tmp_path: Path) -> None:
    """The real chips: NIR fake model on the val split; counts agree with the cache masks."""
    cache, idx = load_split(austria_root, "val", cache_dir=tmp_path / "cache")
    ev = evaluate_predictor(nir_prob_torch, cache, idx, 0.5, EvalSettings(split="val", n_grid=1))
    m = ev.metrics
    lab = np.asarray(cache.masks[idx]) != 255
    assert m["pixel"]["n_valid"] == int(lab.sum())
    assert m["pixel"]["n_pv_true"] == int((np.asarray(cache.masks[idx]) == 1).sum())
    assert m["data"]["pixel_area"] == "chip transform"
    assert m["object"]["total_true_ha"] == pytest.approx(m["pixel"]["n_pv_true"] * 0.01)


def test_cli_bad_device(
    dataset: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            str(bundle),
            str(dataset),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "warp-drive",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--device warp-drive" in err and err.count("\n") == 1


def test_cli_missing_baselines_json(
    dataset: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            str(bundle),
            str(dataset),
            "--out",
            str(tmp_path / "o"),
            "--baselines-json",
            str(tmp_path / "none.json"),
        ]
    )
    assert code == 2 and "none.json: baselines metrics file not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
