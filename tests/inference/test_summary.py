"""Tests of pvdetect.inference.summary: rows merged by scene, never lost, never truncated."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pvdetect.errors import OutputError
from pvdetect.inference.predict import SceneResult
from pvdetect.inference.summary import SUMMARY_FIELDS, scene_line, update_summary


def _res(name: str, plants: int) -> SceneResult:
    p = Path(name)
    return SceneResult(p, 10, 20, plants, plants * 1.5, 2.0, 4, p, p, p, date="2022-01-05",
                       input_check="ok", threshold=0.42, model="unet/resnet18 b")  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_rows_are_merged_by_scene(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    update_summary(path, [_res("a.tif", 1), _res("b.tif", 2)])
    update_summary(path, [_res("c.tif", 3)])
    update_summary(path, [_res("a.tif", 7)])
    rows = _rows(path)
    assert [(r["scene"], r["plants"]) for r in rows] == [("a.tif", "7"), ("b.tif", "2"),
                                                          ("c.tif", "3")]  # fmt: skip
    assert list(rows[0]) == list(SUMMARY_FIELDS)
    assert rows[0]["threshold"] == "0.42" and rows[0]["date"] == "2022-01-05"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_older_summary_keeps_its_rows_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    path.write_text("scene,plants,total_ha,seconds,width,height,note\nold.tif,5,1.0,3.0,9,9,x\n")
    update_summary(path, [_res("new.tif", 1)])
    rows = _rows(path)
    assert rows[0]["scene"] == "old.tif" and rows[0]["note"] == "x" and rows[0]["model"] == ""
    assert rows[1]["scene"] == "new.tif" and rows[1]["note"] == ""


def test_a_file_that_is_no_summary_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    path.write_text("something,else\n1,2\n")
    with pytest.raises(OutputError, match="summary.csv: not a pvdetect summary"):
        update_summary(path, [_res("a.tif", 1)])
    assert path.read_text() == "something,else\n1,2\n"


def test_scene_line() -> None:
    assert scene_line(_res("a.tif", 2)) == "a.tif: 10x20 px, 4 tiles, 2 plants, 3.00 ha, 2.0 s"
    assert scene_line(_res("a.tif", 2), 1, 3).endswith("[1/3]")
