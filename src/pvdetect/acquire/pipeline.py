"""One acquisition end to end: search, composite, COG, chips, and the JSON sidecar.

``DIR/NAME.tif`` (the median composite, a COG) and ``DIR/NAME.json`` (what was asked and what
was done) appear together or not at all, with the chips ``DIR/images/NAME_k.tif`` when asked
for. The sidecar records the request: a rerun with the same request reuses the complete
output without touching the network; a different request under the same name is refused
unless ``overwrite`` is set, so that chips whose masks were corrected by hand are never
replaced by surprise.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvdetect.acquire.assets import AssetError, ItemAssets, resolve_item
from pvdetect.acquire.catalogs import SearchResult, make_signer, search_items
from pvdetect.acquire.chips import capture_windows
from pvdetect.acquire.composite import (
    DEFAULT_MEMORY_MB,
    CompositeResult,
    build_composite,
    group_by_day,
)
from pvdetect.acquire.grid import Grid
from pvdetect.acquire.http import DEFAULT_POLICY, RetryPolicy
from pvdetect.acquire.outputs import Staging, remove_quietly, write_chip, write_cog
from pvdetect.acquire.readers import OUT_NODATA
from pvdetect.acquire.request import AcquireRequest
from pvdetect.acquire.sidecar import build_sidecar, chip_files, read_sidecar
from pvdetect.errors import DataError, OutputError
from pvdetect.io import clean_json


class NoImageryError(DataError):
    """The catalog has no usable item over the area in the date window."""


@dataclass
class AcquireResult:
    """What :func:`acquire` wrote (or found complete).

    Attributes:
        image: The composite COG.
        sidecar: Its JSON sidecar.
        chips: The chip files.
        reused: True when a complete output of the same request was found.
        items: Items used.
        dates: Solar days used.
        valid_fraction: Share of composite pixels with a clear observation.
        warnings: Remarks for the user.
    """

    image: Path
    sidecar: Path
    chips: list[Path] = field(default_factory=list)
    reused: bool = False
    items: int = 0
    dates: int = 0
    valid_fraction: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Job:
    """An acquisition once its items are known."""

    request: AcquireRequest
    out_dir: Path
    grid: Grid
    items: list[ItemAssets]
    search: SearchResult
    skipped: list[dict[str, str]]
    warnings: list[str]


def _paths(out_dir: Path, name: str, chips: int) -> tuple[Path, Path, list[Path]]:
    return (
        out_dir / f"{name}.tif",
        out_dir / f"{name}.json",
        [out_dir / "images" / f"{name}_{k}.tif" for k in range(1, chips + 1)],
    )


def _reusable(request: AcquireRequest, out_dir: Path) -> AcquireResult | None:
    image, sidecar, _ = _paths(out_dir, request.name, 0)
    old = read_sidecar(sidecar) if sidecar.is_file() else None
    if old is None or old.get("request") != request.to_json() or not image.is_file():
        return None
    chips = chip_files(old, out_dir, request.name)
    if len(chips) != len(old.get("chips") or []) or not all(c.is_file() for c in chips):
        return None
    out = old.get("output") if isinstance(old.get("output"), dict) else {}
    return AcquireResult(
        image=image,
        sidecar=sidecar,
        chips=chips,
        reused=True,
        items=len(old.get("items") or []),
        dates=len(old.get("dates") or []),
        valid_fraction=float(out.get("valid_fraction") or 0.0),
    )


def _check_conflicts(request: AcquireRequest, out_dir: Path, overwrite: bool) -> list[Path]:
    """Refuse to replace another request's files; returns old chips to delete afterwards."""
    image, sidecar, chips = _paths(out_dir, request.name, request.chips)
    old = read_sidecar(sidecar) if sidecar.is_file() else None
    old_chips = chip_files(old, out_dir, request.name)
    for path in [sidecar, image, *chips]:
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; give another --name or --out")
    if overwrite:
        return [c for c in old_chips if c not in chips]
    for path in [sidecar, image, *chips]:
        if path.exists():
            why = "holds a different request" if path == sidecar and old else "exists"
            raise OutputError(
                f"{path}: {why}; give another --name, or --overwrite to replace the outputs"
            )
    return []


def _resolve(search: SearchResult) -> tuple[list[ItemAssets], list[dict[str, str]]]:
    used: list[ItemAssets] = []
    skipped: list[dict[str, str]] = []
    for item in search.items:
        try:
            used.append(resolve_item(item))
        except AssetError as exc:
            skipped.append({"id": item.id, "reason": str(exc)})
    return used, skipped


