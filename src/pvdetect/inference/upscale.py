"""``pvdetect upscale``: write an upscaled copy of a chip dataset.

Every image is upscaled in reflectance space (bicubic, or a super-resolution network), every mask
by nearest neighbour; the georeferencing keeps the same bounds with the pixel size divided by the
factor, and nodata stays nodata (the valid mask is upscaled by nearest neighbour). Before bicubic
interpolation each nodata pixel is filled with its nearest valid pixel, so the nodata value never
bleeds into valid pixels, and the result is clipped to each band's range in the source chip, so
bicubic ringing never makes reflectance negative. The copy keeps the input's folder layout and
file names, plus ``sites.csv``, ``manifest.csv`` (paths rewritten) and ``.pvdetect_split.json``
when present. It is written to a temporary folder beside ``OUT`` that is renamed when complete.

Super-resolution (``--method sr``) maps reflectance to [0, 1] per band with 0 -> 0 and the 99.5th
percentile of the valid pixels of ``--stats-from`` (default the training split) -> 1, or
reflectance / 10000 with ``--stats-from none``; brighter values are clipped for the network.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from affine import Affine

from pvdetect.data.chips import read_chip
from pvdetect.data.raster import raster_info, write_raster
from pvdetect.data.records import ChipRecord
from pvdetect.errors import ConfigError, OutputError
from pvdetect.io import atomic_output, first_line
from pvdetect.staging import check_apart, check_target, staged_folder

FACTORS = (2, 4)
TOOL = "pvdetect upscale"
STATS_CHOICES = ("train", "val", "test", "all", "none")


def _fill_nearest(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid pixels of ``[C, H, W]`` by their nearest valid pixel."""
    if valid.all() or not valid.any():
        return np.where(valid[None], image, 0.0).astype(np.float32)
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(~valid, return_indices=True)
    return image[:, iy, ix].astype(np.float32)


def _reflectance_high(records, split: str) -> list[float] | None:
    """Per-band 99.5th percentile of the valid pixels of ``split`` (None: no chips)."""
    from pvdetect.data.raster import read_raster, valid_pixels

    chosen = [r for r in records if split == "all" or r.split == split]
    if not chosen:
        return None
    rng = np.random.default_rng(0)
    samples: list[np.ndarray] = []
    for rec in chosen:
        img, info = read_raster(rec.image)
        ok = valid_pixels(img, info.nodata)
        px = img[:, ok].T
        if len(px) > 4096:
            px = px[rng.choice(len(px), 4096, replace=False)]
        samples.append(px)
    allpx = np.concatenate(samples) if samples else np.empty((0, 0))
    if allpx.size == 0:
        return None
    return [max(float(v), 1.0) for v in np.percentile(allpx, 99.5, axis=0)]


