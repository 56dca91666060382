"""Files an acquisition writes: the COG, the chips, and their all-or-nothing renaming.

:class:`Staging` hands out temporary names beside the final ones and renames them all only
when the whole acquisition succeeded (the JSON sidecar, which marks an output complete, last);
on any error every temporary file is removed and folders it created empty are removed too.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from pvdetect.data.raster import BAND_NAMES, geotiff_profile
from pvdetect.errors import OutputError
from pvdetect.io import atomic_output, first_line

COG_OPTIONS = {
    "COMPRESS": "DEFLATE",
    "PREDICTOR": "YES",
    "BLOCKSIZE": "512",
    "OVERVIEWS": "AUTO",
    "OVERVIEW_RESAMPLING": "AVERAGE",
    "BIGTIFF": "IF_SAFER",
    "NUM_THREADS": "2",
}


class Staging(contextlib.AbstractContextManager["Staging"]):
    """Temporary names for final paths, renamed together when the block succeeds.

    Names are renamed in the reverse order of :meth:`path` calls: reserve the sidecar first
    so that it appears last.
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._made: list[Path] = []

    def folder(self, path: Path) -> Path:
        """Create ``path`` (and parents) now; removed again on failure if left empty."""
        missing = [p for p in [path, *path.parents] if not p.exists()]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create folder ({exc.strerror or exc})") from None
        self._made.extend(missing)  # deepest first
        return path

    def path(self, final: Path) -> Path:
        """A temporary path for ``final``; it is renamed to ``final`` when the block ends."""
        self.folder(final.parent)
        return self._stack.enter_context(atomic_output(final))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        done = False
        try:
            result = self._stack.__exit__(exc_type, exc, tb)
            done = exc_type is None
            return result
        except OSError as err:  # a rename into place failed
            where = err.filename or "output"
            raise OutputError(f"{where}: cannot move into place ({err.strerror or err})") from None
        finally:
            if not done:
                self._remove_made()

    def _remove_made(self) -> None:
        for p in self._made:
            with contextlib.suppress(OSError):
                p.rmdir()  # only when empty
        self._made.clear()


def write_cog(src: Path, dst: Path) -> None:
    """Copy a GeoTIFF to a cloud-optimised GeoTIFF with average overviews (nodata-aware).

    Raises:
        OutputError: The copy fails (disk full, ...).
    """
    try:
        rasterio.shutil.copy(src, dst, driver="COG", **COG_OPTIONS)
    except (RasterioError, OSError) as exc:
        raise OutputError(f"{dst}: cannot write the COG ({first_line(exc)})") from None


def write_chip(src: Path, window: Window, dst: Path) -> np.ndarray:
    """Write one window of the composite as a tiled int16 GeoTIFF; returns its pixels.

    Raises:
        OutputError: The chip cannot be written.
    """
    with rasterio.open(src) as ds:
        data = ds.read(window=window)
        transform = window_transform(ds.transform, window)
        profile = geotiff_profile(
            height=int(window.height),
            width=int(window.width),
            count=ds.count,
            dtype=ds.dtypes[0],
            crs=ds.crs,
            transform=transform,
            nodata=ds.nodata,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(dst, "w", **profile) as out:
                out.write(data)
                for i, name in enumerate(BAND_NAMES[: data.shape[0]], start=1):
                    out.set_band_description(i, name)
    except (RasterioError, OSError) as exc:
        raise OutputError(f"{dst}: cannot write the chip ({first_line(exc)})") from None
    return data


def window_transform(transform: Affine, window: Window) -> Affine:
    """Transform of a window's top-left pixel (without affine's deprecated tuple product)."""
    col, row = float(window.col_off), float(window.row_off)
    t = transform
    return Affine(t.a, t.b, t.c + col * t.a + row * t.b, t.d, t.e, t.f + col * t.d + row * t.e)


def remove_quietly(path: Path) -> None:
    """Delete a file if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
