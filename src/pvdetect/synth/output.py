"""The folder ``pvdetect synth`` writes: staged beside OUT, marked, replaced only if ours.

A dataset is written into ``.OUT.partial-<pid>`` beside ``OUT`` and renamed to ``OUT`` only
when complete, so an interrupted run never leaves half a dataset under the final name. The
marker file :data:`MARKER` in the folder says pvdetect wrote it (version, arguments, seed);
an existing ``OUT`` is replaced only if it carries the marker (and ``overwrite`` is given) or
is empty. Anything else is refused with a one-line :class:`~pvdetect.errors.OutputError` and
left untouched. Temporary folders of an earlier killed run into the same parent (their owner
process is gone, or its pid now belongs to a younger process) are removed by the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pvdetect import __version__
from pvdetect.errors import OutputError
from pvdetect.io import first_line, write_json

__all__ = ["MARKER", "check_target", "remove_stale", "staged_dataset"]

MARKER = ".pvdetect-synth.json"
#: kinds of temporary folders beside OUT: the dataset being written, the one being replaced
_KINDS = ("partial", "old")


def _temp_name(out: Path, kind: str, pid: int) -> Path:
    return out.parent / f".{out.name}.{kind}-{pid}"


def _is_ours(folder: Path) -> bool:
    """True if ``folder`` is a real folder that pvdetect synth wrote (it carries the marker)."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("tool") == "pvdetect synth"


def _is_empty(folder: Path) -> bool:
    try:
        return folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())
    except OSError:
        return False


def check_target(out: Path, overwrite: bool) -> None:
    """Raise :class:`OutputError` unless ``out`` is absent, empty, or ours and ``overwrite``."""
    if not os.path.lexists(out) or _is_empty(out):
        return
    if not out.is_dir():
        raise OutputError(
            f"{out}: exists and is not a folder; pvdetect synth replaces only a dataset it wrote"
        )
    if not _is_ours(out):
        raise OutputError(
            f"{out}: folder not written by pvdetect synth (no {MARKER}); it is left untouched, "
            "choose a new or empty folder"
        )
    if not overwrite:
        raise OutputError(f"{out}: already holds a dataset; use --overwrite or a new folder")


def _process_start(pid: int) -> float | None:
    """Start time (seconds since the epoch) of process ``pid`` from /proc; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        ticks = float(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _owner_alive(pid: int, folder: Path) -> bool:
    """True if the process that made ``folder`` may still be running."""
    if pid == os.getpid():
        return False  # an earlier process with our pid: we have not made ours yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    start = _process_start(pid)
    if start is None:
        return True
    try:
        made = folder.lstat().st_mtime
    except OSError:
        return False
    return start <= made + 1.0  # a process younger than the folder has a reused pid


def remove_stale(out: Path) -> list[Path]:
    """Remove temporary folders of earlier killed runs into ``out``; returns those removed.

    A folder is removed only if its name is ``.OUT.partial-<pid>`` or ``.OUT.old-<pid>``, it
    carries the marker (or is empty), and its owner process is gone or the pid was reused.
    """
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.({'|'.join(_KINDS)})-(\d+)$")
    removed: list[Path] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for folder in entries:
        m = pattern.match(folder.name)
        if m is None or not (_is_ours(folder) or _is_empty(folder)):
            continue
        if _owner_alive(int(m.group(2)), folder):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def _replace(partial: Path, out: Path, overwrite: bool) -> None:
    """Rename the complete ``partial`` to ``out``, moving a replaceable ``out`` aside first."""
    check_target(out, overwrite)  # OUT may have changed while the dataset was written
    old = None
    if os.path.lexists(out):
        old = _temp_name(out, "old", os.getpid())
        os.rename(out, old)
    try:
        os.rename(partial, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dataset(out: Path, record: dict[str, Any], *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder for the dataset; rename it to ``out`` if the block succeeds.

    Args:
        out: the final folder.
        record: arguments to keep in the marker file (with the pvdetect version).
        overwrite: replace a dataset that pvdetect synth wrote earlier in ``out``.

    Raises:
        OutputError: ``out`` may not be replaced, or a folder cannot be written.
    """
    out = out.resolve() if out.is_symlink() else out
    check_target(out, overwrite)
    remove_stale(out)
    partial = _temp_name(out, "partial", os.getpid())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
    except OSError as exc:
        raise OutputError(
            f"{partial}: cannot create the dataset folder ({first_line(exc)})"
        ) from None
    try:
        write_json(partial / MARKER, {"tool": "pvdetect synth", "version": __version__, **record})
        yield partial
        try:
            _replace(partial, out, overwrite)
        except OSError as exc:
            raise OutputError(
                f"{out}: cannot move the finished dataset here ({first_line(exc)})"
            ) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
