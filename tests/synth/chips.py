"""Helpers of the synth tests: the chips and sites of a dataset written by ``pvdetect synth``."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from pvdetect.data.raster import read_raster

SPLITS = ("train", "val", "test")


def chip_pairs(root: Path) -> list[tuple[str, int, Path, Path]]:
    """(split, n, image, label) of every chip image under ``root``."""
    pairs = []
    for split in SPLITS:
        for img in sorted((root / split / "input").glob("img(*).tif")):
            n = int(re.fullmatch(r"img\((\d+)\)\.tif", img.name).group(1))
            pairs.append((split, n, img, root / split / "labels" / f"target({n}).tif"))
    return pairs


def read_sites(root: Path) -> list[dict[str, str]]:
    """The rows of ``root/sites.csv``."""
    with open(root / "sites.csv", newline="") as f:
        return list(csv.DictReader(f))


def load_chips(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images [N,4,H,W], labels [N,H,W] and region prefixes ('br'/'te') of all chips."""
    site_of = {(r["split"], int(r["n"])): r["site"] for r in read_sites(root)}
    imgs, labs, regions = [], [], []
    for split, n, img, lab in chip_pairs(root):
        imgs.append(read_raster(img)[0])
        labs.append(read_raster(lab)[0][0])
        regions.append(site_of[(split, n)][:2])
    return np.stack(imgs), np.stack(labs), regions