def acquire(
    request: AcquireRequest,
    out_dir: Path,
    *,
    overwrite: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
    memory_mb: float = DEFAULT_MEMORY_MB,
    block_side: int | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> AcquireResult:
    """Search, composite and write one acquisition (see the module docstring).

    Args:
        request: What to acquire.
        out_dir: Output folder ``DIR``.
        overwrite: Replace the outputs of a different request under the same name, or
            recompute the same request.
        policy: Retries and timeouts of every request.
        memory_mb: Memory budget of the composite.
        block_side: Block side of the composite (default: from ``memory_mb``).
        log: Receives progress lines.

    Raises:
        ConfigError: Bad request. NetworkError: Catalog or assets unreachable.
        DataError: Nothing usable found. OutputError: Outputs cannot be written.
    """
    grid = request.grid()
    if not overwrite:
        reused = _reusable(request, out_dir)
        if reused is not None:
            return reused
    stale = _check_conflicts(request, out_dir, overwrite)
    catalog = request.catalog
    bbox = grid.bbox_wgs84()
    search = search_items(
        catalog, request.collection, bbox, request.start, request.end, request.max_items, policy
    )
    items, skipped = _resolve(search)
    if not items:
        why = f" ({len(skipped)} without the four bands)" if skipped else ""
        raise NoImageryError(
            f"{catalog.url}: no {request.collection} item{why} covers "
            f"{', '.join(f'{v:.5f}' for v in bbox)} between {request.start} and {request.end}"
        )
    days = group_by_day(items)
    log(
        f"found {len(items)} item(s) on {len(days)} date(s)"
        + (f" ({search.selection})" if search.selection != "all" else "")
    )
    warnings = [f"item {s['id']} skipped: {s['reason']}" for s in skipped]
    if any(it.scl is None for it in items):
        n = sum(it.scl is None for it in items)
        warnings.append(f"{n} item(s) have no scene classification (SCL): no cloud mask there")
    job = _Job(request, out_dir, grid, items, search, skipped, warnings)
    result = _write_outputs(job, policy, memory_mb, block_side, log)
    for path in stale:
        remove_quietly(path)
    return result


def _write_outputs(
    job: _Job,
    policy: RetryPolicy,
    memory_mb: float,
    block_side: int | None,
    log: Callable[[str], None],
) -> AcquireResult:
    """Composite, COG, chips and sidecar under temporary names, renamed together."""
    request = job.request
    image, sidecar, _ = _paths(job.out_dir, request.name, request.chips)
    signer = make_signer(request.catalog, request.collection, policy)
    with Staging() as staging:
        sidecar_tmp = staging.path(sidecar)  # reserved first: renamed last
        image_tmp = staging.path(image)
        work = _work_path(staging.folder(job.out_dir), request.name)
        try:
            comp = build_composite(
                job.items,
                job.grid,
                work,
                mask_classes=request.mask_classes,
                signer=signer,
                policy=policy,
                memory_mb=memory_mb,
                side=block_side,
                want_coverage=request.chips > 0,
                progress=_progress(log),
            )
            write_cog(work, image_tmp)
            chips = _write_chips(job, comp, work, staging)
        finally:
            remove_quietly(work)
        doc = build_sidecar(
            request,
            job.grid,
            job.items,
            job.search,
            job.skipped,
            comp,
            chips,
            getattr(signer, "method", None),
            job.warnings,
        )
        sidecar_tmp.write_text(json.dumps(clean_json(doc), indent=1) + "\n", encoding="utf-8")
    return AcquireResult(
        image=image,
        sidecar=sidecar,
        chips=[job.out_dir / c["file"] for c in chips],
        items=len(job.items),
        dates=len(comp.dates),
        valid_fraction=comp.valid / comp.total if comp.total else 0.0,
        warnings=job.warnings,
    )


def _progress(log: Callable[[str], None]) -> Callable[[int, int], None]:
    """A block counter that logs about every tenth of the blocks (and the last)."""

    def report(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done % step == 0:
            log(f"composite: {done}/{total} block(s)")

    return report


def _work_path(folder: Path, name: str) -> Path:
    """A fresh hidden name for the intermediate GeoTIFF of the composite."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".work.tif", dir=folder)
    os.close(fd)
    os.remove(tmp)
    return Path(tmp)


def _write_chips(
    job: _Job, comp: CompositeResult, work: Path, staging: Staging
) -> list[dict[str, Any]]:
    """Cut the chips from the composite ``work`` under staged names; their sidecar entries."""
    request, grid, warnings = job.request, job.grid, job.warnings
    _, _, chip_paths = _paths(job.out_dir, request.name, request.chips)
    if not request.chips:
        return []
    assert request.point is not None and comp.coverage is not None
    point = grid.rowcol(*request.point)
    windows = capture_windows(point, comp.coverage, request.chip_size, request.chips, request.seed)
    if not windows:
        raise DataError(
            f"--point: no {request.chip_size} px window around {request.point[0]:g},"
            f"{request.point[1]:g} lies inside the imagery footprint"
        )
    if len(windows) < request.chips:
        warnings.append(f"only {len(windows)} distinct chip window(s) fit inside the imagery")
    site = re.split(r"[_-]", request.name, maxsplit=1)[0]
    if site != request.name:
        warnings.append(f"the chips' site is {site!r} (the part of --name before '_' or '-')")
    out = []
    for k, (window, final) in enumerate(zip(windows, chip_paths, strict=False), start=1):
        data = write_chip(work, window, staging.path(final))
        out.append(
            {
                "file": f"images/{final.name}",
                "index": k,
                "window": {
                    "col_off": int(window.col_off),
                    "row_off": int(window.row_off),
                    "width": int(window.width),
                    "height": int(window.height),
                },
                "point_pixel": [point[0] - window.row_off, point[1] - window.col_off],
                "valid_fraction": float((data[0] != OUT_NODATA).mean()),
            }
        )
    return out
