"""The STAC catalogs pvdetect knows, and the item search on any STAC API.

``bdc``, ``earth-search`` and ``planetary-computer`` name a catalog and its default
Sentinel-2 collection; any other ``http(s)://`` address is a STAC API that needs
``--collection``. The search runs through pystac-client with a retrying, time-limited session
(:mod:`pvdetect.acquire.http`); failures become one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pystac
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO

from pvdetect.acquire.http import (
    DEFAULT_POLICY,
    USER_AGENT,
    NetworkError,
    RetryPolicy,
    describe,
    public_url,
    status_error,
)
from pvdetect.acquire.signing import PC_TOKEN_URL, NoSigner, PlanetaryComputerSigner, Signer
from pvdetect.errors import ConfigError, DataError

#: items fetched from a search at most, before choosing ``max_items`` of them
SEARCH_CAP = 2000
PAGE_SIZE = 100


@dataclass(frozen=True)
class Catalog:
    """A STAC API.

    Attributes:
        name: Short name (``bdc`` ...), or ``url`` for an address given by the user.
        url: Landing page of the API.
        default_collection: Collection used when ``--collection`` is not given.
        signing: ``"planetary-computer"`` when asset addresses must be signed.
        token_url: SAS token endpoint template of a signing catalog.
    """

    name: str
    url: str
    default_collection: str | None = None
    signing: str | None = None
    token_url: str | None = None


KNOWN_CATALOGS: dict[str, Catalog] = {
    "bdc": Catalog("bdc", "https://data.inpe.br/bdc/stac/v1", "S2-16D-2"),
    "earth-search": Catalog(
        "earth-search", "https://earth-search.aws.element84.com/v1", "sentinel-2-l2a"
    ),
    "planetary-computer": Catalog(
        "planetary-computer",
        "https://planetarycomputer.microsoft.com/api/stac/v1",
        "sentinel-2-l2a",
        signing="planetary-computer",
        token_url=PC_TOKEN_URL,
    ),
}


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def resolve_catalog(text: str, collection: str | None) -> tuple[Catalog, str]:
    """The catalog named or addressed by ``--catalog`` and the collection to search.

    Raises:
        ConfigError: Unknown name, or an address without ``--collection``.
    """
    name = text.strip()
    catalog = KNOWN_CATALOGS.get(name.lower())
    if catalog is None:
        if not name.startswith(("http://", "https://")):
            known = ", ".join(KNOWN_CATALOGS)
            raise ConfigError(f"--catalog: unknown catalog {name!r}; give {known} or a STAC URL")
        known_url = next((c for c in KNOWN_CATALOGS.values() if _same_url(c.url, name)), None)
        catalog = known_url or Catalog("url", name)
    chosen = collection or catalog.default_collection
    if not chosen:
        raise ConfigError(f"--collection: needed with a catalog URL ({name})")
    return catalog, chosen


def make_signer(catalog: Catalog, collection: str, policy: RetryPolicy = DEFAULT_POLICY) -> Signer:
    """The signer of a catalog's asset addresses (:class:`NoSigner` for unsigned catalogs)."""
    if catalog.signing == "planetary-computer":
        token_url = catalog.token_url or PC_TOKEN_URL
        # the planetary-computer package knows only the real token API
        return PlanetaryComputerSigner(
            collection, token_url, policy=policy, use_package=token_url == PC_TOKEN_URL
        )
    return NoSigner()


@dataclass
class SearchResult:
    """Items found for an area and dates.

    Attributes:
        items: The chosen items, oldest first.
        matched: How many items the search returned (up to :data:`SEARCH_CAP`).
        selection: How ``items`` were chosen among them.
    """

    items: list[pystac.Item]
    matched: int
    selection: str = "all"


def _api_error(url: str, exc: BaseException) -> NetworkError:
    status = getattr(exc, "status_code", None)
    if status:
        return status_error(url, int(status))
    return NetworkError(f"{public_url(url)}: cannot reach the STAC catalog ({describe(exc)})")


def open_client(catalog: Catalog, policy: RetryPolicy = DEFAULT_POLICY) -> Client:
    """Open a catalog's landing page with a retrying, time-limited session.

    Raises:
        NetworkError: The catalog cannot be reached or answers with an error.
        DataError: The address is not a STAC API.
    """
    stac_io = StacApiIO(
        headers={"User-Agent": USER_AGENT},
        timeout=policy.timeout,
        max_retries=policy.urllib3_retry(),
    )
    try:
        return Client.open(catalog.url, stac_io=stac_io)
    except APIError as exc:
        raise _api_error(catalog.url, exc) from None
    except (pystac.STACError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{catalog.url}: not a STAC API landing page ({describe(exc)})") from None


def search_items(
    catalog: Catalog,
    collection: str,
    bbox: tuple[float, float, float, float],
    start: date,
    end: date,
    max_items: int,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> SearchResult:
    """Items of ``collection`` that intersect ``bbox`` between two dates (both included).

    Where more than ``max_items`` match, the least cloudy ones (``eo:cloud_cover``, the
    scene's share) are taken. The result is ordered by time.

    Raises:
        ConfigError: The collection does not exist on the catalog.
        NetworkError: The catalog cannot be reached or fails during the search.
        DataError: The catalog is not a STAC API with item search.
    """
    client = open_client(catalog, policy)
    try:
        if client.get_collection(collection) is None:
            raise ConfigError(f"--collection: {collection!r} not found on {catalog.url}")
    except APIError as exc:
        if getattr(exc, "status_code", None) == 404:
            raise ConfigError(f"--collection: {collection!r} not found on {catalog.url}") from None
        raise _api_error(catalog.url, exc) from None
    except NotImplementedError:
        pass  # no collections endpoint: the search itself will tell
    window = f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z"
    try:
        search = client.search(
            collections=[collection],
            bbox=list(bbox),
            datetime=window,
            max_items=SEARCH_CAP,
            limit=PAGE_SIZE,
        )
        items = list(search.items())
    except APIError as exc:
        raise _api_error(catalog.url, exc) from None
    except NotImplementedError as exc:
        raise DataError(f"{catalog.url}: this STAC API offers no item search ({exc})") from None
    return _choose(items, max_items)


def _choose(items: list[pystac.Item], max_items: int) -> SearchResult:
    matched = len(items)
    selection = "all"
    if matched > max_items:

        def cloud(it: pystac.Item) -> float:
            value = it.properties.get("eo:cloud_cover")
            return float(value) if isinstance(value, int | float) else 101.0

        items = sorted(items, key=lambda it: (cloud(it), str(it.datetime), it.id))[:max_items]
        selection = f"the {max_items} of {matched} with the least eo:cloud_cover"
    items = sorted(
        items,
        key=lambda it: (str(it.datetime or it.properties.get("start_datetime", "")), it.id),
    )
    return SearchResult(items=items, matched=matched, selection=selection)
