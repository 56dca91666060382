"""Resumable, verified downloads of dataset archives.

* :func:`fetch` downloads into ``NAME.part`` beside a ``NAME.part.json`` (address, ETag, size)
  and resumes a broken transfer with an HTTP ``Range`` request (``If-Range`` makes a changed
  file start again), within one run after a dropped connection and across runs.
* :func:`sha256_file` checks it; a mismatch removes the download and extracts nothing.
* :func:`download_dataset` ties them to the dataset registry and the checksum policy and
  extracts with :func:`pvdetect.acquire.archives.extract_archive`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from pvdetect.acquire.archives import SPLITS, extract_archive
from pvdetect.acquire.datasets import DatasetSource
from pvdetect.acquire.http import (
    DEFAULT_POLICY,
    NetworkError,
    RetryPolicy,
    make_session,
    network_error,
    public_url,
    status_error,
)
from pvdetect.errors import ConfigError, DataError, OutputError
from pvdetect.io import write_json

#: bytes per write: a dropped connection loses at most this much of the transfer
CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Incomplete(Exception):
    """The transfer ended before the announced size."""


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _load_meta(part: Path, url: str) -> dict[str, Any]:
    try:
        meta = json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and meta.get("url") == url else {}


def _save_meta(part: Path, meta: dict[str, Any]) -> None:
    _meta_path(part).write_text(json.dumps(meta), encoding="utf-8")


def discard_part(part: Path) -> None:
    """Remove a partial download and its record."""
    for p in (part, _meta_path(part)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _total(resp: requests.Response, start: int) -> int | None:
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if m and m.group(3) != "*":
        return int(m.group(3))
    length = resp.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _attempt(
    url: str,
    part: Path,
    session: requests.Session,
    policy: RetryPolicy,
    progress: Callable[[int, int | None], None] | None,
) -> bool:
    """One request: True when ``part`` is complete, False to start again from zero."""
    meta = _load_meta(part, url)
    have = part.stat().st_size if meta and part.is_file() else 0
    if meta.get("complete") and meta.get("size") == have:
        return True
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    with session.get(url, headers=headers, stream=True, timeout=policy.timeout) as resp:
        if resp.status_code == 416 and have:
            total = _total(resp, 0)
            if total == have:
                _save_meta(part, {**meta, "size": have, "complete": True})
                return True
            discard_part(part)
            return False
        if resp.status_code == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != have:
                discard_part(part)
                return False
            mode = "ab"
        elif resp.status_code == 200:
            have, mode = 0, "wb"
        else:
            raise status_error(url, resp.status_code, resp.reason or "")
        total = _total(resp, have)
        meta = {
            "url": url,
            "etag": resp.headers.get("ETag"),
            "last_modified": resp.headers.get("Last-Modified"),
            "size": total,
            "complete": False,
        }
        _save_meta(part, meta)
        with part.open(mode) as fh:
            for chunk in resp.iter_content(CHUNK):
                fh.write(chunk)
                have += len(chunk)
                if progress is not None:
                    progress(have, total)
    if total is not None and have != total:
        raise _Incomplete(f"{have} of {total} bytes")
    _save_meta(part, {**meta, "size": have, "complete": True})
    return True


def fetch(
    url: str,
    part: Path,
    *,
    session: requests.Session | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` into ``part``, resuming what an earlier try left there.

    A dropped connection is retried (with a doubling delay) from where it broke, up to
    ``policy.retries`` times; after that the partial file stays for the next run.

    Raises:
        NetworkError: The download cannot be completed now.
        OutputError: ``part`` cannot be written.
    """
    session = session or make_session(policy)
    last: BaseException | None = None
    failures = restarts = 0
    while True:
        before = _size(part)
        try:
            if _attempt(url, part, session, policy, progress):
                return part
            restarts += 1  # the server's file changed or refused the range: from zero
            if restarts > 2:
                raise NetworkError(f"{public_url(url)}: the file keeps changing on the server")
            continue
        except (_Incomplete, requests.RequestException) as exc:
            last = exc  # dropped or timed out: again from where it broke
            dropped = isinstance(exc, _Incomplete | requests.exceptions.ChunkedEncodingError)
            if not dropped and _size(part) <= before:
                break  # no connection at all: the session has retried that already
        except OSError as exc:
            raise OutputError(f"{part}: cannot write ({exc.strerror or exc})") from None
        failures += 1
        if failures > policy.retries:
            break
        time.sleep(policy.backoff * 2 ** (failures - 1))
    kept = f"; {part.stat().st_size} bytes kept in {part}, rerun to resume" if part.exists() else ""
    reason = network_error(url, last or RuntimeError("gave up"), "download failed")
    raise NetworkError(f"{reason}{kept}")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- datasets

