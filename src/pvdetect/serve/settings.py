"""What ``pvdetect serve`` was started with: one frozen object shared by the app and the jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pvdetect.serve.sources import Source

#: default largest side of a job's area in km
DEFAULT_MAX_KM = 50.0
#: default largest request body in bytes
DEFAULT_MAX_BODY = 1_000_000


@dataclass(frozen=True)
class ServeSettings:
    """Options of the server.

    Attributes:
        bundle: The model bundle (folder or ``.pvb``).
        source: Where imagery comes from.
        jobs_dir: Folder holding one sub-folder per job.
        host: Address the server binds (only used for the host check and the page).
        port: Port.
        token: Bearer token every API call must carry (None: no token).
        max_km: Largest west-east or north-south side of an area, in km.
        workers: Jobs that run at the same time.
        queue: Jobs that may wait for a worker.
        device: Device of the model (auto, cpu, cuda, cuda:N).
        batch_size: Tiles per forward pass (None: the device's default).
        memory_mb: Memory budget of a catalog composite.
        max_items: Items of a catalog used at most per job.
        max_body: Largest request body in bytes.
        row_delay: Seconds slept after each tile row (tests only: makes jobs slow).
    """

    bundle: Path
    source: Source
    jobs_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_km: float = DEFAULT_MAX_KM
    workers: int = 1
    queue: int = 8
    device: str = "auto"
    batch_size: int | None = None
    memory_mb: float = 1024.0
    max_items: int = 60
    max_body: int = DEFAULT_MAX_BODY
    row_delay: float = 0.0
