"""Tests of ``pvdetect check``: one deliberately broken file per rule of the chip contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from pvdetect.cli import main
from pvdetect.data.raster import write_raster
from pvdetect.data.stats import RunningBandStats
from pvdetect.data.validate import check_dataset
from tests.fixtures import brazil_paths, random_chip, write_brazil_dataset, write_folders_dataset

ND = -9999.0
T = Affine(10, 0, 500000, 0, -10, 5200000)
SIZE = 32


def chip_arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 4-band image with a nodata border and a {0,1,nodata} mask."""
    img, mask = random_chip(seed, SIZE, low=0, high=5000, pv_fraction=0.3)
    img[:, :4, :] = ND
    mask[:, :4, :] = ND
    return img, mask


def make_dataset(root: Path) -> Path:
    """Brazil layout: train 6 chips from 3 sites, val 2 chips from 1 site."""
    return write_brazil_dataset(
        root,
        {"train": 6, "val": 2},
        lambda split, n: chip_arrays(n + (100 if split == "val" else 0)),
        sites=lambda split, n: f"{split}{(n - 1) // 2}",
        transform=T,
        nodata=ND,
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")


def img_path(root: Path, n: int = 1, split: str = "train") -> Path:
    return brazil_paths(root, split, n)[0]


def mask_path(root: Path, n: int = 1, split: str = "train") -> Path:
    return brazil_paths(root, split, n)[1]


def only_problem(root: Path) -> str:
    report = check_dataset(root)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


def test_valid_dataset_passes_with_summary(data: Path) -> None:
    report = check_dataset(data)
    assert report.ok, report.problems
    assert report.layout == "brazil"
    assert report.chips == {"train": 6, "val": 2}
    assert report.sites == {"train": 3, "val": 1}
    assert report.sizes == {f"{SIZE}x{SIZE}": 8}
    assert report.crs == {"EPSG:32633": 8}
    # statistics over valid pixels only, compared with numpy
    imgs, masks = zip(*(chip_arrays(n) for n in range(1, 7)), strict=True)
    stack = np.stack(imgs)[:, :, 4:, :].transpose(1, 0, 2, 3).reshape(4, -1).astype(np.float64)
    for b, row in enumerate(report.band_stats["train"]):
        assert row["mean"] == pytest.approx(stack[b].mean(), rel=1e-9)
        assert row["std"] == pytest.approx(stack[b].std(), rel=1e-9)
        assert row["min"] == pytest.approx(stack[b].min())
        assert row["max"] == pytest.approx(stack[b].max())
    m = np.stack(masks)[:, 0, 4:, :]
    assert report.pv_fraction["train"] == pytest.approx((m == 1).mean())
    assert report.nodata_fraction["train"] == pytest.approx(4 / SIZE)
    text = report.format()
    assert "train 6 chips / 3 sites" in text and text.endswith("result: ok")


def test_running_stats_exact() -> None:
    rng = np.random.default_rng(1)
    blocks = [rng.normal(3000, 500, (3, int(k))) for k in rng.integers(0, 500, 12)]
    st = RunningBandStats(3)
    for b in blocks:
        st.update(b)
    allv = np.concatenate(blocks, axis=1)
    np.testing.assert_allclose(st.mean, allv.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(st.std, allv.std(axis=1), rtol=1e-10)
    np.testing.assert_array_equal(st.min, allv.min(axis=1))


def test_missing_partner(data: Path) -> None:
    mask_path(data, 2).unlink()
    assert only_problem(data).startswith(f"{img_path(data, 2)}: no mask")


def test_truncated_tiff(data: Path) -> None:
    p = img_path(data, 3)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    assert only_problem(data).startswith(f"{p}: ")


def test_unreadable_file(data: Path) -> None:
    mask_path(data, 3).write_text("not a tiff")
    assert only_problem(data).startswith(f"{mask_path(data, 3)}: not a readable raster")


def test_wrong_band_count(data: Path) -> None:
    img, mask = chip_arrays(5)
    write_raster(img_path(data), img[:3], crs="EPSG:32633", transform=T, nodata=ND)
    assert only_problem(data) == (
        f"{img_path(data)}: image has 3 band(s), expected 4 (Red, Green, Blue, NIR) or a band "
        "order choosing them"
    )
    write_raster(img_path(data), img, crs="EPSG:32633", transform=T, nodata=ND)
    write_raster(mask_path(data), np.concatenate([mask, mask]), crs="EPSG:32633", transform=T)
    assert only_problem(data) == f"{mask_path(data)}: mask has 2 bands, expected 1"


def test_size_mismatch(data: Path) -> None:
    _, mask = chip_arrays(5)
    write_raster(mask_path(data), mask[:, :30, :], crs="EPSG:32633", transform=T, nodata=ND)
    assert only_problem(data).startswith(f"{mask_path(data)}: size 30x32 differs from image")


def test_crs_and_transform_mismatch(data: Path) -> None:
    _, mask = chip_arrays(5)
    write_raster(mask_path(data), mask, crs="EPSG:32632", transform=T, nodata=ND)
    assert "CRS EPSG:32632 differs from image" in only_problem(data)
    write_raster(mask_path(data), mask, crs="EPSG:32633", transform=T @ Affine.translation(1, 0),
                 nodata=ND)  # fmt: skip
    assert "transform" in only_problem(data)


def only_warning(root: Path) -> str:
    report = check_dataset(root)
    assert report.ok, report.problems
    assert len(report.warnings) == 1, report.warnings
    return report.warnings[0]


def test_nan_inf_in_image_are_nodata_with_a_warning(data: Path) -> None:
    img, _ = chip_arrays(5)
    img[0, 10, 10] = np.nan
    img[2, 11, 11] = np.inf
    write_raster(img_path(data), img, crs="EPSG:32633", transform=T, nodata=ND)
    assert only_warning(data) == (
        f"{img_path(data)}: 2 pixel(s) with NaN/inf values, treated as nodata "
        "(declared nodata is -9999)"
    )
    report = check_dataset(data)
    # the two pixels count as nodata in the summary: 4 nodata rows per chip plus these two
    assert report.nodata_fraction["train"] == pytest.approx((6 * 4 * SIZE + 2) / (6 * SIZE**2))


def test_nan_is_fine_when_it_is_the_nodata(data: Path) -> None:
    img, _ = chip_arrays(5)
    img[img == ND] = np.nan
    write_raster(img_path(data), img, crs="EPSG:32633", transform=T, nodata=float("nan"))
    report = check_dataset(data)
    assert report.ok and not report.warnings
    img[1, 12, 12] = -np.inf
    write_raster(img_path(data), img, crs="EPSG:32633", transform=T, nodata=float("nan"))
    assert "1 pixel(s) with inf values, treated as nodata" in only_warning(data)


def test_mask_values_outside_0_1_nodata(data: Path) -> None:
    _, mask = chip_arrays(5)
    mask[0, 20, 20:23] = [2, 255, 0.5]
    write_raster(mask_path(data), mask, crs="EPSG:32633", transform=T, nodata=ND)
    assert only_problem(data) == (
        f"{mask_path(data)}: 3 mask value(s) outside {{0, 1, nodata -9999}}: 0.5, 2, 255"
    )


def test_chip_entirely_nodata_is_a_warning(data: Path) -> None:
    img = np.full((4, SIZE, SIZE), ND, np.float32)
    write_raster(img_path(data, 4), img, crs="EPSG:32633", transform=T, nodata=ND)
    assert only_warning(data) == f"{img_path(data, 4)}: chip is entirely nodata; it adds nothing"


def test_declared_split_empty(data: Path) -> None:
    (data / "test" / "input").mkdir(parents=True)
    (data / "test" / "labels").mkdir(parents=True)
    assert only_problem(data) == f"{data / 'test'}: split test is declared but has no chip pair"


def test_val_empty_with_one_site(tmp_path: Path) -> None:
    write_folders_dataset(tmp_path, [f"site_{i}" for i in range(3)], lambda i, _: chip_arrays(i))
    assert "split val is empty (3 chip pair(s) from 1 site(s))" in only_problem(tmp_path)
    assert not (tmp_path / ".pvdetect_split.json").exists()  # check never writes


def test_duplicate_number(data: Path) -> None:
    img, _ = chip_arrays(5)
    write_raster(data / "train" / "input" / "img(01).tif", img, crs="EPSG:32633", transform=T)
    assert only_problem(data).startswith(f"{data / 'train' / 'input'}: duplicate chip number 1")


def test_site_crossing_splits(data: Path) -> None:
    text = (data / "sites.csv").read_text().replace("val,1,val0", "val,1,train0")
    (data / "sites.csv").write_text(text)
    assert only_problem(data) == f"{data}: site train0 appears in several splits (train, val)"


def test_every_problem_listed(data: Path) -> None:
    mask_path(data, 2).unlink()
    img_path(data, 3).write_bytes(img_path(data, 3).read_bytes()[:300])
    write_raster(img_path(data, 4), np.full((4, SIZE, SIZE), ND, np.float32),
                 crs="EPSG:32633", transform=T)  # fmt: skip
    report = check_dataset(data)
    assert len(report.problems) == 2  # missing mask, truncated image
    assert f"{img_path(data, 4)}: chip is entirely nodata; it adds nothing" in report.warnings
    assert report.chips == {"train": 5, "val": 2}


def test_missing_root_and_unknown_layout(tmp_path: Path) -> None:
    assert check_dataset(tmp_path / "nope").problems == [f"{tmp_path / 'nope'}: dataset not found"]
    assert "no dataset layout recognised" in check_dataset(tmp_path).problems[0]


# --------------------------------------------------------------------------- CLI


def test_cli_broken_dataset_exit_2_one_line(data: Path, capsys: pytest.CaptureFixture) -> None:
    mask_path(data, 5).unlink()
    assert main(["check", str(data)]) == 2
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"{img_path(data, 5)}: no mask {mask_path(data, 5)}"]
    assert "Traceback" not in out + err
    assert "result: 1 problem(s) found" in out


def test_cli_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(tmp_path / "nope")]) == 2
    _, err = capsys.readouterr()
    assert err.strip() == f"{tmp_path / 'nope'}: dataset not found"


def test_cli_ok_with_json(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_json = tmp_path / "out" / "report.json"
    assert main(["check", str(data), "--seed", "3", "--json", str(out_json)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "result: ok" in out
    d = json.loads(out_json.read_text())
    assert d["ok"] is True and d["chips"] == {"train": 6, "val": 2}
    assert len(d["band_stats"]["train"]) == 4


def test_check_does_not_import_torch(data: Path) -> None:
    code = (
        "import sys; from pvdetect.cli import main; rc = main(['check', sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- real data


def test_austria_passes(austria_root: Path, capsys: pytest.CaptureFixture) -> None:
    root = austria_root
    report = check_dataset(root)
    assert report.ok, report.problems
    assert report.chips == {"train": 182, "val": 6}
    assert report.sites == {"train": 23, "val": 6}
    assert 0.5 < report.nodata_fraction["train"] < 0.95  # labels -9999 outside the window
    assert main(["check", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "result: ok" in out and err == ""
