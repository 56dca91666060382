"""Small file helpers every part shares: atomic writes, JSON without NaN, short error texts.

Every output of pvdetect is written to a temporary name beside its final path and renamed only
when complete (:func:`atomic_output`), so an interrupted run never leaves a half-written file
under a final name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pvdetect.errors import OutputError

__all__ = [
    "atomic_output",
    "check_out_dir",
    "clean_json",
    "first_line",
    "prepare_out_dir",
    "write_json",
    "write_text",
]


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), shortened."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name (``.STEM.XXXX.part.SUFFIX``) keeps the suffix so that drivers chosen
    by extension still work; it does not exist when the block starts (GPKG refuses an empty
    file). On any error it is removed and the error is raised again.
    """
    final = Path(path)
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.stem}.", suffix=f".part{final.suffix}", dir=parent
        )
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot write output here ({exc.strerror or exc})") from None
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def clean_json(value: Any) -> Any:
    """Plain JSON types: numpy/torch scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean_json(v) for v in value.tolist()]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, data: Any, indent: int = 1) -> Path:
    """Write JSON atomically; undefined numbers (NaN, inf) are written as null."""
    text = json.dumps(clean_json(data), indent=indent, allow_nan=False)
    return write_text(path, text + "\n")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    final = Path(path)
    with atomic_output(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return final


def check_out_dir(path: str | os.PathLike) -> Path:
    """Check that ``path`` can become an output folder, without creating anything.

    Called before the inputs are read, so that a long run never ends in a write error, while
    a run that fails on its inputs leaves no empty folder behind.

    Raises:
        OutputError: ``path`` is a file, or the nearest existing folder above it is not
            writable.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: {probe} is not writable")
    return out


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create an output folder (and its parents) once the inputs are known to be good."""
    out = check_out_dir(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create output folder ({exc.strerror or exc})") from None
    return out
