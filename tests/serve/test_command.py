"""Tests of ``pvdetect serve``'s command line: refused bindings and options exit 2 at once."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from pvdetect.cli import main


def _serve(capsys, *args: str) -> tuple[int, str]:
    rc = main(["serve", *args])
    return rc, capsys.readouterr().err.strip()


def test_binding_all_addresses_needs_a_token(capsys, nir_bundle: Path, scenes_dir: Path) -> None:
    rc, err = _serve(
        capsys, "--bundle", str(nir_bundle), "--source", f"scenes:{scenes_dir}", "--host", "0.0.0.0"
    )
    assert rc == 2
    assert err == (
        "pvdetect serve: error: --host 0.0.0.0: binding an address other than 127.0.0.1 needs "
        "--token (every API call must then carry it)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token", "short"], "--token: use at least 16 characters"),
        (["--max-km", "0"], "--max-km 0: must be > 0"),
        (["--workers", "0"], "--workers 0: must be at least 1"),
        (["--port", "70000"], "--port 70000: must lie in [1, 65535]"),
        (["--source", "nowhere"], "--source 'nowhere': give bdc, earth-search"),
        (["--source", "scenes:/no/such/dir"], "--source scenes:/no/such/dir: /no/such/dir is not"),
        (["--source", "stac:ftp://x"], "--source stac:ftp://x: expected stac:http(s)://"),
        (["--source", "stac:http://127.0.0.1:9/stac"], "--collection: needed with a catalog URL"),
    ],
)
def test_bad_options_exit_2(capsys, nir_bundle: Path, args: list[str], message: str) -> None:
    rc, err = _serve(capsys, "--bundle", str(nir_bundle), *args)
    assert rc == 2
    assert err.startswith("pvdetect serve: error: " + message), err
    assert "\n" not in err


def test_a_broken_bundle_exits_2(capsys, tmp_path: Path, scenes_dir: Path) -> None:
    rc, err = _serve(capsys, "--bundle", str(tmp_path / "none"), "--source", f"scenes:{scenes_dir}")
    assert rc == 2 and err.endswith("none: bundle not found")


def test_a_port_in_use_exits_2(capsys, nir_bundle: Path, scenes_dir: Path, tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc, err = _serve(
            capsys,
            "--bundle",
            str(nir_bundle),
            "--source",
            f"scenes:{scenes_dir}",
            "--port",
            str(port),
            "--jobs-dir",
            str(tmp_path / "jobs"),
        )
    assert rc == 2 and f"--port {port}: cannot listen on 127.0.0.1:{port}" in err


def test_without_the_serve_extra(capsys, monkeypatch, nir_bundle: Path) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    rc, err = _serve(capsys, "--bundle", str(nir_bundle))
    assert rc == 2
    assert err == (
        "pvdetect serve: error: pvdetect serve needs FastAPI and uvicorn: "
        "pip install 'pvdetect[serve]'"
    )
