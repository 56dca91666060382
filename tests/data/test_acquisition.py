"""Tests of pvdetect.data.acquisition: scene dates from metadata or file names."""

from __future__ import annotations

import pytest

from pvdetect.data.acquisition import acquisition_date


@pytest.mark.parametrize(
    ("tags", "name", "expected"),
    [
        ({"DATATAKE_1_DATATAKE_SENSING_START": "2022-01-05T10:13:21.024Z"}, "x.tif", "2022-01-05"),
        ({"ACQUISITION_DATE": "20200301"}, "y_20220101.tif", "2020-03-01"),  # metadata first
        ({}, "S2A_MSIL2A_20220105T101321_N0400_R022_T33UXP_20220106T120000.tif", "2022-01-05"),
        ({}, "T33UXP_20210714T100031_B04_10m.tif", "2021-07-14"),
        ({}, "scene_2021-07-14.tif", "2021-07-14"),
        ({"TIFFTAG_DATETIME": "2023:02:01 10:00:00"}, "x.tif", "2023-02-01"),
        ({"TIFFTAG_DATETIME": "2023:02:01 10:00:00"}, "x_20210101.tif", "2021-01-01"),
        ({}, "scene.tif", ""),
        ({}, "a12345678.tif", ""),  # not a date
        ({}, "x_20231301.tif", ""),  # month 13
        ({"ACQUISITION_DATE": "unknown"}, "scene.tif", ""),
    ],
)
def test_acquisition_date(tags: dict, name: str, expected: str) -> None:
    assert acquisition_date(tags, name) == expected
