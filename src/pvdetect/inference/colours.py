"""The colours of pvdetect's layers: plant outlines, the area of interest, the mask."""

from __future__ import annotations

__all__ = ["AOI_RGB", "OUTLINE_RGB"]

#: outline colour of the plants (magenta)
OUTLINE_RGB = (255, 0, 255)
#: outline colour of the area of interest (cyan)
AOI_RGB = (0, 230, 255)
