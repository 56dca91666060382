"""pvdetect: find photovoltaic power plants in Sentinel-2 imagery by semantic segmentation."""

__version__ = "0.1.0"
