"""Reflectance tables of the synthetic land covers (Red, Green, Blue, NIR; reflectance x 10000).

Levels follow ``shared/data/REFLECTANCE.md``: Brazilian dry season (red soil, dry grass,
gallery forest) and green temperate farmland, plus covers of both regions and the PV panel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PARCELS", "PARCEL_P", "PARCEL_TABLE", "SPECTRA", "URBAN", "URBAN_P", "URBAN_TABLE"]

_S = {
    # Brazil, dry season
    "dry_grass": (1150, 880, 520, 2250),
    "red_soil": (1750, 1150, 680, 2400),
    "cerrado": (650, 640, 380, 2350),
    "gallery": (320, 520, 260, 2900),
    "dirt_road": (1800, 1250, 800, 2200),
    "burned": (420, 400, 330, 950),
    "pivot_crop": (350, 700, 330, 4200),
    "bare_field": (1600, 1150, 720, 2100),
    "sand": (2100, 1850, 1500, 2450),
    "pv_ground_br": (1500, 1100, 750, 1450),
    # temperate, growing season
    "pasture": (420, 760, 360, 3500),
    "dense_crop": (300, 650, 300, 4600),
    "medium_crop": (600, 800, 450, 3000),
    "bare_soil": (1350, 1100, 850, 1900),
    "wet_soil": (650, 600, 480, 1050),
    "ripe_cereal": (1250, 1150, 800, 2700),
    "forest": (250, 450, 230, 2900),
    "track": (1200, 1150, 1000, 1600),
    "grass": (400, 720, 340, 3300),
    "gravel": (1300, 1200, 1000, 1600),
    "greenhouse": (1900, 2000, 2100, 2600),
    # both
    "clear_water": (260, 420, 380, 160),
    "turbid_water": (750, 880, 640, 520),
    "dark_water": (170, 260, 260, 90),
    "bright_roof": (2100, 2000, 1900, 2300),
    "red_tile": (1700, 1050, 800, 2000),
    "dark_roof": (520, 540, 560, 620),
    "asphalt": (900, 860, 790, 1050),
    "urban_green": (500, 750, 450, 3000),
    "panel": (560, 600, 620, 740),
}
#: spectrum of every land cover, float64 [4]
SPECTRA: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.float64) for k, v in _S.items()}

#: temperate parcel classes and their probabilities
PARCELS = ("pasture", "dense_crop", "medium_crop", "bare_soil", "wet_soil", "ripe_cereal")
PARCEL_P = np.cumsum([0.28, 0.2, 0.15, 0.13, 0.09, 0.15])
PARCEL_TABLE = np.stack([SPECTRA[k] for k in PARCELS], axis=1)  # [4, K]
#: town cover classes and their cumulative probabilities per region
URBAN = ("bright_roof", "red_tile", "dark_roof", "asphalt", "urban_green")
URBAN_P = {
    "brazil": np.cumsum([0.25, 0.3, 0.12, 0.2, 0.13]),
    "temperate": np.cumsum([0.3, 0.2, 0.15, 0.2, 0.15]),
}
URBAN_TABLE = np.stack([SPECTRA[k] for k in URBAN], axis=1)
