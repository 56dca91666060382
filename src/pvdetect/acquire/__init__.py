"""Fetch Sentinel-2 imagery from STAC catalogs and public datasets; start masks for labelling.

* :mod:`~pvdetect.acquire.catalogs`: the known catalogs, the search; :mod:`.signing`: signed
  asset addresses (Planetary Computer).
* :mod:`~pvdetect.acquire.assets`: the four bands, the scene classification and the offset
  and scale of each item's assets.
* :mod:`~pvdetect.acquire.grid`: the output grid (UTM choice, bbox and point parsing).
* :mod:`~pvdetect.acquire.readers`: windowed, reprojected HTTP reads of an item's assets.
* :mod:`~pvdetect.acquire.composite`: the per-pixel median of the clear observations, by block.
* :mod:`~pvdetect.acquire.chips`: capture windows moved at random around a point.
* :mod:`~pvdetect.acquire.outputs`: the COG, the chips and their all-or-nothing renaming.
* :mod:`~pvdetect.acquire.request`: the options of an acquisition, checked together.
* :mod:`~pvdetect.acquire.sidecar`: the JSON sidecar, written and read back.
* :mod:`~pvdetect.acquire.pipeline`: one acquisition end to end (reuse, conflicts, outputs).
* :mod:`~pvdetect.acquire.automask`: first PV masks from thresholds, for hand correction.
* :mod:`~pvdetect.acquire.datasets`, :mod:`.download` and :mod:`.archives`: public
  datasets, resumable and verified downloads, safe extraction.
* :mod:`~pvdetect.acquire.http`: sessions with retries, GDAL's HTTP options, NetworkError.

Nothing here imports torch.
"""
