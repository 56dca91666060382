"""First PV masks of chips from thresholds, to be corrected by hand.

The prototype marked PV where NIR was below a threshold (1500 to 1800). NIR alone also takes
water, shadow and dark soil (``REFLECTANCE.md`` of the shared data: in the Brazilian dry season
PV is the flattest, greyest, lowest-NDVI surface around, with low NIR but red as high as bare
soil), so three bounds decide, on reflectance x 10000:

* ``NIR <= nir_max`` (1600): above the PV plant's 90th percentile (1461), below the 10th
  percentile of its surroundings (1757);
* ``NDVI <= ndvi_max`` (0.15): above PV's 90th percentile (0.10), below the surroundings'
  10th (0.19);
* ``Red >= red_min`` (700): below PV's 10th percentile (924); water and shadow are darker
  (0 or less: no red bound).

Connected PV regions smaller than ``min_pixels`` (25, a quarter of the smallest plants'
1 ha) are dropped as speckle. The defaults fit dry-season composites of Brazil, the domain of
the prototype; green temperate sites (Austria in ``REFLECTANCE.md``: PV NDVI 0.06 to 0.72)
need other bounds, or a hand-drawn mask.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pvdetect.data.raster import DEFAULT_NODATA, read_raster, valid_pixels, write_raster
from pvdetect.errors import ConfigError, DataError

MASK_NODATA = 255


@dataclass(frozen=True)
class AutomaskParams:
    """Bounds of the first mask (see the module docstring for the defaults' origin)."""

    nir_max: float = 1600.0
    ndvi_max: float = 0.15
    red_min: float = 700.0
    min_pixels: int = 25

    def __post_init__(self) -> None:
        if not math.isfinite(self.nir_max):
            raise ConfigError(f"--nir-max: must be a number, got {self.nir_max}")
        if not (math.isfinite(self.ndvi_max) and -1 <= self.ndvi_max <= 1):
            raise ConfigError(f"--ndvi-max: must lie in [-1, 1], got {self.ndvi_max}")
        if not math.isfinite(self.red_min):
            raise ConfigError(f"--red-min: must be a number, got {self.red_min}")
        if self.min_pixels < 0:
            raise ConfigError(f"--min-pixels: must be 0 or more, got {self.min_pixels}")


def band_order(descriptions: tuple[str | None, ...], count: int, path: Path) -> list[int]:
    """1-based indices of Red, Green, Blue, NIR: by band description, else the first four."""
    names = [(d or "").strip().lower() for d in descriptions]
    wanted = ("red", "green", "blue", "nir")
    if all(names.count(w) == 1 for w in wanted):
        return [names.index(w) + 1 for w in wanted]
    if count < 4:
        raise DataError(f"{path}: has {count} band(s), expected 4 (Red, Green, Blue, NIR)")
    return [1, 2, 3, 4]


def automask_array(image: np.ndarray, valid: np.ndarray, params: AutomaskParams) -> np.ndarray:
    """``uint8 [H, W]`` mask of a ``[4, H, W]`` Red, Green, Blue, NIR image: 1 PV, 0 not,
    255 where the image is not valid."""
    red, nir = image[0].astype(np.float64), image[3].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (nir - red) / (nir + red)
    pv = valid & (nir <= params.nir_max)
    if params.red_min > 0:  # 0 or less: no red bound
        pv &= red >= params.red_min
    pv &= np.isfinite(ndvi) & (ndvi <= params.ndvi_max)
    if params.min_pixels > 1 and pv.any():
        labels, n = ndimage.label(pv, structure=np.ones((3, 3), bool))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < params.min_pixels
        small[0] = False
        pv[small[labels]] = False
    mask = pv.astype(np.uint8)
    mask[~valid] = MASK_NODATA
    return mask


@dataclass(frozen=True)
class AutomaskResult:
    """One mask written (or kept)."""

    image: Path
    mask: Path
    written: bool
    pv_pixels: int
    valid_pixels: int


def automask_file(
    image: Path, out_dir: Path, params: AutomaskParams, overwrite: bool = False
) -> AutomaskResult:
    """Write ``out_dir/masks/<image name>`` for one chip, on the image's grid.

    An existing mask (perhaps corrected by hand) is kept unless ``overwrite``.

    Raises:
        DataError: The image cannot be read or lacks the four bands.
        OutputError: The mask cannot be written.
    """
    mask_path = out_dir / "masks" / image.name
    if mask_path.exists() and not overwrite:
        return AutomaskResult(image, mask_path, False, 0, 0)
    data, info = read_raster(image)
    order = band_order(info.descriptions, info.count, image)
    arr = data[[i - 1 for i in order]]
    nodata = float(info.nodata) if info.nodata is not None else DEFAULT_NODATA
    valid = valid_pixels(arr, nodata)
    mask = automask_array(arr, valid, params)
    write_raster(mask_path, mask, crs=info.crs, transform=info.transform, nodata=MASK_NODATA)
    return AutomaskResult(image, mask_path, True, int((mask == 1).sum()), int(valid.sum()))


def expand_images(paths: list[str]) -> list[Path]:
    """Image files from the arguments: files as given, folders by their ``*.tif``/``*.tiff``.

    Raises:
        DataError: An argument does not exist, or a folder holds no GeoTIFF.
    """
    out: list[Path] = []
    for text in paths:
        p = Path(os.path.expanduser(text))
        if p.is_dir():
            found = sorted(
                q
                for q in p.iterdir()
                if q.is_file() and q.suffix.lower() in (".tif", ".tiff") and q.name[0] != "."
            )
            if not found:
                raise DataError(f"{p}: folder holds no .tif image")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: file not found")
    names = [p.name for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(
            f"{out[names.index(dup[0])]}: two images named {dup[0]} (masks would clash)"
        )
    return out
