"""Jobs on disk and the workers that run them.

Every job has its own folder ``JOBS/ID`` (``ID`` from :func:`secrets.token_urlsafe`) holding
``job.json``, its state, rewritten atomically on every change (progress at most every
:data:`SAVE_EVERY` seconds), and the outputs of :func:`~pvdetect.serve.runner.run_job`. A job
is ``queued``, ``running``, then ``done``, ``failed`` or ``cancelled``; its results are read
only from the ``manifest.json`` of a ``done`` job, which the runner writes last.

:class:`JobManager` keeps every job's state in memory, a queue of waiting jobs (at most
``queue``: :class:`QueueFull` past it) and ``workers`` threads, each with the bundle loaded
once. Cancelling a queued job takes it off the queue; a running job is asked to stop, and stops
at its next tile row (or imagery block). When the server starts, a job that a previous server
left queued or running is marked failed: "interrupted by a server restart".
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from pvdetect.errors import OutputError, PVDetectError
from pvdetect.io import first_line, write_json
from pvdetect.serve.models import FINAL_STATES, JobInfo, JobRequest, JobResult, Progress
from pvdetect.serve.runner import MANIFEST, PREDICTING, RunContext, run_job

__all__ = [
    "RESTART_MESSAGE",
    "STATE",
    "Cancelled",
    "JobManager",
    "JobStore",
    "NotCancellable",
    "QueueFull",
    "valid_id",
]

log = logging.getLogger("pvdetect.serve")

STATE = "job.json"
RESTART_MESSAGE = "interrupted by a server restart"
#: seconds between two writes of a running job's progress
SAVE_EVERY = 0.5
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def valid_id(job_id: str) -> bool:
    """Whether ``job_id`` looks like an id this server makes (checked before any disk access)."""
    return bool(_ID.match(job_id))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Cancelled(Exception):
    """Raised in a running job that was asked to stop; ``reason`` becomes its error."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "cancelled")
        self.reason = reason


class QueueFull(Exception):
    """No room in the queue."""


class NotCancellable(Exception):
    """The job has already finished."""


class JobStore:
    """The job folders under ``root`` and their ``job.json`` and ``manifest.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, job_id: str) -> Path:
        """The folder of a job (the id must be :func:`valid_id`)."""
        if not valid_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def create(self, request: JobRequest) -> JobInfo:
        """A new queued job with a fresh random id and its folder."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.root}: cannot create the jobs folder ({exc})") from None
        while True:
            job_id = secrets.token_urlsafe(12)
            try:
                self.folder(job_id).mkdir()
                break
            except FileExistsError:  # pragma: no cover - 96 random bits
                continue
            except OSError as exc:
                raise OutputError(f"{self.root}: cannot create a job folder ({exc})") from None
        info = JobInfo(
            id=job_id,
            status="queued",
            label=request.label,
            created=_now(),
            request=request.model_dump(mode="json"),
            progress=Progress(stage="queued"),
        )
        self.save(info)
        return info

    def save(self, info: JobInfo) -> None:
        """Write a job's state atomically (never its result: that is the manifest)."""
        write_json(self.folder(info.id) / STATE, info.model_dump(mode="json", exclude={"result"}))

    def load(self, job_id: str) -> JobInfo | None:
        """A job's state from disk, or None when missing or unreadable."""
        path = self.folder(job_id) / STATE
        try:
            return JobInfo.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError) as exc:
            if path.exists():
                log.warning("%s: not a readable job state (%s); ignored", path, first_line(exc))
            return None

    def load_all(self) -> list[JobInfo]:
        """Every readable job under ``root``."""
        if not self.root.is_dir():
            return []
        jobs = []
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and valid_id(folder.name):
                info = self.load(folder.name)
                if info is not None and info.id == folder.name:
                    jobs.append(info)
        return jobs

    def result(self, job_id: str) -> JobResult | None:
        """The manifest of a job, or None when it has none (or a broken one)."""
        path = self.folder(job_id) / MANIFEST
        try:
            return JobResult.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError):
            return None


