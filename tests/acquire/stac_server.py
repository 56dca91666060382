"""A STAC API and a range-capable file server on 127.0.0.1, run in a thread by the tests.

One :class:`TestServer` answers three kinds of paths:

* ``/files/REL``: the files under a folder, with ``HEAD``, single and multiple byte ranges
  (``206`` with ``Content-Range``), a count of the body bytes served per file, injected
  ``503`` answers, a required query token and a connection dropped after some bytes;
* ``/stac/...``: a STAC API over a list of item dictionaries (landing page, conformance,
  collections, ``/search`` by GET and POST with ``next`` links for paging), as pystac-client
  expects it;
* ``/token/COLLECTION``: a fake Planetary Computer SAS token endpoint.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
_RANGE_RE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class ServerState:
    """What the server serves and what it saw; shared by the handler threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.items: list[dict[str, Any]] = []
        self.collections: dict[str, dict[str, Any]] = {}
        self.page_size = 2
        self.lock = threading.Lock()
        self.bytes_served: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.searches: list[tuple[str, dict[str, Any]]] = []
        self.fail_next: Counter[str] = Counter()  # path -> number of 503 answers still to give
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before dropping, once
        self.required_token: str | None = None
        self.token_requests: list[str] = []
        self.token_value = "st=2024-01-01&se=2099-01-01&sig=fake"

    def served(self, name: str) -> int:
        """Body bytes served for one file under ``/files/``."""
        with self.lock:
            return self.bytes_served[name]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep it quiet
        return

    # ------------------------------------------------------------------ dispatch

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch("HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        with state.lock:
            state.requests.append((method, self.path, dict(self.headers.items())))
        if url.path.startswith("/files/"):
            self._file(method, urllib.parse.unquote(url.path[len("/files/") :]), url.query)
        elif url.path.startswith("/stac"):
            self._stac(method, url)
        elif url.path.startswith("/token/"):
            with state.lock:
                state.token_requests.append(url.path[len("/token/") :])
            self._json({"token": state.token_value, "msft:expiry": "2099-01-01T00:00:00Z"})
        else:
            self._send_error(404)

    # ------------------------------------------------------------------ helpers

    def _send_error(self, code: int) -> None:
        body = json.dumps({"code": str(code), "description": "test server"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, content_type: str = "application/json") -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # ------------------------------------------------------------------ files

    def _file(self, method: str, name: str, query: str) -> None:
        state = self.server.state
        path = (state.root / name).resolve()
        if not path.is_file() or state.root.resolve() not in path.parents:
            self._send_error(404)
            return
        if state.required_token is not None:
            if urllib.parse.parse_qs(query).get("sig") != [state.required_token]:
                self._send_error(403)
                return
        with state.lock:
            if state.fail_next[name] > 0:
                state.fail_next[name] -= 1
                fail = True
            else:
                fail = False
        if fail:
            self._send_error(503)
            return
        data = path.read_bytes()
        size = len(data)
        ranges = self._ranges(self.headers.get("Range"), size)
        if ranges == "bad":
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if_range = self.headers.get("If-Range")
        if ranges and if_range is not None and if_range != self._etag(path):
            ranges = None  # the file changed: the whole file, as RFC 9110 asks
        if not ranges:
            self._file_body(method, name, data, 200, None)
        elif len(ranges) == 1:
            a, b = ranges[0]
            self._file_body(method, name, data[a : b + 1], 206, f"bytes {a}-{b}/{size}")
        else:
            self._multipart(method, name, data, ranges)

    @staticmethod
    def _etag(path: Path) -> str:
        st = path.stat()
        return f'"{st.st_size}-{st.st_mtime_ns}"'

    @staticmethod
    def _ranges(header: str | None, size: int) -> list[tuple[int, int]] | str | None:
        if not header:
            return None
        if not header.startswith("bytes="):
            return None
        out: list[tuple[int, int]] = []
        for part in header[len("bytes=") :].split(","):
            m = _RANGE_RE.match(part)
            if m is None:
                return "bad"
            first, last = m.group(1), m.group(2)
            if first == "" and last == "":
                return "bad"
            if first == "":
                a, b = max(0, size - int(last)), size - 1
            else:
                a = int(first)
                b = min(int(last), size - 1) if last else size - 1
            if a >= size or a > b:
                return "bad"
            out.append((a, b))
        return out

    def _file_body(
        self, method: str, name: str, body: bytes, code: int, content_range: str | None
    ) -> None:
        state = self.server.state
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", self._etag((state.root / name).resolve()))
        self.send_header("Content-Length", str(len(body)))
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        if method == "HEAD":
            return
        with state.lock:
            drop = state.drop_after.pop(name, None)
        if drop is not None and drop < len(body):
            self.wfile.write(body[:drop])
            self.wfile.flush()
            with state.lock:
                state.bytes_served[name] += drop
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)
        with state.lock:
            state.bytes_served[name] += len(body)

    def _multipart(
        self, method: str, name: str, data: bytes, ranges: list[tuple[int, int]]
    ) -> None:
        boundary = "pvdetect-test-boundary"
        parts: list[bytes] = []
        served = 0
        for a, b in ranges:
            head = (
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {a}-{b}/{len(data)}\r\n\r\n"
            ).encode()
            parts.append(head + data[a : b + 1] + b"\r\n")
            served += b - a + 1
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        self.send_response(206)
        self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)
            with self.server.state.lock:
                self.server.state.bytes_served[name] += served

    # ------------------------------------------------------------------ STAC

    def _stac(self, method: str, url: urllib.parse.SplitResult) -> None:
        base = self.server.base_url + "/stac/"
        path = url.path[len("/stac") :].strip("/")
        state = self.server.state
        if path == "":
            self._json(
                {
                    "type": "Catalog",
                    "id": "test-stac",
                    "stac_version": "1.0.0",
                    "description": "STAC API of the pvdetect tests",
                    "conformsTo": CONFORMANCE,
                    "links": [
                        {"rel": "self", "href": base, "type": "application/json"},
                        {"rel": "root", "href": base, "type": "application/json"},
                        {"rel": "conformance", "href": base + "conformance"},
                        {"rel": "data", "href": base + "collections"},
                        {
                            "rel": "search",
                            "href": base + "search",
                            "type": "application/geo+json",
                            "method": "GET",
                        },
                        {
                            "rel": "search",
                            "href": base + "search",
                            "type": "application/geo+json",
                            "method": "POST",
                        },
                    ],
                }
            )
        elif path == "conformance":
            self._json({"conformsTo": CONFORMANCE})
        elif path == "collections":
            self._json({"collections": list(state.collections.values()), "links": []})
        elif path.startswith("collections/"):
            cid = path.split("/", 1)[1]
            if cid in state.collections:
                self._json(state.collections[cid])
            else:
                self._send_error(404)
        elif path == "search":
            self._search(method, url, base)
        else:
            self._send_error(404)

    def _search(self, method: str, url: urllib.parse.SplitResult, base: str) -> None:
        state = self.server.state
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            params: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        else:
            q = dict(urllib.parse.parse_qsl(url.query))
            params = dict(q)
            if "bbox" in q:
                params["bbox"] = [float(v) for v in q["bbox"].split(",")]
            if "collections" in q:
                params["collections"] = q["collections"].split(",")
        with state.lock:
            state.searches.append((method, params))
        matches = [it for it in state.items if _matches(it, params)]
        limit = min(int(params.get("limit") or state.page_size), state.page_size)
        start = int(params.get("token") or 0)
        page = matches[start : start + limit]
        links: list[dict[str, Any]] = []
        if start + limit < len(matches):
            nxt = {**params, "token": start + limit}
            if method == "POST":
                links.append(
                    {"rel": "next", "href": base + "search", "method": "POST", "body": nxt}
                )
            else:
                flat = {
                    k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in nxt.items()
                }
                links.append(
                    {
                        "rel": "next",
                        "href": base + "search?" + urllib.parse.urlencode(flat),
                        "method": "GET",
                    }
                )
        self._json(
            {
                "type": "FeatureCollection",
                "features": page,
                "links": links,
                "numberMatched": len(matches),
                "numberReturned": len(page),
            },
            "application/geo+json",
        )


