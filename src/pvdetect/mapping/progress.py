"""Progress of a map on stderr: tiles done of all, throughput, time left."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_eta"]


def format_eta(seconds: float) -> str:
    """``H:MM:SS``."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Prints ``tiles D/N (P %), X MP/s, ETA H:MM:SS`` at most every ``every`` seconds.

    Args:
        total: tiles of the map.
        done: tiles finished before this run.
        stream: where to print (stderr).
        every: seconds between lines (the last tile always prints).
    """

    def __init__(
        self, total: int, done: int = 0, stream: TextIO | None = None, every: float = 1.0
    ) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.start = time.perf_counter()
        self.last = -float("inf")
        self.megapixels = 0.0

    def update(self, megapixels: float) -> None:
        """One more tile of ``megapixels`` finished."""
        self.done += 1
        self.megapixels += megapixels
        now = time.perf_counter()
        if now - self.last < self.every and self.done < self.total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        here = self.done - self.start_done
        left = (self.total - self.done) * elapsed / here if here else float("nan")
        eta = format_eta(left) if left == left else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        print(
            f"pvdetect map: tiles {self.done}/{self.total} ({pct:.0f} %), "
            f"{self.megapixels / elapsed:.2f} MP/s, ETA {eta}",
            file=self.stream,
            flush=True,
        )
