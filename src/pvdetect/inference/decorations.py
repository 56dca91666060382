"""Map furniture of the overlay picture: legend, scale bar and corner coordinates.

Drawn with Pillow on small patches of the finished picture (a few milliseconds for a 2048 px
overlay): a legend (the PV outline colour, the number of plants, and the area of interest when
there is one) in the lower left corner, a scale bar of a round length in the lower right, and
the longitude and latitude (WGS 84) of the upper-left and lower-right corners. Pictures
smaller than :data:`MIN_SIDE` pixels get none (they would be covered by them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyproj
from affine import Affine

from pvdetect.inference.colours import AOI_RGB

__all__ = ["decorate", "nice_length", "scale_bar_metres"]

#: pictures with a side below this get no decorations
MIN_SIDE = 200
#: opacity of the white boxes behind texts
BOX_ALPHA = 0.78


def nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``metres`` (at least 1 m)."""
    if metres < 1:
        return 1.0
    k = math.floor(math.log10(metres))
    for m in (5, 2, 1):
        if m * 10**k <= metres:
            return float(m * 10**k)
    return float(10**k)


def scale_bar_metres(transform: Affine, crs: object, width: int, height: int) -> float:
    """Ground metres per picture pixel along the bottom edge (geodesic, any CRS)."""
    from pvdetect.data.raster import pyproj_crs

    src = pyproj_crs(crs)
    to_ll = pyproj.Transformer.from_crs(src, "EPSG:4326", always_xy=True)
    y = height - 0.5
    (x0, y0), (x1, y1) = transform @ (0, y), transform @ (width, y)
    lon0, lat0 = to_ll.transform(x0, y0)
    lon1, lat1 = to_ll.transform(x1, y1)
    _, _, dist = pyproj.Geod(ellps="WGS84").inv(lon0, lat0, lon1, lat1)
    return float(dist) / max(width, 1)


def _lonlat(transform: Affine, crs: object, col: float, row: float) -> str:
    from pvdetect.data.raster import pyproj_crs

    to_ll = pyproj.Transformer.from_crs(pyproj_crs(crs), "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(*(transform @ (col, row)))
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    return f"{abs(lat):.4f}°{ns} {abs(lon):.4f}°{ew}"


def _font(size: int):  # noqa: ANN202 - a Pillow font
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


class _Patch:
    """A rectangle of the picture drawn on through Pillow and pasted back."""

    def __init__(self, img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
        from PIL import Image, ImageDraw

        h, w = img.shape[:2]
        self.img = img
        self.x0, self.y0 = max(0, x0), max(0, y0)
        self.x1, self.y1 = min(w, x1), min(h, y1)
        region = img[self.y0 : self.y1, self.x0 : self.x1].astype(np.float32)
        region = region * (1 - BOX_ALPHA) + 255.0 * BOX_ALPHA  # a light box behind the text
        self.pil = Image.fromarray(region.astype(np.uint8), "RGB")
        self.draw = ImageDraw.Draw(self.pil)

    def paste(self) -> None:
        self.img[self.y0 : self.y1, self.x0 : self.x1] = np.asarray(self.pil)


def _text_box(font, text: str) -> tuple[int, int]:  # noqa: ANN001
    from PIL import Image, ImageDraw

    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font
    )
    return int(right - left), int(bottom - top)


def decorate(
    img: np.ndarray,
    transform: Affine,
    crs: object,
    *,
    plants: int,
    outline_rgb: Sequence[int],
    aoi: bool = False,
) -> np.ndarray:
    """Draw legend, scale bar and corner coordinates onto ``img`` (uint8 ``[H, W, 3]``).

    Args:
        img: the overlay picture, changed in place.
        transform: the picture's geotransform (scene CRS).
        crs: the scene CRS.
        plants: number of plants (shown in the legend).
        outline_rgb: colour of the plant outlines.
        aoi: also show the area-of-interest outline in the legend.
    """
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        return img
    size = int(np.clip(min(h, w) / 60, 11, 22))
    font = _font(size)
    pad = max(4, size // 2)
    line = size + pad // 2
    # legend, lower left
    entries = [(tuple(outline_rgb), f"PV plant ({plants})")]
    if aoi:
        entries.append((AOI_RGB, "area of interest"))
    text_w = max(_text_box(font, t)[0] for _, t in entries)
    box_w, box_h = 3 * pad + size + text_w, pad + line * len(entries)
    patch = _Patch(img, pad, h - pad - box_h, pad + box_w, h - pad)
    for k, (rgb, text) in enumerate(entries):
        y = pad // 2 + k * line + 2
        patch.draw.rectangle([pad, y, pad + size, y + size - 2], outline=rgb, width=2)
        patch.draw.text((2 * pad + size, y - 1), text, fill=(0, 0, 0), font=font)
    patch.paste()
    # scale bar, lower right
    per_px = scale_bar_metres(transform, crs, w, h)
    length = nice_length(per_px * w / 5)
    bar = max(1, round(length / per_px))
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    lw, _ = _text_box(font, label)
    sb_w = max(bar, lw) + 2 * pad
    patch = _Patch(img, w - pad - sb_w, h - pad - (line + size // 2 + pad), w - pad, h - pad)
    bx0 = (sb_w - bar) // 2
    by = pad // 2 + line
    patch.draw.text(((sb_w - lw) // 2, pad // 2), label, fill=(0, 0, 0), font=font)
    patch.draw.rectangle([bx0, by, bx0 + bar, by + size // 3], fill=(0, 0, 0))
    patch.draw.rectangle([bx0 + bar // 2, by + 1, bx0 + bar - 1, by + size // 3 - 1], fill="white")
    patch.paste()
    # corner coordinates
    for text, right, bottom in (
        (_lonlat(transform, crs, 0, 0), False, False),
        (_lonlat(transform, crs, w, h), True, True),
    ):
        tw, _ = _text_box(font, text)
        x0 = w - pad - tw - pad if right else pad
        y0 = h - 3 * pad - (line + size // 2 + pad) - line if bottom else pad
        patch = _Patch(img, x0, y0, x0 + tw + pad, y0 + line)
        patch.draw.text((pad // 2, 1), text, fill=(0, 0, 0), font=font)
        patch.paste()
    return img
