"""Reading sidecars back: only this format, and only chips named as this acquisition's."""

from __future__ import annotations

import json
from pathlib import Path

from pvdetect.acquire.sidecar import FORMAT, chip_files, read_sidecar


def test_read_sidecar_wants_the_format(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    assert read_sidecar(p) is None
    p.write_text("{not json")
    assert read_sidecar(p) is None
    p.write_text(json.dumps({"format": "other"}))
    assert read_sidecar(p) is None
    p.write_text(json.dumps({"format": FORMAT, "chips": []}))
    assert read_sidecar(p) == {"format": FORMAT, "chips": []}


def test_chip_files_never_leave_the_chip_names(tmp_path: Path) -> None:
    doc = {
        "chips": [
            {"file": "images/plant_1.tif"},
            {"file": "images/plant_12.tif"},
            {"file": "../../etc/passwd"},
            {"file": "/etc/passwd"},
            {"file": "images/other_1.tif"},
            {"file": "images/plant_1.tif/../../x"},
            {"file": 3},
            "images/plant_2.tif",
        ]
    }
    assert chip_files(doc, tmp_path, "plant") == [
        tmp_path / "images" / "plant_1.tif",
        tmp_path / "images" / "plant_12.tif",
    ]
    assert chip_files({"chips": "x"}, tmp_path, "plant") == []
    assert chip_files(None, tmp_path, "plant") == []
    assert chip_files({"chips": [{"file": "images/a.b_1.tif"}]}, tmp_path, "a.b") == [
        tmp_path / "images" / "a.b_1.tif"
    ]
    assert chip_files({"chips": [{"file": "images/aXb_1.tif"}]}, tmp_path, "a.b") == []
