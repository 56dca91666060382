"""One chip's image and mask, read and judged by the one set of rules every command applies.

``pvdetect check`` reports what :func:`read_chip` finds; the packed cache (and so ``train``,
``evaluate`` and ``baselines``) refuses a chip with any problem and logs its warnings. So no
command accepts what ``check`` refuses. The rules:

- problems (the chip cannot be used): an unreadable image or mask; an image without the wanted
  bands; a mask with more than one band; image and mask of different size, CRS or transform;
  mask values other than 0, 1 and the mask's nodata;
- warnings (the chip is used as described): NaN or infinite pixels, which count as nodata; a
  chip that is entirely nodata, or has no labelled pixel inside its imaged area, which adds
  nothing to training or metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pvdetect.data.raster import (
    BAND_NAMES,
    IGNORE_INDEX,
    RasterInfo,
    raster_info,
    read_raster,
    valid_pixels,
)
from pvdetect.data.records import ChipRecord
from pvdetect.errors import DataError

__all__ = ["IMAGE_BANDS", "ChipReading", "crs_text", "read_chip", "source_bands"]

#: bands of a chip image when no band order selects them
IMAGE_BANDS = len(BAND_NAMES)


@dataclass
class ChipReading:
    """A chip as read, with what is wrong with it.

    Attributes:
        record: the chip's files.
        image: float32 ``[C, H, W]`` in the wanted band order (None if unreadable).
        image_info: the image file's metadata.
        mask: float ``[H, W]`` as stored (None if unreadable).
        mask_info: the mask file's metadata.
        valid: bool ``[H, W]``: every band finite and not nodata.
        labelled: bool ``[H, W]``: the mask is not nodata.
        problems: reasons the chip cannot be used (``file: problem`` each).
        warnings: things the user should know (``file: problem`` each).
    """

    record: ChipRecord
    image: np.ndarray | None = None
    image_info: RasterInfo | None = None
    mask: np.ndarray | None = None
    mask_info: RasterInfo | None = None
    valid: np.ndarray | None = None
    labelled: np.ndarray | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the chip can be used."""
        return not self.problems and self.image is not None and self.mask is not None

    def target(self) -> np.ndarray:
        """uint8 ``[H, W]`` labels: 0/1 where valid and labelled, :data:`IGNORE_INDEX` else."""
        if not self.ok:
            raise DataError(self.problems[0] if self.problems else f"{self.record.image}: unread")
        assert self.mask is not None and self.valid is not None and self.labelled is not None
        keep = self.valid & self.labelled
        return np.where(keep, self.mask, IGNORE_INDEX).astype(np.uint8)

    def raise_problems(self) -> None:
        """Raise the first problem as a :class:`DataError` (with a hint to run check)."""
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise DataError(f"{self.problems[0]}{more}; run pvdetect check for the full list")


def crs_text(info: RasterInfo) -> str:
    """A short name of a file's CRS (``EPSG:32633``, or the start of its WKT)."""
    if info.crs is None:
        return "none"
    epsg = info.crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else info.crs.to_string()[:60]


def source_bands(info: RasterInfo, order: Sequence[int] | None) -> list[int] | None:
    """1-based file bands for a 0-based ``order`` (None: the file must have 4 bands).

    Returns None when the file does not have the bands (the caller reports it).
    """
    if order is None:
        return list(range(1, IMAGE_BANDS + 1)) if info.count == IMAGE_BANDS else None
    if max(order) >= info.count:
        return None
    return [b + 1 for b in order]


def _read_image(chip: ChipReading, order: Sequence[int] | None) -> None:
    rec = chip.record
    try:
        info = raster_info(rec.image)
    except DataError as exc:
        chip.problems.append(str(exc))
        return
    bands = source_bands(info, order)
    if bands is None:
        want = (
            f"{IMAGE_BANDS} ({', '.join(BAND_NAMES)}) or a band order choosing them"
            if order is None
            else f"at least {max(order) + 1} for band order {list(order)}"
        )
        chip.problems.append(f"{rec.image}: image has {info.count} band(s), expected {want}")
        return
    try:
        chip.image, chip.image_info = read_raster(rec.image, bands=bands)
    except DataError as exc:
        chip.problems.append(str(exc))
        return
    nd = chip.image_info.nodata_value
    bad = np.isinf(chip.image).any(axis=0) if math.isnan(nd) else ~np.isfinite(chip.image).all(0)
    if bad.any():
        what = "inf" if math.isnan(nd) else "NaN/inf"
        chip.warnings.append(
            f"{rec.image}: {int(bad.sum())} pixel(s) with {what} values, treated as nodata "
            f"(declared nodata is {nd:g})"
        )
    chip.valid = valid_pixels(chip.image, nd)
    if not chip.valid.any():
        chip.warnings.append(f"{rec.image}: chip is entirely nodata; it adds nothing")


def _read_mask(chip: ChipReading) -> None:
    rec = chip.record
    try:
        mask, info = read_raster(rec.mask)
    except DataError as exc:
        chip.problems.append(str(exc))
        return
    if info.count != 1:
        chip.problems.append(f"{rec.mask}: mask has {info.count} bands, expected 1")
        return
    m = mask[0]
    nd = info.nodata_value
    nodata = np.isnan(m) if math.isnan(nd) else m == nd
    allowed = (m == 0) | (m == 1) | nodata
    if not allowed.all():
        vals = np.unique(m[~allowed])
        shown = ", ".join(f"{v:g}" for v in vals[:5]) + (" ..." if vals.size > 5 else "")
        chip.problems.append(
            f"{rec.mask}: {int((~allowed).sum())} mask value(s) outside {{0, 1, nodata "
            f"{nd:g}}}: {shown}"
        )
        return
    chip.mask, chip.mask_info, chip.labelled = m, info, ~nodata


def _check_grid(chip: ChipReading) -> None:
    img, msk = chip.image_info, chip.mask_info
    if img is None or msk is None:
        return
    rec = chip.record
    if (img.height, img.width) != (msk.height, msk.width):
        chip.problems.append(
            f"{rec.mask}: size {msk.height}x{msk.width} differs from image "
            f"{rec.image.name} {img.height}x{img.width}"
        )
        return
    if img.crs != msk.crs:
        chip.problems.append(
            f"{rec.mask}: CRS {crs_text(msk)} differs from image {rec.image.name} {crs_text(img)}"
        )
    tol = 1e-6 * max(abs(img.transform.a), abs(img.transform.e), 1.0)
    if not img.transform.almost_equals(msk.transform, precision=tol):
        chip.problems.append(
            f"{rec.mask}: transform {tuple(msk.transform)[:6]} differs from image "
            f"{rec.image.name} {tuple(img.transform)[:6]}"
        )


def read_chip(record: ChipRecord, band_order: Sequence[int] | None = None) -> ChipReading:
    """Read a chip's image (in ``band_order``, 0-based; default the file's 4 bands) and mask,
    and judge them by the rules of this module. Never raises for bad data."""
    chip = ChipReading(record)
    _read_image(chip, band_order)
    _read_mask(chip)
    _check_grid(chip)
    if chip.ok and chip.valid is not None and chip.valid.any():
        assert chip.labelled is not None
        if not (chip.valid & chip.labelled).any():
            chip.warnings.append(f"{record.mask}: no labelled pixel inside the imaged area")
    return chip