class _Reporter:
    """The progress callback of one running job: records progress, stops a cancelled job."""

    def __init__(self, manager: JobManager, job_id: str, stop: threading.Event) -> None:
        self.manager = manager
        self.job_id = job_id
        self.stop = stop
        self.stage: str | None = None
        self.stage_start = time.monotonic()

    def check(self) -> None:
        """Raise :class:`Cancelled` when the job was asked to stop."""
        if self.stop.is_set():
            raise Cancelled(self.manager.stop_reason(self.job_id))

    def __call__(
        self,
        stage: str,
        done: int | None = None,
        total: int | None = None,
        unit: str | None = None,
        message: str | None = None,
    ) -> None:
        self.check()
        now = time.monotonic()
        changed = stage != self.stage
        if changed:
            self.stage, self.stage_start = stage, now
        eta = None
        if done and total and done < total:
            eta = (now - self.stage_start) / done * (total - done)
        elif done is not None and total and done >= total:
            eta = 0.0
        progress = Progress(
            stage=stage, done=done, total=total, unit=unit, eta_s=eta, message=message
        )
        self.manager.set_progress(self.job_id, progress, force=changed)
        delay = self.manager.row_delay
        if delay > 0 and stage == PREDICTING and done:
            self.stop.wait(delay)  # tests only: a slow job; wakes at once when cancelled
            self.check()


