"""The progress hook of predict (``PredictOptions.progress``, called by ``run_tiles``) and the
job runner's progress and cancellation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvdetect.inference.predict import PredictOptions, predict_scene
from pvdetect.model.bundle import load_bundle
from pvdetect.serve.jobs import Cancelled
from pvdetect.serve.models import JobRequest
from pvdetect.serve.runner import PREDICTING, READING, SEARCHING, WRITING, RunContext, run_job
from pvdetect.serve.sources import ScenesSource

from .helpers import scene_array, scene_lonlat, write_scene


@pytest.fixture(scope="module")
def bundle(nir_bundle: Path):
    return load_bundle(nir_bundle)


def test_progress_is_called_after_each_tile_row(bundle, tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", scene_array(size=120))  # 3 x 3 tiles of 64
    calls: list[tuple[int, int]] = []
    opts = PredictOptions(overlay=False, progress=lambda d, t: calls.append((d, t)))
    result = predict_scene(bundle, scene, tmp_path / "out", opts)
    assert result.tiles == 9
    assert calls == [(3, 9), (6, 9), (9, 9)]


def test_an_exception_from_progress_stops_and_leaves_nothing(bundle, tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", scene_array(size=120))
    calls: list[int] = []

    def stop(done: int, total: int) -> None:
        calls.append(done)
        raise Cancelled()

    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        predict_scene(bundle, scene, out, PredictOptions(progress=stop))
    assert calls == [3]  # after the first row, not later
    assert list(out.iterdir()) == []


def _context(bundle, folder: Path) -> RunContext:
    return RunContext(
        bundle=bundle, bundle_name="nir", source=ScenesSource(folder), options=PredictOptions()
    )


def test_run_job_reports_its_stages_in_order(bundle, scenes_dir: Path, tmp_path: Path) -> None:
    lon, lat = scene_lonlat(60, 60)
    request = JobRequest.model_validate(
        {"area": {"type": "point", "lon": lon, "lat": lat, "width_km": 1.2, "height_km": 0.6}}
    )
    seen: list[tuple] = []

    def progress(stage, done=None, total=None, unit=None, message=None) -> None:
        seen.append((stage, done, total, unit))

    result = run_job(request, tmp_path / "job", progress, _context(bundle, scenes_dir))
    stages = [s[0] for s in seen]
    first = {stage: stages.index(stage) for stage in (SEARCHING, READING, PREDICTING, WRITING)}
    assert first[SEARCHING] < first[READING] < first[PREDICTING] < first[WRITING]
    assert (PREDICTING, 0, 3, "tiles") in seen and (PREDICTING, 3, 3, "tiles") in seen
    assert (READING, 1, 1, "blocks") in seen
    assert result.area["width_px"] == 120 and result.area["height_px"] == 60
    assert (tmp_path / "job" / "manifest.json").is_file()


def test_a_job_stopped_while_predicting_leaves_no_manifest(
    bundle, scenes_dir: Path, tmp_path: Path
) -> None:
    lon, lat = scene_lonlat(60, 60)
    request = JobRequest.model_validate(
        {"area": {"type": "point", "lon": lon, "lat": lat, "size_km": 1.2}}
    )

    def progress(stage, done=None, total=None, unit=None, message=None) -> None:
        if stage == PREDICTING and done:
            raise Cancelled()

    job = tmp_path / "job"
    with pytest.raises(Cancelled):
        run_job(request, job, progress, _context(bundle, scenes_dir))
    names = sorted(p.name for p in job.iterdir())
    assert names == ["area.tif"]  # the complete mosaic; nothing half-written, no manifest