def _parse_time(text: str) -> datetime | None:
    if text in ("", ".."):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _matches(item: dict[str, Any], params: dict[str, Any]) -> bool:
    cols = params.get("collections")
    if cols and item.get("collection") not in cols:
        return False
    bbox = params.get("bbox")
    if bbox:
        w, s, e, n = bbox
        iw, is_, ie, in_ = item["bbox"]
        if iw > e or ie < w or is_ > n or in_ < s:
            return False
    dt = params.get("datetime")
    if dt:
        lo_text, _, hi_text = dt.partition("/")
        when = _parse_time(item["properties"]["datetime"])
        lo, hi = _parse_time(lo_text), _parse_time(hi_text or lo_text)
        if (lo and when < lo) or (hi and when > hi):
            return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"


class TestServer:
    """A running server; ``url(...)`` builds addresses, ``state`` holds what it saw."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, root: Path) -> None:
        self.state = ServerState(root)
        self._server = _Server(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self._server.base_url

    @property
    def stac_url(self) -> str:
        """Landing page of the STAC API."""
        return self.base_url + "/stac/"

    def file_url(self, name: str) -> str:
        """Address of a file under the served folder."""
        return f"{self.base_url}/files/{urllib.parse.quote(name)}"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def serve(root: Path) -> Iterator[TestServer]:
    """Run a :class:`TestServer` over ``root`` for the duration of the block."""
    server = TestServer(root)
    try:
        yield server
    finally:
        server.close()