SIDECAR = ".pvdetect_download.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_dataset` did.

    Attributes:
        out_dir: The dataset folder.
        sha256: SHA-256 of the archive.
        verified: True when it matched a known or given checksum.
        folders: Folders extracted (empty when ``reused``).
        files: Files extracted.
        reused: True when the same archive had been extracted there already.
    """

    out_dir: Path
    sha256: str
    verified: bool
    folders: list[Path]
    files: int
    reused: bool = False


def normalise_sha256(text: str | None) -> str | None:
    """Lower-case hex SHA-256, or None.

    Raises:
        ConfigError: Not 64 hex digits.
    """
    if text is None:
        return None
    value = text.strip().lower()
    if not _HEX64.match(value):
        raise ConfigError(f"--sha256: expected 64 hex digits, got {text!r}")
    return value


def _reusable(out_dir: Path, url: str, expected: str | None) -> DownloadResult | None:
    try:
        done = json.loads((out_dir / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or done.get("url") != public_url(url):
        return None
    if expected is not None and done.get("sha256") != expected:
        return None
    folders = [out_dir / f for f in done.get("folders", [])]
    if not folders or not all(f.exists() for f in folders):
        return None
    return DownloadResult(
        out_dir, done["sha256"], bool(done.get("verified")), [], int(done.get("files", 0)), True
    )


def download_dataset(
    source: DatasetSource,
    out_dir: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    verify: bool = True,
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: Callable[[int, int | None], None] | None = None,
) -> DownloadResult:
    """Download, verify and extract a dataset archive into ``out_dir``.

    The checksum is ``sha256`` if given, else the registry's (only for the registry's own
    address). Without any, the archive is downloaded and kept, its SHA-256 is reported and
    nothing is extracted unless ``verify`` is False.

    Raises:
        DataError: Checksum mismatch (download removed), unknown checksum (download kept),
            unsafe or broken archive. NetworkError: Download failed (partial file kept).
        OutputError: ``out_dir`` cannot be written or holds the dataset's folders already.
    """
    address = url or source.url
    expected = normalise_sha256(sha256) or (source.sha256 if address == source.url else None)
    reused = _reusable(out_dir, address, expected)
    if reused is not None:
        return reused
    for split in SPLITS:
        if (out_dir / split).exists():
            raise OutputError(f"{out_dir / split}: exists already; give an empty or new folder")
    made = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create folder ({exc.strerror or exc})") from None
    name = PurePosixPath(requests.utils.urlparse(address).path).name or source.filename
    part = out_dir / f"{name}.part"
    try:
        fetch(address, part, policy=policy, progress=progress)
    except BaseException:
        for folder in made:  # deepest first; only while empty (a partial download stays)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    actual = sha256_file(part)
    if verify and expected is not None and actual != expected:
        discard_part(part)
        raise DataError(
            f"{public_url(address)}: checksum mismatch (expected {expected}, got {actual}); "
            f"the download was removed and nothing extracted"
        )
    if verify and expected is None:
        note = f"; {source.checksum_note}" if source.checksum_note else ""
        raise DataError(
            f"{public_url(address)}: no known SHA-256 for this archive; the download {part} "
            f"has SHA-256 {actual}{note}, then rerun with --sha256 {actual} "
            f"(or --no-verify to extract it unverified)"
        )
    folders = extract_archive(part, out_dir)
    files = sum(1 for f in folders for p in f.rglob("*") if p.is_file())
    verified = verify and expected is not None
    write_json(
        out_dir / SIDECAR,
        {
            "dataset": source.name,
            "url": public_url(address),
            "sha256": actual,
            "verified": verified,
            "folders": [f.name for f in folders],
            "files": files,
        },
    )
    discard_part(part)
    return DownloadResult(out_dir, actual, verified, folders, files)
