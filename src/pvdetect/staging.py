"""Output folders and temporary files that survive no crash: staged, marked, cleaned up.

A dataset folder (``pvdetect synth``, ``pvdetect upscale``) is written into
``.OUT.partial-<pid>`` beside ``OUT`` and renamed to ``OUT`` only when complete
(:func:`staged_folder`), so an interrupted run never leaves half a dataset under the final
name. The marker file :data:`MARKER` in the folder says which pvdetect command wrote it
(version, arguments); an existing ``OUT`` is replaced only if that command's marker is there
(and ``overwrite`` is given) or it is empty. Anything else is refused with a one-line
:class:`~pvdetect.errors.OutputError` and left untouched.

Temporary files carry their owner's pid in their names (``.NAME.partial-<pid>``,
``.NAME.old-<pid>``, the ``.STEM.p<pid>.XXXX.part.SUFFIX`` files of
:func:`pvdetect.io.atomic_output`, the ``.STEM.work-<pid>-XXXX`` folders of ``predict``); a
later run into the same folder removes those whose owner process is gone, or whose pid now
belongs to a younger process (:func:`remove_stale`, :func:`remove_stale_in`).
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

__all__ = [
    "MARKER",
    "check_apart",
    "check_target",
    "owner_alive",
    "remove_stale",
    "remove_stale_in",
    "staged_folder",
]

#: file in a staged folder naming the command that wrote it
MARKER = ".pvdetect.json"
#: kinds of temporary folders beside OUT: the dataset being written, the one being replaced
_KINDS = ("partial", "old")


def _temp_name(out: Path, kind: str, pid: int) -> Path:
    return out.parent / f".{out.name}.{kind}-{pid}"


def _is_ours(folder: Path, tool: str | None = None) -> bool:
    """True if ``folder`` is a real folder that ``tool`` (any pvdetect command if None) wrote."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or not str(record.get("tool", "")).startswith("pvdetect"):
        return False
    return tool is None or record.get("tool") == tool


def _is_empty(folder: Path) -> bool:
    try:
        return folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())
    except OSError:
        return False


def check_target(out: Path, overwrite: bool, tool: str = "pvdetect synth") -> None:
    """Raise :class:`OutputError` unless ``out`` is absent, empty, or ``tool``'s and
    ``overwrite``."""
    if not os.path.lexists(out) or _is_empty(out):
        return
    if not out.is_dir():
        raise OutputError(
            f"{out}: exists and is not a folder; {tool} replaces only a dataset it wrote"
        )
    if not _is_ours(out, tool):
        raise OutputError(
            f"{out}: folder not written by {tool} (no {MARKER}); it is left untouched, "
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


def owner_alive(pid: int, folder: Path) -> bool:
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
        if owner_alive(int(m.group(2)), folder):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def _replace(partial: Path, out: Path, overwrite: bool, tool: str) -> None:
    """Rename the complete ``partial`` to ``out``, moving a replaceable ``out`` aside first."""
    check_target(out, overwrite, tool)  # OUT may have changed while the dataset was written
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
def staged_folder(
    out: Path,
    record: dict[str, Any],
    *,
    overwrite: bool,
    tool: str = "pvdetect synth",
    inputs: tuple[Path, ...] = (),
) -> Iterator[Path]:
    """Yield a temporary folder for a dataset; rename it to ``out`` if the block succeeds.

    Args:
        out: the final folder.
        record: arguments to keep in the marker file (with the pvdetect version).
        overwrite: replace a dataset that ``tool`` wrote earlier in ``out``.
        tool: the command writing it, recorded in (and required of) the marker.
        inputs: folders the command reads; ``out`` may be none of them, inside one, or hold
            one (replacing it would delete the input).

    Raises:
        OutputError: ``out`` may not be replaced, or a folder cannot be written.
    """
    out = out.resolve() if out.is_symlink() else out
    check_apart(out, inputs)
    check_target(out, overwrite, tool)
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
        write_json(partial / MARKER, {"tool": tool, "version": __version__, **record})
        yield partial
        try:
            _replace(partial, out, overwrite, tool)
        except OSError as exc:
            raise OutputError(
                f"{out}: cannot move the finished dataset here ({first_line(exc)})"
            ) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def check_apart(out: Path, inputs: tuple[Path, ...]) -> None:
    """Refuse an ``out`` that is an input, lies inside one, or contains one."""
    target = out.resolve()
    for item in inputs:
        src = Path(item).resolve()
        if target == src or src in target.parents or target in src.parents:
            raise OutputError(
                f"{out}: the output must not be the input {item}, lie inside it or contain it"
            )


#: names of temporary files and folders, with the owner's pid in group "pid"
_TEMP_PATTERNS = (
    re.compile(r"^\..+\.(partial|old)-(?P<pid>\d+)$"),
    re.compile(r"^\..+\.p(?P<pid>\d+)\.[^.]+\.part(\.[^.]+)?$"),
    re.compile(r"^\..+\.work-(?P<pid>\d+)-[^/]+$"),
)


def remove_stale_in(folder: Path) -> list[Path]:
    """Remove the temporary files and folders of earlier killed runs in ``folder``.

    Only names made by pvdetect (:data:`_TEMP_PATTERNS`, with the owner's pid) whose owner
    process is gone are removed; staged dataset folders additionally need a pvdetect marker
    or to be empty. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = next((m for p in _TEMP_PATTERNS if (m := p.match(entry.name))), None)
        if match is None or entry.is_symlink():
            continue
        staged = match.re is _TEMP_PATTERNS[0]
        if staged and not (_is_ours(entry) or _is_empty(entry)):
            continue
        if owner_alive(int(match.group("pid")), entry):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed
