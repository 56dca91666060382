"""Region mapping on Dask: grid, sources, tasks, merge, mosaics, state (``pvdetect map``)."""
