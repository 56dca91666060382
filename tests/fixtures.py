"""Writers of the test data the whole suite uses: chips, chip datasets in each layout, scenes.

Every file is written with :func:`pvdetect.data.raster.write_raster`, so tests read back exactly
what the project's own writer produces. Arrays keep their dtype (pass float32 for reflectance).
Array makers are deterministic for a seed or a :class:`numpy.random.Generator`; images are
``[bands, H, W]`` and masks ``[1, H, W]`` (what :func:`~pvdetect.data.raster.read_raster` gives
back), 2-D masks are accepted too.

Dataset layouts (see ``pvdetect.data.layouts``):

* Solar-Plants-Brazil, ``ROOT/<split>/input/img(N).tif`` + ``ROOT/<split>/labels/target(N).tif``
  and optionally ``ROOT/sites.csv``: :func:`write_brazil_dataset`, :func:`brazil_paths`;
* ``ROOT/images/<stem>.tif`` + ``ROOT/masks/<stem>.tif``: :func:`write_folders_dataset`;
* a CSV manifest of paths relative to it: :func:`write_manifest_dataset`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from affine import Affine

from pvdetect.data.raster import DEFAULT_NODATA, write_raster

if TYPE_CHECKING:
    from pvdetect.model.bundle import Bundle, BundleMeta

#: UTM zone 33N, the CRS of the Austrian chips
UTM33 = "EPSG:32633"
NODATA = DEFAULT_NODATA

Arrays = tuple[np.ndarray, np.ndarray]
Seed = int | np.random.Generator


def grid(x0: float = 500_000.0, y0: float = 5_200_000.0, res: float = 10.0) -> Affine:
    """North-up transform of a ``res`` m grid whose top-left corner is at ``(x0, y0)``."""
    return Affine(res, 0.0, x0, 0.0, -res, y0)


#: the default chip grid: 10 m pixels in UTM 33N
GRID = grid()


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ------------------------------------------------------------------------------ array makers


def random_chip(
    seed: Seed,
    size: int = 32,
    *,
    bands: int = 4,
    low: float = 0.0,
    high: float = 5000.0,
    pv_fraction: float = 0.3,
) -> Arrays:
    """Uniform reflectance in ``[low, high)`` and a mask with PV at random pixels.

    Returns:
        float32 image ``[bands, size, size]`` and float32 mask ``[1, size, size]`` in {0, 1}.
    """
    rng = _rng(seed)
    image = rng.uniform(low, high, (bands, size, size)).astype(np.float32)
    mask = (rng.random((1, size, size)) < pv_fraction).astype(np.float32)
    return image, mask


def constant_chip(value: float, size: int = 16, bands: int = 4) -> Arrays:
    """An image holding ``value`` everywhere (to tell files apart) and an all-background mask."""
    return (
        np.full((bands, size, size), value, np.float32),
        np.zeros((1, size, size), np.float32),
    )


def plant_pattern(
    seed: Seed,
    size: int = 32,
    *,
    plants: tuple[int, int] = (0, 2),
    side: tuple[int, int] = (3, 8),
    rgb: tuple[float, float] = (300.0, 1200.0),
    pv_nir: tuple[float, float] = (500.0, 1400.0),
    bg_nir: tuple[float, float] = (1600.0, 5000.0),
) -> Arrays:
    """A chip where PV is learnable: rectangular plants that are dark in NIR.

    Between ``plants[0]`` and ``plants[1]`` rectangles (sides ``side[0]`` to ``side[1]`` pixels)
    are placed at random; R, G and B are uniform in ``rgb`` everywhere, NIR is uniform in
    ``pv_nir`` on PV and in ``bg_nir`` elsewhere. With the default, disjoint ranges a NIR
    threshold at 1500 separates the classes exactly; overlapping ranges give errors of both kinds.

    Returns:
        float32 image ``[4, size, size]`` and float32 mask ``[1, size, size]`` in {0, 1}.
    """
    rng = _rng(seed)
    pv = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(plants[0], plants[1] + 1))):
        h, w = (int(v) for v in rng.integers(side[0], side[1] + 1, 2))
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        pv[y : y + h, x : x + w] = True
    image = np.empty((4, size, size), np.float32)
    image[:3] = rng.uniform(*rgb, (3, size, size))
    image[3] = np.where(pv, rng.uniform(*pv_nir, pv.shape), rng.uniform(*bg_nir, pv.shape))
    return image, pv[None].astype(np.float32)


def window_chip(
    seed: Seed, size: int = 64, rows: tuple[int, int] = (8, 40), cols: tuple[int, int] = (12, 52)
) -> Arrays:
    """A chip cut to its label, as the austria_s2 chips are: the window ``rows`` x ``cols``
    imaged (a plant of 6-14 px a side, dark in NIR as in :func:`plant_pattern`, placed at
    random inside it), nodata around it, the mask 0 there."""
    rng = _rng(seed)
    h, w = rows[1] - rows[0], cols[1] - cols[0]
    ph, pw = (int(v) for v in rng.integers(6, 15, 2))
    y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    pv = np.zeros((h, w), bool)
    pv[y : y + ph, x : x + pw] = True
    image = np.full((4, size, size), NODATA, np.float32)
    mask = np.zeros((1, size, size), np.float32)
    win = (slice(*rows), slice(*cols))
    image[(slice(0, 3), *win)] = rng.uniform(300.0, 1200.0, (3, h, w))
    image[(3, *win)] = np.where(pv, rng.uniform(500.0, 1400.0, pv.shape),
                                rng.uniform(1600.0, 5000.0, pv.shape))  # fmt: skip
    mask[(0, *win)] = pv
    return image, mask


# ------------------------------------------------------------------------------ files


def write_chip(
    path_img: Path,
    path_mask: Path,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    crs: str | None = UTM33,
    transform: Affine = GRID,
    nodata: float | None = NODATA,
    mask_nodata: float | None = None,
) -> tuple[Path, Path]:
    """Write one image/mask pair on the same grid (``mask_nodata`` defaults to ``nodata``)."""
    mask_nd = nodata if mask_nodata is None else mask_nodata
    write_raster(path_img, image, crs=crs, transform=transform, nodata=nodata)
    write_raster(path_mask, mask, crs=crs, transform=transform, nodata=mask_nd)
    return Path(path_img), Path(path_mask)


def write_scene(
    path: Path,
    image: np.ndarray,
    *,
    crs: str | None = UTM33,
    transform: Affine = GRID,
    nodata: float | None = NODATA,
    descriptions: Sequence[str] | None = None,
) -> Path:
    """Write a scene (or any single raster: a mask, probabilities) as a GeoTIFF."""
    return write_raster(
        path, image, crs=crs, transform=transform, nodata=nodata, descriptions=descriptions
    )


def write_random_scene(
    path: Path,
    height: int,
    width: int,
    *,
    seed: Seed = 0,
    bands: int = 4,
    low: float = 0.0,
    high: float = 3000.0,
    crs: str | None = UTM33,
    transform: Affine = GRID,
) -> Path:
    """A float32 scene of uniform reflectance in ``[low, high)``, nodata -9999."""
    image = _rng(seed).uniform(low, high, (bands, height, width)).astype(np.float32)
    return write_scene(path, image, crs=crs, transform=transform)


# ------------------------------------------------------------------------------ layouts


def brazil_paths(root: Path, split: str, n: int) -> tuple[Path, Path]:
    """Image and mask path of chip ``n`` of ``split`` in the Solar-Plants-Brazil layout."""
    return root / split / "input" / f"img({n}).tif", root / split / "labels" / f"target({n}).tif"


def write_brazil_dataset(
    root: Path,
    splits: Mapping[str, int | Iterable[int]],
    make: Callable[[str, int], Arrays] | None = None,
    *,
    numbering: Literal["split", "global"] = "split",
    sites: Callable[[str, int], str] | None = None,
    size: int = 32,
    seed: int = 0,
    crs: str | None = UTM33,
    transform: Affine | Callable[[int], Affine] = GRID,
    nodata: float | None = NODATA,
) -> Path:
    """Write a Solar-Plants-Brazil dataset.

    Args:
        root: dataset folder (created).
        splits: per split, a chip count or the chip numbers themselves.
        make: ``make(split, n) -> (image, mask)``, called once per chip in the order the chips
            are written (splits as given, numbers as given); default: :func:`random_chip` with
            seed ``seed + i`` (i counts the chips) and side ``size``.
        numbering: with counts, number each split from 1 (``"split"``) or number on through all
            splits so that numbers are unique (``"global"``).
        sites: ``sites(split, n) -> site``; when given, ``ROOT/sites.csv`` is written.
        crs: CRS of every chip.
        transform: the chips' transform, or ``transform(n)`` for one per chip number.
        nodata: nodata of images and masks.

    Returns:
        ``root``.
    """
    rows = []
    count = 0
    for split, spec in splits.items():
        if isinstance(spec, int):
            first = count + 1 if numbering == "global" else 1
            numbers: Iterable[int] = range(first, first + spec)
        else:
            numbers = spec
        for n in numbers:
            image, mask = make(split, n) if make else random_chip(seed + count, size)
            t = transform(n) if callable(transform) else transform
            write_chip(
                *brazil_paths(root, split, n), image, mask, crs=crs, transform=t, nodata=nodata
            )
            if sites is not None:
                rows.append((split, n, sites(split, n)))
            count += 1
    if sites is not None:
        with open(root / "sites.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([("split", "n", "site"), *rows])
    return root


def write_folders_dataset(
    root: Path,
    stems: Sequence[str],
    make: Callable[[int, str], Arrays] | None = None,
    *,
    size: int = 32,
    seed: int = 0,
    crs: str | None = UTM33,
    transform: Affine | Callable[[int], Affine] = GRID,
    nodata: float | None = NODATA,
) -> list[tuple[Path, Path]]:
    """Write ``ROOT/images/<stem>.tif`` and ``ROOT/masks/<stem>.tif`` for every stem.

    ``make(i, stem) -> (image, mask)`` gives the arrays of the ``i``-th stem (default:
    :func:`random_chip` with seed ``seed + i``); ``transform`` may be ``transform(i)``.

    Returns:
        the (image, mask) paths in the order of ``stems``.
    """
    pairs = []
    for i, stem in enumerate(stems):
        image, mask = make(i, stem) if make else random_chip(seed + i, size)
        t = transform(i) if callable(transform) else transform
        pairs.append(
            write_chip(
                root / "images" / f"{stem}.tif",
                root / "masks" / f"{stem}.tif",
                image,
                mask,
                crs=crs,
                transform=t,
                nodata=nodata,
            )
        )
    return pairs


def write_manifest_dataset(
    csv_path: Path,
    rows: Sequence[Mapping[str, str]],
    make: Callable[[int, Mapping[str, str]], Arrays] | None = None,
    *,
    size: int = 32,
    seed: int = 0,
    crs: str | None = UTM33,
    transform: Affine = GRID,
    nodata: float | None = NODATA,
) -> Path:
    """Write the chips a manifest names and the manifest itself.

    Args:
        csv_path: the CSV file (``ROOT/manifest.csv`` or any ``.csv``); paths in ``rows`` are
            relative to its folder.
        rows: one mapping per chip with ``image`` and ``mask`` and optionally ``split`` and
            ``site``; the CSV gets the columns that occur, in the order image, mask, split, site.
        make: ``make(i, row) -> (image, mask)`` (default: :func:`random_chip` with seed
            ``seed + i``).

    Returns:
        ``csv_path``.
    """
    base = csv_path.parent
    for i, row in enumerate(rows):
        image, mask = make(i, row) if make else random_chip(seed + i, size)
        write_chip(
            base / row["image"],
            base / row["mask"],
            image,
            mask,
            crs=crs,
            transform=transform,
            nodata=nodata,
        )
    columns = [c for c in ("image", "mask", "split", "site") if any(c in r for r in rows)]
    base.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def nir_bundle(meta: BundleMeta) -> Bundle:
    """A pixel-wise bundle on the CPU: logits 8 x normalised NIR, so PV where NIR is above its
    band mean (a 1 x 1 convolution standing in for a network)."""
    import torch
    from torch import nn

    from pvdetect.model.bundle import Bundle

    conv = nn.Conv2d(4, 1, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 3] = 8.0
        conv.bias.zero_()
    return Bundle(meta, conv).to("cpu")
