"""Small file helpers every part shares: atomic writes, JSON without NaN, short error texts.

Every output of pvdetect is written to a temporary name beside its final path and renamed only
when complete (:func:`atomic_output`), so an interrupted run never leaves a half-written file
under a final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pvdetect.errors import OutputError

__all__ = [
    "atomic_output",
    "check_out_dir",
    "clean_json",
    "disk_full_guard",
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

    The temporary name (``.STEM.p<pid>.XXXX.part.SUFFIX``) keeps the suffix so that drivers
    chosen by extension still work, and names its owner so that a later run can remove it if
    this process is killed (:func:`pvdetect.staging.remove_stale_in`); it does not exist when
    the block starts (GPKG refuses an empty file). On any error it is removed and the error is
    raised again.
    """
    final = Path(path)
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.stem}.p{os.getpid()}.", suffix=f".part{final.suffix}", dir=parent
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


NO_SPACE = "No space left on device"


class _NativeStderr:
    """While active, what native code (GDAL, libtiff) writes to the process's stderr goes to
    a temporary file; Python's own ``sys.stderr`` keeps writing to the real stderr. On exit
    the held lines are written out, except those containing :data:`NO_SPACE` (counted)."""

    def __init__(self) -> None:
        self.no_space = 0

    def __enter__(self) -> _NativeStderr:
        sys.stderr.flush()
        self._held = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        self._python = sys.stderr
        sys.stderr = os.fdopen(os.dup(self._saved), "w", buffering=1, encoding="utf-8")
        os.dup2(self._held.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        with contextlib.suppress(Exception):
            sys.stderr.close()
        sys.stderr = self._python
        self._held.seek(0)
        for raw in self._held:
            line = raw.decode("utf-8", "replace")
            if NO_SPACE in line:
                self.no_space += 1
            else:
                sys.stderr.write(line)
        self._held.close()


def _no_space(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if NO_SPACE in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def disk_full_guard(folder: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk while writing into ``folder`` into one clear :class:`OutputError`.

    GDAL and libtiff print each failed block write on stderr themselves, and the first error
    that reaches Python is often a later read of the half-written file; inside this block
    those messages are held back, and any failure caused by a full disk (or a silent write
    failure that GDAL reported) becomes ``FOLDER: no space left on the device ...``, once.
    """
    message = (
        f"{folder}: no space left on the device (the disk is full); free some space or "
        "choose another output folder, then run again"
    )
    native = _NativeStderr()
    # fd 2 is the process's: only the main thread may hold it back (a server or worker
    # running scenes in threads keeps GDAL's messages, and still gets the one clear error)
    hold = threading.current_thread() is threading.main_thread()
    failed: BaseException | None = None
    try:
        with native if hold else contextlib.nullcontext():
            yield
    except BaseException as exc:  # noqa: BLE001 - re-raised below unless the disk is full
        failed = exc
    if native.no_space or _no_space(failed):
        raise OutputError(message) from None
    if failed is not None:
        raise failed
