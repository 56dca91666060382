"""Tests of pvdetect.serve.jobs: states on disk, restart recovery, results only from manifests."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pvdetect.errors import DataError
from pvdetect.serve.jobs import (
    RESTART_MESSAGE,
    JobManager,
    JobStore,
    NotCancellable,
    QueueFull,
    valid_id,
)
from pvdetect.serve.models import JobRequest, JobResult

REQUEST = JobRequest.model_validate({"area": {"type": "point", "lon": 15, "lat": 47, "size_km": 1}})


def _result(job_dir: Path) -> JobResult:
    return JobResult(
        id=job_dir.name,
        finished="now",
        seconds=1.0,
        plants=0,
        total_ha=0.0,
        area={},
        imagery={},
        model={},
        files=[],
        layers={},
        plants_geojson="p.geojson",
        report="report.html",
    )


def _manager(store: JobStore, runner, **kw) -> JobManager:
    return JobManager(store, lambda: object(), runner=runner, **kw)  # type: ignore[arg-type]


def _wait(manager: JobManager, job_id: str, states=("done", "failed", "cancelled")):
    for _ in range(500):
        info = manager.get(job_id)
        if info.status in states:
            return info
        threading.Event().wait(0.01)
    raise AssertionError(manager.get(job_id))


def test_ids_are_random_and_checked(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    ids = {store.create(REQUEST).id for _ in range(20)}
    assert len(ids) == 20 and all(valid_id(i) and len(i) == 16 for i in ids)
    for bad in ("..", "a/b", "short", "x" * 65, "abc%2Fdefghijklmnop"):
        assert not valid_id(bad)
        with pytest.raises(ValueError):
            store.folder(bad)


def test_a_restart_fails_unfinished_jobs_and_keeps_finished_ones(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    running = store.create(REQUEST)
    store.save(running.model_copy(update={"status": "running"}))
    queued = store.create(REQUEST)
    done = store.create(REQUEST)
    store.save(done.model_copy(update={"status": "done"}))
    (tmp_path / done.id / "manifest.json").write_text(_result(tmp_path / done.id).model_dump_json())
    half = store.create(REQUEST)  # says done, but its manifest never came: not a result
    store.save(half.model_copy(update={"status": "done"}))
    (tmp_path / "AAAAAAAAAAAAAAAAAAAA").mkdir()
    (tmp_path / "AAAAAAAAAAAAAAAAAAAA" / "job.json").write_text("{broken")

    manager = _manager(store, runner=None)
    assert sorted(manager.start()) == sorted([running.id, queued.id])
    try:
        for job in (running, queued):
            info = manager.get(job.id)
            assert info.status == "failed" and info.error == RESTART_MESSAGE
            assert info.result is None
            on_disk = json.loads((tmp_path / job.id / "job.json").read_text())
            assert on_disk["status"] == "failed" and on_disk["error"] == RESTART_MESSAGE
        assert manager.get(done.id).result.id == done.id
        assert manager.get(half.id).status == "failed"
        assert manager.get(half.id).result is None
        assert {j.id for j in manager.list()} == {running.id, queued.id, done.id, half.id}
    finally:
        manager.stop()


def test_worker_outcomes_are_recorded(tmp_path: Path) -> None:
    gate = threading.Event()

    def runner(request, job_dir, progress, context):
        if request.label == "bad":
            raise DataError(f"{job_dir}: nothing there")
        if request.label == "boom":
            raise RuntimeError("a bug")
        if request.label == "slow":
            progress("predicting", 1, 4, "tiles")
            gate.wait(10)
            progress("predicting", 2, 4, "tiles")
        (job_dir / "manifest.json").write_text(_result(job_dir).model_dump_json())
        return _result(job_dir)

    manager = _manager(JobStore(tmp_path), runner, queue=1)
    manager.start()
    try:
        ok = manager.submit(REQUEST)
        assert _wait(manager, ok.id).status == "done"
        bad = manager.submit(REQUEST.model_copy(update={"label": "bad"}))
        info = _wait(manager, bad.id)
        assert info.status == "failed" and info.error.endswith(": nothing there")
        boom = manager.submit(REQUEST.model_copy(update={"label": "boom"}))
        info = _wait(manager, boom.id)
        assert info.status == "failed" and info.error == "internal error: RuntimeError: a bug"
        slow = manager.submit(REQUEST.model_copy(update={"label": "slow"}))
        info = _wait(manager, slow.id, ("running",))
        waiting = manager.submit(REQUEST)
        with pytest.raises(QueueFull):
            manager.submit(REQUEST)
        assert manager.cancel(waiting.id).status == "cancelled"
        manager.cancel(slow.id)
        gate.set()
        info = _wait(manager, slow.id)
        assert info.status == "cancelled" and info.result is None
        with pytest.raises(NotCancellable):
            manager.cancel(slow.id)
    finally:
        gate.set()
        manager.stop()


def test_a_model_that_does_not_load_fails_each_job(tmp_path: Path) -> None:
    def factory():
        raise DataError("bundle: broken")

    manager = JobManager(JobStore(tmp_path), factory)
    manager.start()
    try:
        info = _wait(manager, manager.submit(REQUEST).id)
        assert info.status == "failed" and info.error == "bundle: broken"
    finally:
        manager.stop()


def test_stopping_the_server_fails_the_running_job(tmp_path: Path) -> None:
    started = threading.Event()

    def runner(request, job_dir, progress, context):
        started.set()
        for _ in range(1000):
            progress("predicting", 1, 2, "tiles")
            threading.Event().wait(0.01)
        raise AssertionError("never stopped")

    manager = _manager(JobStore(tmp_path), runner)
    manager.start()
    job = manager.submit(REQUEST)
    assert started.wait(10)
    manager.stop()
    info = manager.get(job.id)
    assert info.status == "failed" and info.error == "interrupted: the server stopped"