def _cast(arr: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        lim = np.iinfo(dt)
        return np.clip(np.rint(arr), lim.min, lim.max).astype(dt)
    return arr.astype(dt)


class _Upscaler:
    """Upscales single chips (image and mask) with a fixed method."""

    def __init__(self, factor: int, method: str, device, sr=None) -> None:
        self.factor = factor
        self.method = method
        self.device = device
        self.sr = sr

    def image(self, image: np.ndarray, nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
        import torch
        import torch.nn.functional as F

        from pvdetect.data.raster import valid_pixels
        from pvdetect.device import autocast

        f = self.factor
        valid = valid_pixels(image, nodata)
        filled = _fill_nearest(image, valid)
        x = torch.from_numpy(filled)[None].to(self.device)
        if self.method == "sr":
            with autocast(self.device):
                up = self.sr(x)
        else:
            up = F.interpolate(x, scale_factor=f, mode="bicubic", align_corners=False)
        out = up[0].float().cpu().numpy()
        if valid.any():  # no ringing beyond the chip's own per-band range (e.g. negatives)
            lo = image[:, valid].min(axis=1)[:, None, None]
            hi = image[:, valid].max(axis=1)[:, None, None]
            out = np.clip(out, lo, hi)
        vup = valid.repeat(f, axis=0).repeat(f, axis=1)
        fill = nodata if nodata is not None else np.nan
        out[:, ~vup] = fill
        return out, vup

    def mask(self, mask: np.ndarray) -> np.ndarray:
        f = self.factor
        return mask.repeat(f, axis=-2).repeat(f, axis=-1)


def _relative(path: Path, root: Path, fallback: str) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return Path(fallback) / path.name


def _copy_extras(root: Path, tmp: Path, rows: list[dict[str, str]], had_manifest: bool) -> None:
    for name in ("sites.csv", ".pvdetect_split.json"):
        src = root / name
        if src.is_file():
            shutil.copy2(src, tmp / name)
    if had_manifest:
        with atomic_output(tmp / "manifest.csv") as part:
            with open(part, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=["image", "mask", "split", "site"])
                writer.writeheader()
                writer.writerows(rows)


def _upscale_chip(rec: ChipRecord, up: _Upscaler, root: Path, tmp: Path) -> dict[str, str]:
    """Upscale one chip pair into ``tmp`` (same relative paths); returns its manifest row."""
    info = raster_info(rec.image)
    chip = read_chip(rec, band_order=list(range(info.count)))
    chip.raise_problems()
    assert chip.image is not None and chip.mask is not None and chip.mask_info is not None
    minfo, factor = chip.mask_info, up.factor
    big, _ = up.image(chip.image, info.nodata)
    big_mask = up.mask(chip.mask[None])
    img_rel = _relative(rec.image, root, "images")
    mask_rel = _relative(rec.mask, root, "masks")
    write_raster(
        tmp / img_rel,
        _cast(big, info.dtype),
        crs=info.crs,
        transform=info.transform @ Affine.scale(1.0 / factor),
        nodata=info.nodata,
        descriptions=[d or "" for d in info.descriptions] if any(info.descriptions) else None,
    )
    write_raster(
        tmp / mask_rel,
        _cast(big_mask, minfo.dtype),
        crs=minfo.crs,
        transform=minfo.transform @ Affine.scale(1.0 / factor),
        nodata=minfo.nodata,
    )
    return {
        "image": img_rel.as_posix(),
        "mask": mask_rel.as_posix(),
        "split": rec.split,
        "site": rec.site,
    }


def upscale_dataset(
    data: Path,
    out: Path,
    factor: int,
    method: str = "bicubic",
    sr_weights: Path | None = None,
    stats_from: str = "train",
    nir: str = "sr",
    device: str = "auto",
    overwrite: bool = False,
) -> int:
    """Write the upscaled copy of ``data`` to ``out``; returns the number of chips written.

    ``out`` is written under a temporary name and marked as written by ``pvdetect upscale``;
    ``overwrite`` replaces only such a folder, and ``out`` may neither be the input, lie
    inside it, nor contain it.
    """
    from pvdetect.data.layouts import find_chips
    from pvdetect.device import resolve_device

    if factor not in FACTORS:
        raise ConfigError(f"--factor must be one of {FACTORS}, got {factor}")
    if method not in ("bicubic", "sr"):
        raise ConfigError(f"unknown method {method!r}; use bicubic or sr")
    if method == "sr" and sr_weights is None:
        raise ConfigError("--method sr needs --sr-weights PATH")
    if stats_from not in STATS_CHOICES:
        raise ConfigError(f"--stats-from must be one of {STATS_CHOICES}")
    data = Path(data)
    root = data.parent if data.suffix.lower() == ".csv" else data
    had_manifest = data.suffix.lower() == ".csv" or (root / "manifest.csv").is_file()
    out = Path(out)
    check_apart(out, (root,))  # before any work: nothing is read for a refused OUT
    check_target(out, overwrite, TOOL)
    records = find_chips(data)
    dev = resolve_device(device)
    sr = None
    if method == "sr":
        from pvdetect.model.sr import load_sr_model

        hi: float | list[float] = 10000.0
        if stats_from != "none":
            high = _reflectance_high(records, stats_from)
            if high is None:
                high = _reflectance_high(records, "all")
            hi = high if high is not None else 10000.0
        sr = load_sr_model(sr_weights, factor, lo=0.0, hi=hi, nir=nir).to(dev)
    up = _Upscaler(factor, method, dev, sr)
    record = {"data": str(root.resolve()), "factor": factor, "method": method}
    try:
        with staged_folder(out, record, overwrite=overwrite, tool=TOOL, inputs=(root,)) as tmp:
            rows = [_upscale_chip(rec, up, root, tmp) for rec in records]
            _copy_extras(root, tmp, rows, had_manifest)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the upscaled dataset ({first_line(exc)})") from None
    return len(records)
