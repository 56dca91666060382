"""Small helpers shared by the benchmark scripts: timing, peak RSS, machine facts, results files.

Import from a benchmark script with ``sys.path`` holding the ``benchmarks`` folder (a script run
as ``python benchmarks/x.py`` has it) and ``from common import ...``. Nothing here imports torch
at module level, so memory measurements of subprocesses are not inflated by this module.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_OUT = REPO_ROOT / "bench_out"
RESULTS_MD = REPO_ROOT / "benchmarks" / "RESULTS.md"


# --------------------------------------------------------------------------------------- timing


@dataclass
class Timer:
    """Wall-clock stopwatch (``time.perf_counter``); use as a context manager.

    Attributes:
        seconds: Elapsed time of the last completed ``with`` block.
    """

    seconds: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


@contextlib.contextmanager
def timed(label: str, sink: dict[str, float] | None = None, verbose: bool = True) -> Iterator[None]:
    """Time a block; store the seconds in ``sink[label]`` and optionally print them."""
    start = time.perf_counter()
    try:
        yield
    finally:
        secs = time.perf_counter() - start
        if sink is not None:
            sink[label] = secs
        if verbose:
            print(f"  {label}: {secs:.2f} s", flush=True)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, min, max and standard deviation of a non-empty sequence."""
    if not values:
        raise ValueError("summarize() needs at least one value")
    vals = sorted(float(v) for v in values)
    n = len(vals)
    mean = sum(vals) / n
    mid = n // 2
    median = vals[mid] if n % 2 else 0.5 * (vals[mid - 1] + vals[mid])
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "median": median, "min": vals[0], "max": vals[-1], "std": std, "n": n}


# ------------------------------------------------------------------------------ subprocess / RSS


@dataclass
class ProcessResult:
    """Outcome of :func:`run_measured`.

    Attributes:
        returncode: Exit status (negative: killed by that signal).
        seconds: Wall-clock time from start to exit.
        peak_rss_mb: Largest resident set size of the process or any of its waited-for
            descendants, in MiB (from ``wait4``'s ``ru_maxrss``).
        stdout: Captured standard output (empty when not captured).
        stderr: Captured standard error (empty when not captured).
    """

    returncode: int
    seconds: float
    peak_rss_mb: float
    stdout: str = ""
    stderr: str = ""


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    capture: bool = True,
    timeout: float | None = None,
) -> ProcessResult:
    """Run a command to completion and measure its wall time and peak RSS.

    Output is captured through temporary files (no pipe dead-locks); with ``capture=False`` it
    goes to this process's stdout/stderr. On timeout the process is killed and the result has
    ``returncode`` -9.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            env=full_env,
            cwd=cwd,
            stdout=out if capture else None,
            stderr=err if capture else None,
        )
        deadline = None if timeout is None else start + timeout
        try:
            status, rusage = _wait4(proc.pid, deadline)
        except BaseException:  # Ctrl-C and the like: leave no orphan behind
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - start
        proc.returncode = _exit_code(status)
        stdout = stderr = ""
        if capture:
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    kb = rusage.ru_maxrss if rusage is not None else 0
    return ProcessResult(proc.returncode, seconds, kb / 1024.0, stdout, stderr)


def _wait4(pid: int, deadline: float | None) -> tuple[int, Any]:
    if deadline is None:
        _, status, rusage = os.wait4(pid, 0)
        return status, rusage
    while True:
        wpid, status, rusage = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            return status, rusage
        if time.perf_counter() > deadline:
            os.kill(pid, 9)
            _, status, rusage = os.wait4(pid, 0)
            return status, rusage
        time.sleep(0.05)


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# --------------------------------------------------------------------------------- machine facts


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_info(torch_facts: bool = True) -> dict[str, Any]:
    """Date, host facts and (when ``torch_facts``) torch version, threads and GPU name."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if torch_facts:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
        else:
            info["gpu"] = None
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    """One Markdown line describing the machine of ``info`` (from :func:`machine_info`)."""
    parts = [f"CPU {info.get('cpu', '?')} ({info.get('cpu_count', '?')} logical cores)"]
    if info.get("gpu"):
        parts.append(f"GPU {info['gpu']}")
    if info.get("torch"):
        parts.append(f"torch {info['torch']}")
    if info.get("torch_threads"):
        parts.append(f"{info['torch_threads']} torch threads")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------- result files


def write_json(name_or_path: str | os.PathLike, data: Any, out_dir: Path = BENCH_OUT) -> Path:
    """Write ``data`` as indented JSON, atomically.

    A bare name (``"train_throughput"``) goes to ``out_dir/<name>.json``; anything with a
    folder or a ``.json`` suffix is used as the path.
    """
    p = Path(name_or_path)
    if p.parent == Path(".") and p.suffix != ".json":
        p = out_dir / f"{p.name}.json"
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write_text(p, text)
    return p


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def update_results_section(
    heading: str, body: str, path: Path = RESULTS_MD, level: int = 2
) -> Path:
    """Insert or replace the section ``heading`` of a Markdown results file.

    The section runs from its heading line to the next heading of the same or a higher level
    (or the end of the file). An existing section with the same title (any level) is replaced in
    place, so reruns do not duplicate it; a new one is appended. The file is created with a
    ``# Benchmark results`` title when missing.
    """
    head_line = f"{'#' * level} {heading.strip()}"
    section = [head_line, "", *body.strip("\n").splitlines(), ""]
    lines = (
        path.read_text(encoding="utf-8").splitlines()
        if path.exists()
        else ["# Benchmark results", ""]
    )
    start = end = None
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if start is None:
            if m and m.group(2).strip() == heading.strip():
                start, sec_level = i, len(m.group(1))
        elif m and len(m.group(1)) <= sec_level:
            end = i
            break
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        new = [*lines, "", *section] if lines else section
    else:
        end = len(lines) if end is None else end
        new = [*lines[:start], *section, *lines[end:]]
    _atomic_write_text(path, "\n".join(new).rstrip("\n") + "\n")
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(str(h) for h in header) + " |"]
    out.append("|" + "|".join(" --- " for _ in header) + "|")
    out.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return "\n".join(out)


def python_for_bench() -> str:
    """The interpreter running this script (benchmarks spawn their workers with it)."""
    return sys.executable
