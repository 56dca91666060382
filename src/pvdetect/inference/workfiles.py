"""Temporary and output files of a scene prediction: folders, GeoTIFF writers, codecs.

Kept apart from :mod:`pvdetect.inference.predict` so that the steps of a prediction stay in one
short module; every failure here is an :class:`~pvdetect.errors.OutputError` naming the folder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio

from pvdetect.errors import OutputError

__all__ = ["has_zstd", "open_write", "prepare_out_dir", "work_dir"]


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder; refuse a file or a folder that cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create output folder ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"{out_dir}: output folder is not writable")


@contextlib.contextmanager
def work_dir(out: Path, stem: str) -> Iterator[Path]:
    """A temporary folder for one scene's intermediate rasters, removed in any case."""
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{stem}.work-{os.getpid()}-", dir=out))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write output here ({exc.strerror})") from None
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def open_write(path: Path, profile: dict) -> Iterator[rasterio.io.DatasetWriter]:
    """A GeoTIFF opened for writing; a failure is an OutputError naming the folder."""
    try:
        ds = rasterio.open(path, "w", **profile)
    except Exception as exc:  # noqa: BLE001 - GDAL raises many types
        raise OutputError(f"{path.parent}: cannot write output here ({exc})") from None
    try:
        yield ds
    finally:
        ds.close()


@functools.cache
def has_zstd() -> bool:
    """Whether GDAL's GTiff driver here writes ZSTD (fast compression of temporary files)."""
    return _gtiff_supports("ZSTD")


def _gtiff_supports(codec: str) -> bool:
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Path(d) / "t.tif"
        try:
            with rasterio.open(
                p, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8", compress=codec
            ) as ds:
                ds.write(np.zeros((1, 16, 16), np.uint8))
            with rasterio.open(p) as ds:
                return (ds.compression is not None) and ds.compression.name.upper() == codec
        except Exception:  # noqa: BLE001
            return False
