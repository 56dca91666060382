"""Shared test fixtures: the real Sentinel-2 chips and the CI rule for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AUSTRIA = (REPO / ".." / "shared" / "data" / "austria_s2").resolve()


@pytest.fixture(scope="session")
def austria_root() -> Path:
    """The real austria_s2 chips; under CI their absence fails the test instead of skipping."""
    if not (AUSTRIA / "train" / "input").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real data missing under CI: {AUSTRIA}")
        pytest.skip(f"real data not available: {AUSTRIA}")
    return AUSTRIA
