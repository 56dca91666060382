"""Signed asset addresses: Planetary Computer serves its blobs only with a SAS token.

:class:`PlanetaryComputerSigner` uses the ``planetary-computer`` package where it is installed
(its ``sign`` caches tokens per storage container); otherwise it asks the token API itself,
``https://planetarycomputer.microsoft.com/api/sas/v1/token/{collection}``, which answers
``{"token": "...", "msft:expiry": "..."}``, and appends the token to each address. Tokens are
kept until five minutes before their expiry and renewed after that, so a long acquisition
never reads with an expired one. Addresses are signed right before they are opened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import requests

from pvdetect.acquire.http import (
    DEFAULT_POLICY,
    NetworkError,
    RetryPolicy,
    make_session,
    network_error,
    status_error,
)

PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token/{collection}"
_RENEW_BEFORE_S = 300.0
_DEFAULT_LIFETIME_S = 1800.0


class Signer(Protocol):
    """Turns an asset address into one that can be read."""

    def sign(self, href: str) -> str:
        """The readable address of ``href``."""
        ...


class NoSigner:
    """Addresses are read as they are."""

    def sign(self, href: str) -> str:
        """``href`` unchanged."""
        return href


def _with_token(href: str, token: str) -> str:
    if "sig=" in href.split("?", 1)[-1] and "?" in href:
        return href  # signed already
    return f"{href}{'&' if '?' in href else '?'}{token.lstrip('?')}"


class SasTokenSigner:
    """Signs addresses with a token from a Planetary-Computer-style SAS token endpoint.

    Args:
        collection: Collection whose token to ask for.
        token_url: Endpoint template with ``{collection}``.
        session: requests session (default: a retrying one).
        policy: Timeouts and retries.
        clock: Seconds since the epoch (tests pass their own).
    """

    def __init__(
        self,
        collection: str,
        token_url: str = PC_TOKEN_URL,
        session: requests.Session | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collection = collection
        self.url = token_url.format(collection=collection)
        self.session = session or make_session(policy)
        self.policy = policy
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        """A token valid for at least five more minutes (asked for when needed)."""
        with self._lock:
            if self._token is None or self.clock() > self._expires - _RENEW_BEFORE_S:
                self._token, self._expires = self._fetch()
            return self._token

    def _fetch(self) -> tuple[str, float]:
        try:
            resp = self.session.get(self.url, timeout=self.policy.timeout)
        except requests.RequestException as exc:
            raise network_error(self.url, exc, "cannot get an access token") from None
        if resp.status_code != 200:
            raise status_error(self.url, resp.status_code, "(access token)")
        try:
            data = resp.json()
            token = str(data["token"])
        except (ValueError, KeyError, TypeError):
            raise NetworkError(f"{self.url}: the token answer has no token") from None
        expires = self.clock() + _DEFAULT_LIFETIME_S
        expiry = data.get("msft:expiry")
        if expiry:
            try:
                expires = datetime.fromisoformat(str(expiry).replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
        return token, expires

    def sign(self, href: str) -> str:
        """``href`` with the collection's SAS token appended."""
        return _with_token(href, self.token())


class PlanetaryComputerSigner:
    """Planetary Computer signing: the ``planetary-computer`` package, else the token API."""

    def __init__(
        self,
        collection: str,
        token_url: str = PC_TOKEN_URL,
        policy: RetryPolicy = DEFAULT_POLICY,
        use_package: bool = True,
    ) -> None:
        self._package_sign: Callable[[str], str] | None = None
        if use_package:
            try:
                import planetary_computer  # type: ignore[import-not-found]

                self._package_sign = planetary_computer.sign
            except ImportError:
                self._package_sign = None
        self._fallback = SasTokenSigner(collection, token_url, policy=policy)

    @property
    def method(self) -> str:
        """How addresses are signed, for the sidecar."""
        return "planetary-computer package" if self._package_sign else "SAS token API"

    def sign(self, href: str) -> str:
        """The signed address of ``href``."""
        if self._package_sign is not None:
            try:
                return str(self._package_sign(href))
            except requests.RequestException as exc:
                raise network_error(href, exc, "cannot be signed") from None
        return self._fallback.sign(href)
