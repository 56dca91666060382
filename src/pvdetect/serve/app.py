"""The FastAPI application of ``pvdetect serve``: the JSON API, the page and the API docs.

API (every call needs ``Authorization: Bearer TOKEN`` when the server has a token)::

    GET  /api/source                  the source, limits and model
    POST /api/jobs                    create a job (JobRequest) -> 202 JobInfo; 422, 429, 413
    GET  /api/jobs                    every job, the newest first
    GET  /api/jobs/{id}               one job: state, progress, result when done
    POST /api/jobs/{id}/cancel        cancel a queued job, stop a running one
    GET  /api/jobs/{id}/files/{name}  a file of a finished job (names from its result)

``/`` is the page, ``/static/`` its files (no data, no token), ``/docs`` the OpenAPI page
(Swagger UI served from ``static/vendor``, no CDN) and ``/openapi.json`` the schema.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from pvdetect import __version__
from pvdetect.serve.jobs import JobManager, JobStore, NotCancellable, QueueFull, valid_id
from pvdetect.serve.models import (
    AreaError,
    JobInfo,
    JobList,
    JobRequest,
    SourceInfo,
    check_for_server,
)
from pvdetect.serve.mosaic import covering
from pvdetect.serve.runner import load_context
from pvdetect.serve.security import (
    BodyLimit,
    LoopbackHostOnly,
    PathRefused,
    is_loopback,
    job_file,
    token_dependency,
)
from pvdetect.serve.settings import ServeSettings
from pvdetect.serve.sources import ScenesSource

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"
_UNION_TAGS = {"point", "bbox", "geojson"}


def _where(loc: list[Any] | tuple[Any, ...]) -> str:
    """``["body", "area", "point", "lat"]`` -> ``area.lat``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    if len(parts) >= 2 and parts[0] == "area" and parts[1] in _UNION_TAGS:
        parts = [parts[0], *parts[2:]]
    return ".".join(parts) or "body"


