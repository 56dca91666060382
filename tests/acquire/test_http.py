"""Retrying sessions, GDAL's HTTP options and the one-line network errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from pvdetect.acquire.http import (
    RetryPolicy,
    describe,
    gdal_options,
    gdal_path,
    make_session,
    network_error,
    public_url,
)
from pvdetect.errors import DataError

from .stac_server import serve


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_session_retries_5xx_then_succeeds(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 100)
    with serve(tmp_path) as server:
        server.state.fail_next["f.bin"] = 2
        session = make_session(RetryPolicy(retries=3, backoff=0.05))
        resp = session.get(server.file_url("f.bin"), timeout=5)
        assert resp.status_code == 200 and resp.content == b"x" * 100
        gets = [r for r in server.state.requests if r[0] == "GET"]
        assert len(gets) == 3
        assert resp.request.headers["User-Agent"].startswith("pvdetect/")
        server.state.fail_next["f.bin"] = 10
        resp = make_session(RetryPolicy(retries=1, backoff=0.05)).get(
            server.file_url("f.bin"), timeout=5
        )
        assert resp.status_code == 503  # retries spent: the last answer, for the message


def test_offline_is_a_short_network_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/x?token=secret"
    session = make_session(RetryPolicy(connect_retries=1, backoff=0.01))
    with pytest.raises(requests.ConnectionError) as exc:
        session.get(url, timeout=2)
    err = network_error(url, exc.value)
    assert isinstance(err, DataError) and err.exit_code == 2
    text = str(err)
    assert text.startswith(f"http://127.0.0.1:{url.split(':')[2].split('/')[0]}/x: cannot be")
    assert "secret" not in text and "offline" in text and "\n" not in text


def test_describe_names_the_usual_failures() -> None:
    assert describe(requests.exceptions.ReadTimeout("read timed out")) == "timed out"
    assert "dropped" in describe(requests.exceptions.ChunkedEncodingError("IncompleteRead(5)"))
    assert "host name not found" in describe(OSError("Name or service not known"))
    assert describe(ValueError("")) == "ValueError"


def test_gdal_options() -> None:
    opts = gdal_options(["https://a/b/B04.tif?sig=1", "https://a/b/x.TIF"], RetryPolicy())
    assert opts["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert opts["GDAL_HTTP_MAX_RETRY"] == "4" and opts["GDAL_HTTP_RETRY_DELAY"] == "0.5"
    assert opts["GDAL_HTTP_TIMEOUT"] == "60" and opts["GDAL_HTTP_CONNECTTIMEOUT"] == "10"
    allowed = opts["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"].split(",")
    assert ".tif" in allowed and ".TIF" in allowed and ".aux.xml" not in allowed
    assert "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" not in gdal_options(["https://a/blob"])


def test_paths() -> None:
    assert gdal_path("https://h/a.tif") == "/vsicurl/https://h/a.tif"
    assert gdal_path("s3://bucket/a.tif") == "/vsis3/bucket/a.tif"
    assert gdal_path("file:///tmp/a%20b.tif") == "/tmp/a b.tif"
    assert public_url("https://h/a.tif?se=1&sig=abc#f") == "https://h/a.tif"


def test_retry_configuration() -> None:
    retry = RetryPolicy().urllib3_retry()
    assert retry.connect == 2 and retry.read == 4 and retry.status == 4
    assert set(retry.status_forcelist) == {429, 500, 502, 503, 504}
    assert retry.allowed_methods is None  # POST searches are retried too
    assert retry.backoff_factor == 0.5 and retry.respect_retry_after_header
    assert not retry.raise_on_status


def test_post_is_retried(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.state.fail_next["x"] = 1
        (tmp_path / "x").write_bytes(b"ok")
        resp = make_session(RetryPolicy(backoff=0.01)).post(server.file_url("x"), timeout=5)
        assert resp.status_code == 200
