"""Synthetic Sentinel-2-like PV data (``pvdetect synth``); imports no torch.

Modules, each with one job: :mod:`~pvdetect.synth.noise` (coordinate-hashed noise),
:mod:`~pvdetect.synth.spectra` (reflectance tables), :mod:`~pvdetect.synth.shapes` (canvas and
painted objects), :mod:`~pvdetect.synth.landscape` (background and window rendering),
:mod:`~pvdetect.synth.populate` (object placement), :mod:`~pvdetect.synth.scene` (large
scenes), :mod:`~pvdetect.synth.dataset` (chips, ``sites.csv``, summaries) and
:mod:`~pvdetect.staging` (the staged, marked output folder).
"""
