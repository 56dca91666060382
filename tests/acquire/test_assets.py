"""Band, scene classification and offset resolution from STAC items of several catalogs."""

from __future__ import annotations

from typing import Any

import pystac
import pytest

from pvdetect.acquire.assets import (
    AssetError,
    processing_baseline,
    radiometry,
    resolve_item,
    solar_day,
)

from .conftest import Scene, make_items
from .stac_server import serve

COG = "image/tiff; application=geotiff; profile=cloud-optimized"


def _item(assets: dict[str, Any], **props: Any) -> pystac.Item:
    return pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": "x",
            "bbox": [-48.0, -16.0, -47.0, -15.0],
            "geometry": None,
            "properties": {"datetime": "2023-07-05T13:20:00Z", **props},
            "assets": assets,
            "links": [],
        }
    )


def _asset(href: str, **extra: Any) -> dict[str, Any]:
    return {"href": href, "type": COG, "roles": ["data"], **extra}


@pytest.mark.parametrize("style", ["bdc", "earth-search", "pc"])
def test_catalog_styles_resolve_to_the_same_bands(style: str, scene: Scene) -> None:
    with serve(scene.root) as server:
        items = [pystac.Item.from_dict(d) for d in make_items(scene, server, style)]
    resolved = [resolve_item(it) for it in items]
    for it in resolved:
        assert [b.band for b in it.bands] == ["red", "green", "blue", "nir"]
        assert [b.href.rsplit("/", 1)[-1] for b in it.bands] == [
            "red.tif",
            "green.tif",
            "blue.tif",
            "nir.tif",
        ]
        assert it.scl is not None and it.scl.href.endswith("scl.tif")
        assert all(b.scale == pytest.approx(1e-4) for b in it.bands)
    assert [it.bands[0].offset for it in resolved] == [0.0, -0.1, -0.1]
    assert [it.solar_day for it in resolved] == ["2023-07-05", "2023-07-15", "2023-07-25"]


def test_common_names_find_bands_under_any_key_and_cogs_beat_jp2() -> None:
    assets = {
        f"{k}-jp2": {
            "href": f"https://x/{k}.jp2",
            "type": "image/jp2",
            "roles": ["data"],
            "eo:bands": [{"common_name": k}],
        }
        for k in ("red", "green", "blue", "nir")
    }
    for k in ("red", "green", "blue", "nir"):
        assets[f"band_{k}"] = _asset(f"https://x/{k}.tif", **{"eo:bands": [{"common_name": k}]})
    assets["nir08"] = _asset("https://x/b8a.tif", **{"eo:bands": [{"common_name": "nir08"}]})
    it = resolve_item(_item(assets))
    assert [b.key for b in it.bands] == ["band_red", "band_green", "band_blue", "band_nir"]
    assert it.scl is None
    # JPEG 2000 only: read as a last resort; an XML "band" never
    jp2_only = {k: a for k, a in assets.items() if k.endswith("-jp2")}
    jp2_only["red-meta"] = {
        "href": "https://x/red.xml",
        "type": "application/xml",
        "roles": ["data"],
        "eo:bands": [{"common_name": "red"}],
    }
    it = resolve_item(_item(jp2_only))
    assert [b.key for b in it.bands] == ["red-jp2", "green-jp2", "blue-jp2", "nir-jp2"]
    stac11 = {
        k: _asset(f"https://x/{k}.tif", bands=[{"eo:common_name": k, "raster:scale": 2e-4}])
        for k in ("r", "g", "b", "n")
    }
    names = dict(zip(("r", "g", "b", "n"), ("red", "green", "blue", "nir"), strict=True))
    stac11 = {
        k: {**a, "bands": [{**a["bands"][0], "eo:common_name": names[k]}]}
        for k, a in stac11.items()
    }
    it = resolve_item(_item(stac11))
    assert [b.scale for b in it.bands] == [2e-4] * 4


def test_missing_band_is_an_asset_error() -> None:
    with pytest.raises(AssetError, match="no asset for blue, nir"):
        resolve_item(_item({"B04": _asset("a.tif"), "B03": _asset("b.tif")}))


def _radiometry(asset: dict[str, Any], **props: Any) -> tuple[float, float, str]:
    return radiometry(props, pystac.Asset.from_dict(asset))


def test_offset_rules() -> None:
    es_offset = {"href": "a", "raster:bands": [{"scale": 0.0001, "offset": -0.1}]}
    # raster:bands is applied as declared
    assert _radiometry(es_offset)[:2] == (0.0001, -0.1)
    # ... except where Earth Search says it already removed the offset from the pixels
    s, o, src = _radiometry(es_offset, **{"earthsearch:boa_offset_applied": True})
    assert (s, o) == (0.0001, 0.0) and "boa_offset_applied" in src
    # no raster:bands: the processing baseline decides
    assert _radiometry({"href": "a"}, **{"s2:processing_baseline": "04.00"})[:2] == (1e-4, -0.1)
    assert _radiometry({"href": "a"}, **{"s2:processing_baseline": "05.10"})[:2] == (1e-4, -0.1)
    assert _radiometry({"href": "a"}, **{"s2:processing_baseline": "03.01"})[:2] == (1e-4, 0.0)
    assert _radiometry({"href": "a"}, **{"sentinel:processing_baseline": "4.0"})[1] == -0.1
    assert _radiometry({"href": "a"})[:2] == (1e-4, 0.0)
    # a declared offset of 0 wins over the baseline; BDC's scale lives in eo:bands
    zero = {"href": "a", "raster:bands": [{"scale": 0.0001, "offset": 0.0}]}
    assert _radiometry(zero, **{"s2:processing_baseline": "05.00"})[1] == 0.0
    bdc = {"href": "a", "eo:bands": [{"name": "B04", "common_name": "red", "scale": 0.0001}]}
    s, o, src = _radiometry(bdc)
    assert (s, o) == (0.0001, 0.0) and "eo:bands" in src


def test_baseline_and_solar_day() -> None:
    assert processing_baseline({"s2:processing_baseline": "04.00"}) == 4.0
    assert processing_baseline({"s2:processing_baseline": "N0510"}) is None
    assert processing_baseline({}) is None
    from datetime import UTC, datetime

    late = datetime(2023, 7, 5, 23, 30, tzinfo=UTC)
    assert solar_day(late, -47.9) == "2023-07-05"
    assert solar_day(late, 30.0) == "2023-07-06"


def test_composites_without_datetime_use_start_datetime() -> None:
    assets = {k: _asset(f"{k}.tif") for k in ("B04", "B03", "B02", "B08")}
    item = _item(assets)
    item.datetime = None
    item.properties["datetime"] = None
    item.properties["start_datetime"] = "2023-07-12T00:00:00Z"
    item.properties["end_datetime"] = "2023-07-27T23:59:59Z"
    resolved = resolve_item(item)
    assert resolved.datetime.isoformat() == "2023-07-12T00:00:00+00:00"
    assert resolved.solar_day == "2023-07-12"  # the period, not the solar day at -47.5
    single = _item(assets)
    single.datetime = resolved.datetime  # 00:00 UTC is 20:50 the day before at -47.5
    assert resolve_item(single).solar_day == "2023-07-11"
