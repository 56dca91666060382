"""What the commands tell the user: log messages, progress bars, result lines and log files.

One set-up for every command (:func:`setup`, called by :mod:`pvdetect.cli`):

- messages of the ``pvdetect`` loggers go to stderr: INFO and above by default, DEBUG with
  ``-v``, only errors with ``-q``; warnings start with ``warning:``;
- progress bars (:func:`progress`, tqdm with an ETA) are drawn only when stderr is a terminal
  and ``-q`` is not given; elsewhere the commands log one plain line per scene or epoch instead;
- result lines (:func:`echo`) go to stdout unless ``-q``;
- once a command knows its output folder it appends a log file there (:func:`attach_file`):
  every message and result line of the run with time stamps, including those logged before the
  folder existed (they are kept in memory until then), whatever ``-q`` says.

Lightning's own INFO messages (device banners, "Tip" adverts) are silenced unless ``-v``
(:func:`quiet_lightning`), except the one line per process joining a distributed run.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LOGGER",
    "attach_file",
    "bars_enabled",
    "detach_file",
    "echo",
    "is_verbose",
    "progress",
    "quiet_lightning",
    "setup",
    "teardown",
]

#: the root logger of the package; modules log to ``pvdetect.<module>``
LOGGER = "pvdetect"
#: format of the log files
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
#: records kept in memory until a log file is attached (the oldest are dropped beyond)
BUFFER_LIMIT = 10_000
#: ``extra`` of a record that goes to the log file only (e.g. a line a progress bar shows)
FILE_ONLY = {"console": False}

log = logging.getLogger(LOGGER)


class _Console(logging.Handler):
    """stderr, through tqdm so that messages do not break a progress bar being drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "console", True):
            return
        try:
            msg = self.format(record)
            if record.levelno >= logging.WARNING and record.levelno < logging.ERROR:
                msg = f"warning: {msg}"
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _Buffer(logging.Handler):
    """Keeps records until a log file is attached (the folder may not exist yet)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if len(self.records) > BUFFER_LIMIT:
            del self.records[: len(self.records) - BUFFER_LIMIT]


@dataclass
class _State:
    verbose: int = 0
    quiet: bool = False
    configured: bool = False
    handlers: list[logging.Handler] = field(default_factory=list)
    buffer: _Buffer | None = None
    file: logging.FileHandler | None = None


_state = _State()


def setup(
    verbose: int = 0,
    quiet: bool = False,
    command: str | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Configure console output for a command (replaces an earlier set-up).

    Args:
        verbose: ``-v`` count: 1 or more adds DEBUG messages and Lightning's own.
        quiet: ``-q``: only errors on the console, no bars, no result lines.
        command: the subcommand, named in the first line of the log file.
        argv: the command line, for the log file.
    """
    teardown()
    _state.verbose, _state.quiet, _state.configured = int(verbose or 0), bool(quiet), True
    console = _Console()
    console.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    _state.buffer = _Buffer()
    _state.handlers = [console, _state.buffer]
    for h in _state.handlers:
        log.addHandler(h)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    quiet_lightning(bool(verbose))
    if command:
        from pvdetect import __version__

        args = shlex.join(argv) if argv is not None else command
        log.info("pvdetect %s: pvdetect %s", __version__, args, extra=FILE_ONLY)


def teardown() -> None:
    """Undo :func:`setup`: close the log file, remove the handlers (the end of a command)."""
    detach_file()
    for h in _state.handlers:
        log.removeHandler(h)
    _state.handlers, _state.buffer, _state.configured = [], None, False
    _state.verbose, _state.quiet = 0, False
    log.propagate = True
    log.setLevel(logging.NOTSET)


def attach_file(path: str | Path) -> Path | None:
    """Append this run's messages to ``path`` (with time stamps); None when it cannot.

    Messages logged since :func:`setup` are written first. Without a set-up (pvdetect used as
    a library) nothing is attached.
    """
    if not _state.configured:
        return None
    p = Path(path)
    detach_file()
    try:
        handler = logging.FileHandler(p, mode="a", encoding="utf-8")
    except OSError as exc:
        log.warning("%s: cannot write the log file (%s)", p, exc.strerror or exc)
        return None
    handler.setLevel(logging.DEBUG if _state.verbose else logging.INFO)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    if _state.buffer is not None:
        for record in _state.buffer.records:
            if record.levelno >= handler.level:
                handler.handle(record)
        log.removeHandler(_state.buffer)
        _state.handlers.remove(_state.buffer)
        _state.buffer = None
    log.addHandler(handler)
    _state.file = handler
    return p


def detach_file() -> None:
    """Close the log file of the current run (if any)."""
    if _state.file is not None:
        log.removeHandler(_state.file)
        _state.file.close()
        _state.file = None


def is_verbose() -> bool:
    """True with ``-v``."""
    return _state.verbose > 0


def bars_enabled() -> bool:
    """True when progress bars are drawn: a command runs, stderr is a terminal, no ``-q``."""
    if not _state.configured or _state.quiet:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    leave: bool = False,
    initial: float = 0,
) -> Any:
    """A tqdm progress bar (with ETA) on stderr, disabled unless :func:`bars_enabled`."""
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        initial=initial,
        file=sys.stderr,
        disable=not bars_enabled(),
        dynamic_ncols=True,
    )


def echo(message: str) -> None:
    """A result line: stdout unless ``-q``, and the log file."""
    if not _state.quiet:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stdout)
    log.info(message, extra=FILE_ONLY)


def quiet_lightning(verbose: bool = False) -> None:
    """Lightning's INFO messages (device banners, adverts) only with ``-v``."""
    level = logging.INFO if verbose else logging.WARNING
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(level)
    # one line per process joining a distributed run ("MEMBER: 2/2") stays: it is not noise
    for pkg in ("lightning.fabric", "lightning_fabric"):
        logging.getLogger(f"{pkg}.utilities.distributed").setLevel(logging.INFO)