class JobManager:
    """Jobs in memory, their queue and the worker threads (see the module docstring).

    Args:
        store: The job folders.
        context_factory: Makes a worker's :class:`RunContext`; called once in each worker.
        workers: Worker threads.
        queue: Jobs that may wait.
        row_delay: Seconds slept after each tile row (tests only).
        runner: The job function (default :func:`~pvdetect.serve.runner.run_job`).
    """

    def __init__(
        self,
        store: JobStore,
        context_factory: Callable[[], RunContext],
        *,
        workers: int = 1,
        queue: int = 8,
        row_delay: float = 0.0,
        runner: Callable[..., JobResult] = run_job,
    ) -> None:
        self.store = store
        self.context_factory = context_factory
        self.workers = workers
        self.queue_cap = queue
        self.row_delay = row_delay
        self.runner = runner
        self._lock = threading.Condition()
        self._jobs: dict[str, JobInfo] = {}
        self._results: dict[str, JobResult] = {}
        self._queue: deque[str] = deque()
        self._stops: dict[str, threading.Event] = {}
        self._reasons: dict[str, str] = {}
        self._saved: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # ------------------------------------------------------------------ life cycle

    def start(self) -> list[str]:
        """Load the jobs on disk, fail those a previous server left unfinished, start workers.

        Returns:
            The ids of the jobs marked failed.
        """
        interrupted = []
        with self._lock:
            for info in self.store.load_all():
                if info.status not in FINAL_STATES:
                    info = info.model_copy(
                        update={
                            "status": "failed",
                            "error": RESTART_MESSAGE,
                            "finished": _now(),
                            "progress": None,
                        }
                    )
                    self.store.save(info)
                    interrupted.append(info.id)
                self._jobs[info.id] = info
            self._stopping = False
            for k in range(self.workers):
                t = threading.Thread(target=self._work, name=f"pv-job-{k}", daemon=True)
                self._threads.append(t)
                t.start()
        return interrupted

    def stop(self, timeout: float = 10.0) -> None:
        """Ask running jobs to stop ("the server stopped"), wait for the workers."""
        with self._lock:
            self._stopping = True
            for job_id, event in self._stops.items():
                self._reasons[job_id] = "interrupted: the server stopped"
                event.set()
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    # ------------------------------------------------------------------ API

    def submit(self, request: JobRequest) -> JobInfo:
        """Queue a job.

        Raises:
            QueueFull: ``queue`` jobs are already waiting.
        """
        with self._lock:
            if len(self._queue) >= self.queue_cap:
                raise QueueFull(
                    f"the queue is full ({len(self._queue)} job(s) waiting, at most "
                    f"{self.queue_cap}); try again when a job has finished"
                )
            info = self.store.create(request)
            self._jobs[info.id] = info
            self._queue.append(info.id)
            self._lock.notify()
            return info

    def get(self, job_id: str) -> JobInfo | None:
        """A job's state, with its result when it is done."""
        with self._lock:
            info = self._jobs.get(job_id)
        if info is None:
            return None
        if info.status == "done":
            result = self._result(job_id)
            if result is None:  # a manifest removed or broken by hand: never a half result
                return info.model_copy(
                    update={"status": "failed", "error": "the job's manifest is missing"}
                )
            return info.model_copy(update={"result": result})
        return info

    def list(self) -> list[JobInfo]:
        """Every job, the newest first."""
        with self._lock:
            ids = list(self._jobs)
        jobs = [j for j in (self.get(i) for i in ids) if j is not None]
        return sorted(jobs, key=lambda j: (j.created, j.id), reverse=True)

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued job, or ask a running one to stop at its next tile row.

        Raises:
            KeyError: No such job. NotCancellable: It has finished.
        """
        with self._lock:
            info = self._jobs[job_id]
            if info.status in FINAL_STATES:
                raise NotCancellable(f"job {job_id} is {info.status}; nothing to cancel")
            if info.status == "queued":
                with contextlib.suppress(ValueError):
                    self._queue.remove(job_id)
                info = info.model_copy(
                    update={"status": "cancelled", "finished": _now(), "progress": None}
                )
                self._jobs[job_id] = info
                self.store.save(info)
                return info
            self._reasons.setdefault(job_id, "cancelled")
            self._stops[job_id].set()
            progress = (info.progress or Progress(stage="running")).model_copy(
                update={"message": "cancelling: the job stops at its next tile row"}
            )
            info = info.model_copy(update={"progress": progress})
            self._jobs[job_id] = info
            return info

    # ------------------------------------------------------------------ for the reporter

    def stop_reason(self, job_id: str) -> str:
        """Why a job was asked to stop."""
        with self._lock:
            return self._reasons.get(job_id, "cancelled")

    def set_progress(self, job_id: str, progress: Progress, force: bool = False) -> None:
        """Record a running job's progress; written to disk every :data:`SAVE_EVERY` s."""
        with self._lock:
            info = self._jobs[job_id]
            if info.progress is not None and info.progress.message and progress.message is None:
                if info.progress.stage == progress.stage:
                    progress = progress.model_copy(update={"message": info.progress.message})
            info = info.model_copy(update={"progress": progress})
            self._jobs[job_id] = info
            now = time.monotonic()
            if force or now - self._saved.get(job_id, 0.0) >= SAVE_EVERY:
                self._saved[job_id] = now
                self.store.save(info)

    # ------------------------------------------------------------------ workers

    def _result(self, job_id: str) -> JobResult | None:
        if job_id not in self._results:
            result = self.store.result(job_id)
            if result is None:
                return None
            self._results[job_id] = result
        return self._results[job_id]

    def _next(self) -> str | None:
        with self._lock:
            while not self._queue and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return None
            job_id = self._queue.popleft()
            info = self._jobs[job_id].model_copy(
                update={
                    "status": "running",
                    "started": _now(),
                    "progress": Progress(stage="starting"),
                }
            )
            self._jobs[job_id] = info
            self._stops[job_id] = threading.Event()
            self.store.save(info)
            return job_id

    def _work(self) -> None:
        context: RunContext | None = None
        load_error: str | None = None
        try:
            context = self.context_factory()
        except PVDetectError as exc:
            load_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported on every job of this worker
            log.exception("cannot load the model")
            load_error = f"cannot load the model: {first_line(exc)}"
        while True:
            job_id = self._next()
            if job_id is None:
                return
            self._run(job_id, context, load_error)

    def _run(self, job_id: str, context: RunContext | None, load_error: str | None) -> None:
        with self._lock:
            info = self._jobs[job_id]
            stop = self._stops[job_id]
        status, error = "failed", load_error
        if context is not None:
            reporter = _Reporter(self, job_id, stop)
            try:
                request = JobRequest.model_validate(info.request)
                result = self.runner(request, self.store.folder(job_id), reporter, context)
                with self._lock:
                    self._results[job_id] = result
                status, error = "done", None
            except Cancelled as exc:
                reason = exc.reason or "cancelled"
                status, error = ("cancelled", None) if reason == "cancelled" else ("failed", reason)
            except PVDetectError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - the server keeps serving
                log.exception("job %s failed", job_id)
                error = f"internal error: {type(exc).__name__}: {first_line(exc)}"
        with self._lock:
            info = self._jobs[job_id].model_copy(
                update={"status": status, "error": error, "finished": _now(), "progress": None}
            )
            self._jobs[job_id] = info
            self._stops.pop(job_id, None)
            self._reasons.pop(job_id, None)
            self._saved.pop(job_id, None)
            try:
                self.store.save(info)
            except PVDetectError as exc:  # a full disk: the state in memory is still right
                log.error("job %s: cannot save its state: %s", job_id, exc)
