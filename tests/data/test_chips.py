"""One rule set for chips: what ``check`` refuses, no other command accepts (and vice versa)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from pvdetect.cli import main
from pvdetect.data.layouts import find_chips
from pvdetect.data.packed import build_cache
from pvdetect.data.raster import write_raster

ND = -9999.0
T = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0)
SIZE = 32


def _arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    img = rng.uniform(300, 3000, (4, SIZE, SIZE)).astype(np.float32)
    mask = np.zeros((1, SIZE, SIZE), np.float32)
    mask[0, 8:16, 8:16] = 1
    img[3, 8:16, 8:16] = 400.0  # dark NIR where the PV is
    return img, mask


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for split, ns in (("train", range(1, 7)), ("val", (7, 8)), ("test", (9, 10))):
        for n in ns:
            img, mask = _arrays(n)
            write_raster(root / split / "input" / f"img({n}).tif", img, crs="EPSG:32633",
                         transform=T, nodata=ND)  # fmt: skip
            write_raster(root / split / "labels" / f"target({n}).tif", mask, crs="EPSG:32633",
                         transform=T, nodata=ND)  # fmt: skip
    (root / "sites.csv").write_text(
        "split,n,site\n"
        + "".join(
            f"{s},{n},{s}{n % 2}\n"
            for s, ns in (("train", range(1, 7)), ("val", (7, 8)), ("test", (9, 10)))
            for n in ns
        )  # fmt: skip
    )
    return root


def _mask(root: Path, n: int = 2) -> Path:
    return root / "train" / "labels" / f"target({n}).tif"


def _image(root: Path, n: int = 2) -> Path:
    return root / "train" / "input" / f"img({n}).tif"


BROKEN = {
    "crs": lambda root: write_raster(
        _mask(root), _arrays(2)[1], crs="EPSG:32632", transform=T, nodata=ND
    ),
    "transform": lambda root: write_raster(
        _mask(root),
        _arrays(2)[1],
        crs="EPSG:32633",
        transform=T @ Affine.translation(1, 0),
        nodata=ND,
    ),
    "mask values": lambda root: write_raster(
        _mask(root), _arrays(2)[1] * 3, crs="EPSG:32633", transform=T, nodata=ND
    ),
    "bands": lambda root: write_raster(
        _image(root), _arrays(2)[0][:3], crs="EPSG:32633", transform=T, nodata=ND
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_what_check_refuses_baselines_and_train_refuse(
    data: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture
) -> None:
    BROKEN[case](data)
    assert main(["check", str(data)]) == 2
    problem = capsys.readouterr().err.strip().splitlines()[0]
    out = tmp_path / "out"
    assert main(["baselines", str(data), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0], (problem, err)
    assert "Traceback" not in err[0]
    assert not out.exists()
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--weights", "none", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0], (problem, err)
    assert not run.exists()


def test_nan_pixels_are_nodata_everywhere(
    data: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    img, _ = _arrays(2)
    img[1, 3, 4] = np.nan
    write_raster(_image(data), img, crs="EPSG:32633", transform=T, nodata=ND)
    assert main(["check", str(data)]) == 0
    assert "treated as nodata" in capsys.readouterr().out
    cache = build_cache(find_chips(data))
    i = [r.image for r in cache.records].index(_image(data))
    assert not cache.valid[i, 3, 4] and cache.valid[i, 3, 5]
    assert cache.masks[i, 3, 4] == 255 and cache.images[i, 1, 3, 4] == 0.0
    assert any("treated as nodata" in r.getMessage() for r in caplog.records)
