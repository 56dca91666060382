"""Chips left out of a dataset: an exclusion list read from a file or given as a list.

A list names chips whose labels do not describe their image, e.g. the dates before a plant was
built, when a label drawn from a later map marks a bare field as PV. Each entry is a chip's
image (or mask) path relative to its dataset folder, its key (``train/12``), or a shell pattern
of either (``train/input/img(1[5-6]?).tif``); a file holds one entry per line, ``#`` starts a
comment. Excluded chips take no part in training, validation, testing, the band statistics or
the folds of cross-validation; the packed cache keeps them, so changing the list repacks
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from pvdetect.data.records import ChipRecord
from pvdetect.errors import ConfigError, DataError

__all__ = ["EXCLUDED", "check_matched", "excluded_chips", "read_exclude"]

#: the split value of an excluded chip (in a :class:`~pvdetect.data.sources.SourceSet`)
EXCLUDED = "excluded"


def read_exclude(value: str | Sequence[str] | None, where: str = "exclude") -> list[str]:
    """The entries of an exclusion list: ``value`` is a file (one entry per line) or a list.

    Raises:
        ConfigError: the file cannot be read (the message names ``where`` and the file).
    """
    if value is None:
        return []
    if isinstance(value, str):
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where}: {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: {path}: cannot be read ({exc})") from None
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        return [line for line in lines if line]
    return [v.strip() for v in value if v.strip()]


def _names(record: ChipRecord, root: Path) -> list[str]:
    """What an entry may match: the key and the image and mask paths relative to ``root``."""
    out = [record.key]
    for p in (record.image, record.mask):
        try:
            out.append(p.resolve().relative_to(root).as_posix())
        except ValueError:
            out.append(p.as_posix())
    return out


def excluded_chips(
    records: Sequence[ChipRecord], root: str | Path, entries: Sequence[str]
) -> tuple[list[int], set[str]]:
    """Indices of the ``records`` that an entry names, and the entries that named none."""
    base = Path(root).expanduser().resolve()
    if base.is_file():  # a manifest: paths relative to its folder
        base = base.parent
    unmatched = set(entries)
    hits: list[int] = []
    for i, rec in enumerate(records):
        names = _names(rec, base)
        found = [e for e in entries if any(n == e or fnmatchcase(n, e) for n in names)]
        if found:
            hits.append(i)
            unmatched.difference_update(found)
    return hits, unmatched


def check_matched(unmatched: set[str], where: str) -> None:
    """Raise for an entry that names no chip (a typo would silently keep a bad chip).

    Raises:
        DataError: names ``where`` and the first such entry.
    """
    if unmatched:
        first = sorted(unmatched)[0]
        more = f" (and {len(unmatched) - 1} more)" if len(unmatched) > 1 else ""
        raise DataError(f"{where}: exclude entry {first!r} names no chip{more}")
