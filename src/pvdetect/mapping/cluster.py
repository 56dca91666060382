"""The Dask cluster a map runs on: a local one, or an existing scheduler.

``--workers N`` starts a :class:`distributed.LocalCluster` of N single-threaded worker
processes on 127.0.0.1 (each task runs torch with the machine's cores divided among the
workers, so N workers do not oversubscribe them); ``--cluster tcp://HOST:PORT`` attaches to a
running scheduler (``dask scheduler`` with ``dask worker`` processes, dask-jobqueue on
SLURM/PBS, dask-kubernetes, dask-cuda ...). The Dask dashboard needs bokeh.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

from pvdetect.errors import ConfigError
from pvdetect.io import first_line

__all__ = ["ClusterInfo", "dashboard_available", "open_client"]


def dashboard_available() -> bool:
    """Whether the Dask dashboard can run here (bokeh installed)."""
    return importlib.util.find_spec("bokeh") is not None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class ClusterInfo:
    """How the map's tasks run."""

    kind: str  # "local" or "scheduler"
    address: str
    workers: int
    dashboard: str | None
    threads: int | None = None  # torch threads per worker (local clusters)
    workers_per_host: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the user."""
        where = "local cluster" if self.kind == "local" else f"scheduler {self.address}"
        dash = f"dashboard {self.dashboard}" if self.dashboard else (
            "dashboard not available" + ("" if dashboard_available() else " (install bokeh)")
        )  # fmt: skip
        return f"{where}, {self.workers} worker(s); {dash}"


def _per_host(client: object) -> dict[str, int]:
    workers = client.scheduler_info().get("workers", {})  # type: ignore[attr-defined]
    hosts: dict[str, int] = {}
    for addr in workers:
        host = urlparse(addr).hostname or ""
        hosts[host] = hosts.get(host, 0) + 1
    return hosts


@contextlib.contextmanager
def open_client(
    workers: int | None = None, address: str | None = None, threads: int | None = None
) -> Iterator[tuple[object, ClusterInfo]]:
    """A connected :class:`distributed.Client` and what it runs on; closed on exit.

    ``threads``: torch threads per local worker (default: the cores divided among them).

    Raises:
        ConfigError: both or a bad number of workers, or a scheduler that cannot be reached.
    """
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if address is not None and workers is not None:
        raise ConfigError("--workers and --cluster: give one of them")
    if address is not None:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"--cluster {address}: cannot connect ({first_line(exc)})") from None
        with client:
            hosts = _per_host(client)
            has_dash = "dashboard" in _services(client) and client.run_on_scheduler(
                dashboard_available
            )
            dash = client.dashboard_link if has_dash else None
            yield client, ClusterInfo("scheduler", address, sum(hosts.values()), dash, None, hosts)
        return
    n = 1 if workers is None else int(workers)
    if n < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    threads = threads or max(1, _cores() // n)
    # the scheduler's HTTP server (health, metrics; the dashboard with bokeh) on a free port
    dashboard = dashboard_available()
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
            worker_dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        dash = client.dashboard_link if dashboard else None
        yield client, ClusterInfo("local", cluster.scheduler_address, n, dash, threads)


def _services(client: object) -> dict:
    return client.scheduler_info().get("services", {})  # type: ignore[attr-defined]
