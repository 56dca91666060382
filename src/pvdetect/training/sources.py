"""The training sources of a configuration: datasets and synthetic chips, packed side by side.

:func:`open_sources` reads the ``data`` section (``data.root``, ``data.sources``,
``data.synthetic``), packs every source (:func:`pvdetect.data.sources.open_dataset`,
:func:`pvdetect.synth.packed.open_synthetic`) and returns their
:class:`~pvdetect.data.sources.SourceSet`.
"""

from __future__ import annotations

import logging
from typing import Any

from pvdetect.config import DataConfig
from pvdetect.data.exclude import check_matched, excluded_chips, read_exclude
from pvdetect.data.raster import BAND_NAMES
from pvdetect.data.sources import Source, SourceSet, open_dataset, source_name
from pvdetect.errors import ConfigError
from pvdetect.synth.packed import DEFAULT_SYNTH_SIZE, open_synthetic

__all__ = ["open_sources"]

log = logging.getLogger(__name__)


def _names(wanted: list[str | None], defaults: list[str]) -> list[str]:
    """The given names, and unique defaults for the rest (``NAME-2`` ... on a clash)."""
    taken = {w for w in wanted if w}
    out: list[str] = []
    for w, d in zip(wanted, defaults, strict=True):
        if w:
            out.append(w)
            continue
        name, k = d, 2
        while name in taken:
            name = f"{d}-{k}"
            k += 1
        taken.add(name)
        out.append(name)
    return out


def open_sources(data: DataConfig, seed: int = 0) -> SourceSet:
    """Pack every source of a ``data`` configuration section and put them side by side.

    Order: ``data.root`` (weight 1), then ``data.sources``, then the synthetic chips. The
    synthetic chip size defaults to the largest real chip (else 256).

    Raises:
        ConfigError: no source is configured.
        DataError: a dataset cannot be read, or the sources do not fit together.
    """
    specs: list[dict[str, Any]] = []
    if data.root:
        specs.append({"root": data.root, "weight": 1.0, "name": None, "exclude": data.exclude,
                      "where": "data.exclude"})  # fmt: skip
    specs += [
        s.model_dump() | {"where": f"data.sources[{i}].exclude"} for i, s in enumerate(data.sources)
    ]
    syn = data.synthetic
    wanted = [s.get("name") for s in specs] + ([syn.name] if syn.chips else [])
    defaults = [source_name(s["root"]) for s in specs] + (
        [f"synthetic-{syn.style}"] if syn.chips else []
    )
    names = _names(wanted, defaults)
    sources = [
        _dataset_source(spec, name, data, seed) for spec, name in zip(specs, names, strict=False)
    ]
    if syn.chips:
        sources.append(_synthetic_source(data, names[-1], sources))
    if not sources:
        raise ConfigError("no dataset given: pass DATA, --data or --synthetic")
    return SourceSet(sources)


def _dataset_source(spec: dict[str, Any], name: str, data: DataConfig, seed: int) -> Source:
    """One dataset source: its splits, bands, sampling and exclusions from its entry or
    ``data``."""
    where = spec.get("where", "exclude")
    entries = read_exclude(spec.get("exclude"), where)  # a bad list fails before packing
    val = spec.get("val_fraction")
    test = spec.get("test_fraction")
    val = data.val_fraction if val is None else val
    test = data.test_fraction if test is None else test
    if val + test >= 1.0:
        raise ConfigError(
            f"{spec['root']}: val_fraction + test_fraction must be < 1, got {val} + {test}"
        )
    order = spec.get("band_order") if spec.get("band_order") is not None else data.band_order
    cache = open_dataset(
        spec["root"],
        seed=seed,
        val_fraction=val,
        test_fraction=test,
        band_order=order,
        cache_dir=data.cache_dir,
        bands=data.bands,
        wanted=list(BAND_NAMES),  # the model's bands: chosen by the chips' names when named
    )
    drop = spec.get("drop_empty")
    over = spec.get("oversample_pv")
    settings = {"root": str(spec["root"]), "val_fraction": val, "test_fraction": test,
                "band_order": order, "bands": data.bands}  # fmt: skip
    excluded: list[int] = []
    if entries:
        excluded, unmatched = excluded_chips(cache.records, spec["root"], entries)
        check_matched(unmatched, f"{where} ({spec['root']})")
        settings["exclude"] = entries
        log.info("%s: %d chips excluded (%s)", spec["root"], len(excluded), where)
    return Source(
        name=name,
        kind="dataset",
        cache=cache,
        weight=float(spec.get("weight", 1.0)),
        drop_empty=data.drop_empty if drop is None else drop,
        oversample_pv=data.oversample_pv if over is None else over,
        settings=settings,
        excluded=tuple(excluded),
    )


def _synthetic_source(data: DataConfig, name: str, datasets: list[Source]) -> Source:
    """The synthetic source; its chip size defaults to the largest real chip (else 256)."""
    syn = data.synthetic
    size = syn.chip_size
    if size is None:
        sides = [max(s.cache.images.shape[-2:]) for s in datasets]
        size = max(sides) if sides else DEFAULT_SYNTH_SIZE
    cache = open_synthetic(
        syn.chips, style=syn.style, seed=syn.seed, chip_size=size, cache_dir=data.cache_dir
    )
    return Source(
        name=name,
        kind="synthetic",
        cache=cache,
        weight=float(syn.weight),
        drop_empty=data.drop_empty,
        oversample_pv=data.oversample_pv,
        settings={"style": syn.style, "chips": syn.chips, "seed": syn.seed, "chip_size": size},
    )
