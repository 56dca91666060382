"""HTTP for acquisition: sessions with retries and timeouts, GDAL's HTTP options, NetworkError.

Every request of the package goes through a :func:`make_session` session (urllib3 ``Retry``
with exponential backoff on connection failures, dropped connections, HTTP 429 and 5xx) or
through GDAL with the options of :func:`gdal_options`. Failures become a one-line
:class:`NetworkError` naming the address without its query string, so that no access token
is ever printed.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from pvdetect import __version__
from pvdetect.errors import DataError

USER_AGENT = f"pvdetect/{__version__}"
RETRY_STATUS = (429, 500, 502, 503, 504)
#: suffixes GDAL may probe over HTTP beside the ones of the assets actually read
RASTER_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF", ".jp2", ".JP2")


class NetworkError(DataError):
    """A remote address cannot be reached or answers with an error (exit code 2)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a remote address before giving up.

    Attributes:
        retries: Retries of a request after a dropped connection, a read timeout, HTTP 429
            or 5xx.
        connect_retries: Retries when no connection can be made at all (offline, refused):
            few, so that an offline run fails within seconds.
        backoff: First retry delay in seconds; it doubles on each further retry.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for the next bytes of an answer.
    """

    retries: int = 4
    connect_retries: int = 2
    backoff: float = 0.5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @property
    def timeout(self) -> tuple[float, float]:
        """The ``(connect, read)`` timeout that requests takes."""
        return (self.connect_timeout, self.read_timeout)

    def urllib3_retry(self) -> Retry:
        """The urllib3 retry configuration (for requests and pystac-client)."""
        return Retry(
            total=self.retries + self.connect_retries,
            connect=self.connect_retries,
            read=self.retries,
            status=self.retries,
            other=self.retries,
            allowed_methods=None,  # STAC searches by POST are safe to repeat
            status_forcelist=RETRY_STATUS,
            backoff_factor=self.backoff,
            backoff_max=30.0,
            raise_on_status=False,
        )


DEFAULT_POLICY = RetryPolicy()


def make_session(policy: RetryPolicy = DEFAULT_POLICY) -> requests.Session:
    """A requests session that retries as ``policy`` says and names pvdetect as its agent."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=policy.urllib3_retry())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def public_url(url: str) -> str:
    """``url`` without its query string and fragment (signed addresses carry tokens there)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def describe(exc: BaseException) -> str:
    """A short reason for a failed request: refused, timed out, dropped, DNS, TLS, ..."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, requests.exceptions.SSLError) or "certificate" in low:
        return "TLS/SSL failure"
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in low:
        return "timed out"
    if "name or service not known" in low or "nodename nor servname" in low:
        return "host name not found; offline or wrong address?"
    if "temporary failure in name resolution" in low or "getaddrinfo" in low:
        return "host name not found; offline or wrong address?"
    if "connection refused" in low or "failed to establish" in low:
        return "connection refused or host unreachable; offline or wrong address?"
    if "network is unreachable" in low or "no route to host" in low:
        return "network unreachable; offline?"
    if "too many 5" in low or "too many 429" in low or "too many error responses" in low:
        return "the server kept answering with errors"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "incompleteread" in low:
        return "connection dropped during the transfer"
    if "connection aborted" in low or "connection reset" in low or "remotedisconnected" in low:
        return "connection dropped"
    line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return line[:160]


def network_error(url: str, exc: BaseException, what: str = "cannot be reached") -> NetworkError:
    """A :class:`NetworkError` ``"URL: WHAT (REASON)"`` for a failed request."""
    return NetworkError(f"{public_url(url)}: {what} ({describe(exc)})")


def status_error(url: str, status: int, reason: str = "") -> NetworkError:
    """A :class:`NetworkError` for an HTTP error answer."""
    tail = f" {reason}" if reason else ""
    return NetworkError(f"{public_url(url)}: the server answered HTTP {status}{tail}")


def gdal_path(href: str) -> str:
    """The GDAL path of an asset: ``/vsicurl/`` for HTTP(S), ``/vsis3/`` for ``s3://``."""
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://") :]
    if href.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(href).path)
    return href


def gdal_options(hrefs: Iterable[str], policy: RetryPolicy = DEFAULT_POLICY) -> dict[str, str]:
    """GDAL configuration for range reads of cloud-optimised assets over HTTP.

    Retries with a doubling delay on HTTP 429/5xx and dropped connections, timeouts, no
    directory listing on open (a COG needs none), consecutive ranges merged into one request.
    ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` lists the suffixes of the assets to read, so GDAL
    never probes side-car files such as ``.aux.xml`` or ``.ovr`` over the network; an asset
    address without a suffix leaves the option unset (any address allowed).
    """
    suffixes: set[str] = set(RASTER_SUFFIXES)
    any_without = False
    for href in hrefs:
        name = urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1]
        if "." in name:
            suffixes.add(name[name.rindex(".") :])
        else:
            any_without = True
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MAX_RETRY": str(policy.retries),
        "GDAL_HTTP_RETRY_DELAY": f"{policy.backoff:g}",
        "GDAL_HTTP_TIMEOUT": f"{policy.read_timeout:g}",
        "GDAL_HTTP_CONNECTTIMEOUT": f"{policy.connect_timeout:g}",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_USERAGENT": USER_AGENT,
        "VSI_CACHE": "TRUE",
        "GDAL_NUM_THREADS": "1",
    }
    if not any_without:
        options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = ",".join(sorted(suffixes))
    return options