def _invalid(errors: list[dict[str, Any]]) -> JSONResponse:
    detail = []
    for e in errors:
        msg = str(e.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        detail.append({"loc": list(e.get("loc", ())), "msg": msg, "type": e.get("type")})
    message = "; ".join(f"{_where(d['loc'])}: {d['msg']}" for d in detail)
    return JSONResponse(status_code=422, content={"detail": detail, "message": message})


def _model_info(settings: ServeSettings) -> dict[str, Any]:
    from pvdetect.model.bundle import read_meta

    meta = read_meta(settings.bundle)
    return {
        "bundle": settings.bundle.name,
        "arch": meta.arch,
        "encoder": meta.encoder,
        "threshold": meta.threshold,
        "bands": list(meta.band_order),
    }


def create_app(settings: ServeSettings, manager: JobManager | None = None) -> FastAPI:
    """The application for ``settings`` (its workers start and stop with the app's lifespan).

    Args:
        settings: What the server was started with.
        manager: The job manager (default: one over ``settings.jobs_dir`` whose workers load
            ``settings.bundle``).
    """
    jobs = manager or JobManager(
        JobStore(settings.jobs_dir),
        lambda: load_context(settings),
        workers=settings.workers,
        queue=settings.queue,
        row_delay=settings.row_delay,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        jobs.start()
        try:
            yield
        finally:
            jobs.stop()

    app = FastAPI(
        title="pvdetect serve",
        version=__version__,
        summary="Find PV solar plants in an area: create a job, follow it, fetch its results.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.jobs = jobs
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    if settings.token is None and is_loopback(settings.host):
        app.add_middleware(LoopbackHostOnly)
    _install_handlers(app)
    api = APIRouter(prefix="/api", dependencies=[Depends(token_dependency(settings.token))])
    _source_route(api, settings, _model_info(settings))
    _job_routes(api, settings, jobs)
    _file_route(api, jobs)
    app.include_router(api)
    _page_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app


def _install_handlers(app: FastAPI) -> None:
    """Errors as ``{"detail": ..., "message": "one line"}``; safe default headers."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(list(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": exc.detail, "message": str(exc.detail)},
            headers=exc.headers,
        )

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _job_or_404(jobs: JobManager, job_id: str) -> JobInfo:
    info = jobs.get(job_id) if valid_id(job_id) else None
    if info is None:
        raise HTTPException(404, f"no job {job_id}")
    return info


def _source_route(api: APIRouter, settings: ServeSettings, model: dict[str, Any]) -> None:
    """``GET /api/source``."""
    source = settings.source

    @api.get("/source", response_model=SourceInfo, summary="The source, limits and model")
    def get_source() -> SourceInfo:
        scenes: list[dict[str, Any]] = []
        if isinstance(source, ScenesSource):
            found, _ = source.footprints()
            scenes = [{"name": f.path.name, "bbox": list(f.bbox)} for f in found]
        return SourceInfo(
            kind="scenes" if isinstance(source, ScenesSource) else "catalog",
            label=source.label,
            needs_dates=not isinstance(source, ScenesSource),
            max_km=settings.max_km,
            scenes=scenes,
            model=model,
            token_required=settings.token is not None,
            queue=settings.queue,
            workers=settings.workers,
        )


def _job_routes(api: APIRouter, settings: ServeSettings, jobs: JobManager) -> None:
    """Create, list, read and cancel jobs."""
    source = settings.source

    @api.post(
        "/jobs",
        status_code=202,
        response_model=JobInfo,
        summary="Create a job",
        responses={
            413: {"description": "Request body too large"},
            422: {"description": "A malformed or refused area or date window"},
            429: {"description": "The queue is full"},
        },
    )
    def create_job(request: JobRequest, response: Response) -> JobInfo | JSONResponse:
        covered = None
        if isinstance(source, ScenesSource):

            def covered(bbox: Any, polygon: Any) -> bool:
                return bool(covering(source.footprints()[0], bbox, polygon))

        try:
            check_for_server(
                request, settings.max_km, not isinstance(source, ScenesSource), covered
            )
        except AreaError as exc:
            return _invalid([{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}])
        try:
            info = jobs.submit(request)
        except QueueFull as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": "30"}) from None
        response.headers["Location"] = f"/api/jobs/{info.id}"
        return info

    @api.get("/jobs", response_model=JobList, summary="Every job, the newest first")
    def list_jobs() -> JobList:
        return JobList(jobs=jobs.list())

    @api.get("/jobs/{job_id}", response_model=JobInfo, summary="A job's state and result")
    def get_job(job_id: str) -> JobInfo:
        return _job_or_404(jobs, job_id)

    @api.post(
        "/jobs/{job_id}/cancel",
        status_code=202,
        response_model=JobInfo,
        summary="Cancel a queued job, or stop a running one at its next tile row",
        responses={409: {"description": "The job has finished"}},
    )
    def cancel_job(job_id: str) -> JobInfo:
        _job_or_404(jobs, job_id)
        try:
            return jobs.cancel(job_id)
        except NotCancellable as exc:
            raise HTTPException(409, str(exc)) from None


def _file_route(api: APIRouter, jobs: JobManager) -> None:
    """``GET /api/jobs/{id}/files/{name}``: a file of a finished job."""

    @api.get(
        "/jobs/{job_id}/files/{name:path}",
        summary="A file of a finished job",
        response_class=FileResponse,
        responses={400: {"description": "A malformed name"}, 403: {"description": "Outside"}},
    )
    def get_file(job_id: str, name: str, request: Request) -> FileResponse:
        info = _job_or_404(jobs, job_id)
        if info.status != "done":
            raise HTTPException(409, f"job {job_id} is {info.status}; files come when it is done")
        try:
            path = job_file(jobs.store.folder(job_id), name, request.scope.get("raw_path"))
        except PathRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".geojson":
            media = "application/geo+json"
        elif path.suffix == ".gpkg":
            media = "application/geopackage+sqlite3"
        return FileResponse(path, media_type=media, filename=path.name)


def _page_routes(app: FastAPI) -> None:
    """The page and the API docs (Swagger UI from ``static/vendor``)."""

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="pvdetect serve - API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
