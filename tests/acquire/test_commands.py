"""The three commands stay light: none of them imports torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

PROGRAM = """
import sys
from pvdetect.cli import main
import pvdetect.acquire.pipeline, pvdetect.acquire.automask, pvdetect.acquire.download
for argv in (["acquire", "--help"], ["automask", "--help"], ["download", "--help"],
             ["download", "nope", "x"]):
    try:
        main(argv)
    except SystemExit:
        pass
print("torch" in sys.modules, "lightning" in sys.modules)
"""


def test_commands_do_not_import_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stdout + out.stderr
    assert "--catalog" in out.stdout and "--nir-max" in out.stdout and "--sha256" in out.stdout
