"""Datasets shared by the synth tests (written once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvdetect.synth.dataset import SynthSummary, generate_dataset


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    """12 chips of 96 px and one odd-sized scene."""
    out = tmp_path_factory.mktemp("synth_small")
    summary = generate_dataset(out, chips=12, scenes=1, scene_size=150, seed=3, chip_size=96)
    return out, summary


@pytest.fixture(scope="session")
def moderate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample large enough for pixel statistics: 60 chips of 128 px, no scenes."""
    out = tmp_path_factory.mktemp("synth_moderate")
    generate_dataset(out, chips=60, scenes=0, seed=11, chip_size=128)
    return out
