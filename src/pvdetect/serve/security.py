"""What keeps a server safe: the bearer token, the bound address, body sizes, download paths.

* A server bound to anything but a loopback address must have a token (:func:`check_binding`);
  every API call then carries ``Authorization: Bearer TOKEN`` (:func:`token_dependency`,
  compared in constant time).
* A loopback server without a token answers only requests addressed to a loopback name
  (``Host: 127.0.0.1``, ``localhost``, ``[::1]``; :class:`LoopbackHostOnly`), so that a web
  page elsewhere cannot reach it through a DNS name that points at 127.0.0.1 (DNS rebinding).
* Request bodies are limited (:class:`BodyLimit`: 413).
* A download names a file inside its job's folder (:func:`job_file`): plain names only (no
  ``..``, no absolute paths, no backslashes, no percent-encoded separators or dots, no hidden
  files), and the resolved path, symlinks followed, must still lie inside the folder.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from pathlib import Path
from typing import Any

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pvdetect.errors import ConfigError

__all__ = [
    "BodyLimit",
    "LoopbackHostOnly",
    "PathRefused",
    "check_binding",
    "is_loopback",
    "job_file",
    "token_dependency",
]

#: shortest token accepted
MIN_TOKEN = 16
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
_ENCODED = re.compile(rb"%(2f|5c|2e|00)", re.IGNORECASE)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token, and short tokens.

    Raises:
        ConfigError: What is wrong, naming the option.
    """
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(
            f"--token: use at least {MIN_TOKEN} characters (e.g. python -c "
            "'import secrets; print(secrets.token_urlsafe())')"
        )
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"--host {host}: binding an address other than 127.0.0.1 needs --token "
            "(every API call must then carry it)"
        )


def token_dependency(token: str | None) -> Any:
    """A FastAPI dependency that requires ``Authorization: Bearer TOKEN`` (none without one)."""
    bearer = HTTPBearer(auto_error=False, description="The server's --token.")

    async def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        if token is None:
            return
        if credentials is None:
            raise HTTPException(
                401,
                "this server needs its token: send Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": "Bearer"})

    return require_token


class PathRefused(Exception):
    """A download path that is refused; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def job_file(folder: Path, name: str, raw_path: bytes | None = None) -> Path:
    """The file ``name`` inside ``folder``, or :class:`PathRefused`.

    Args:
        folder: The job's folder.
        name: The path after ``/files/``, as decoded by the router.
        raw_path: The request's undecoded path (percent-encoded separators are refused).
    """
    if raw_path is not None and _ENCODED.search(raw_path):
        raise PathRefused(400, "file name: percent-encoded '/', '\\', '.' or NUL not allowed")
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise PathRefused(400, f"file name {name!r}: must be a relative path inside the job")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PathRefused(400, f"file name {name!r}: '..', '.' and empty parts are not allowed")
    if not all(_SEGMENT.match(p) for p in parts):
        raise PathRefused(400, f"file name {name!r}: only letters, digits and ._+- (not first)")
    base = folder.resolve()
    try:
        real = (folder / name).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise PathRefused(404, f"{name}: no such file in this job") from None
    except (OSError, RuntimeError):  # a symlink loop
        raise PathRefused(403, f"{name}: not a file of this job") from None
    if not real.is_relative_to(base):
        raise PathRefused(403, f"{name}: leads outside the job's folder")
    if not real.is_file():
        raise PathRefused(404, f"{name}: not a file")
    return real


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {
                "detail": f"request body larger than {self.max_bytes} bytes",
                "message": f"request body larger than {self.max_bytes} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0
        refused = False

        async def limited_receive() -> Any:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # answer now; the app sees a client that went away, and what it answers
                    # to that is dropped
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port (``[::1]:8000`` -> ``::1``)."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class LoopbackHostOnly:
    """ASGI middleware: answer only requests whose ``Host`` is a loopback name (else 400)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if not is_loopback(host_name(host)):
                body = b'{"detail": "invalid Host header", "message": "invalid Host header"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
