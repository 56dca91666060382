"""Tests of pvdetect.serve.security: download paths, binding rules, Host names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pvdetect.errors import ConfigError
from pvdetect.serve.security import PathRefused, check_binding, host_name, is_loopback, job_file


@pytest.fixture
def job(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs" / "JOB"
    (folder / "layers").mkdir(parents=True)
    (folder / "area.tif").write_bytes(b"tif")
    (folder / "layers" / "mask.png").write_bytes(b"png")
    (tmp_path / "jobs" / "OTHER").mkdir()
    (tmp_path / "jobs" / "OTHER" / "area.tif").write_bytes(b"other job")
    (tmp_path / "secret").write_text("secret")
    return folder


def test_files_inside_the_job(job: Path) -> None:
    assert job_file(job, "area.tif") == (job / "area.tif").resolve()
    assert job_file(job, "layers/mask.png") == (job / "layers" / "mask.png").resolve()


@pytest.mark.parametrize(
    "name",
    [
        "../OTHER/area.tif",
        "layers/../area.tif",
        "..",
        "./area.tif",
        "/etc/passwd",
        "layers//mask.png",
        "..\\OTHER\\area.tif",
        "area.tif\x00.png",
        ".area.part.tif",
        "",
        "a b.tif",
    ],
)
def test_malformed_names_are_refused(job: Path, name: str) -> None:
    with pytest.raises(PathRefused) as err:
        job_file(job, name)
    assert err.value.status == 400


@pytest.mark.parametrize(
    "raw", [b"/files/..%2Fx", b"/files/%2e%2e/x", b"/files/a%5Cb", b"/files/a%00", b"/f/%2F"]
)
def test_encoded_separators_are_refused(job: Path, raw: bytes) -> None:
    with pytest.raises(PathRefused) as err:
        job_file(job, "area.tif", raw)
    assert err.value.status == 400


def test_symlinks_leaving_the_folder_are_refused(job: Path, tmp_path: Path) -> None:
    (job / "out.txt").symlink_to(tmp_path / "secret")
    (job / "other").symlink_to(tmp_path / "jobs" / "OTHER")
    (job / "inside.tif").symlink_to(job / "area.tif")
    (job / "loop").symlink_to(job / "loop")
    for name in ("out.txt", "other/area.tif"):
        with pytest.raises(PathRefused) as err:
            job_file(job, name)
        assert err.value.status == 403, name
    assert job_file(job, "inside.tif") == (job / "area.tif").resolve()
    with pytest.raises(PathRefused) as err:
        job_file(job, "loop")
    assert err.value.status in (403, 404)


def test_missing_files_and_folders_are_404(job: Path) -> None:
    for name in ("none.tif", "layers", "layers/none.png", "area.tif/x"):
        with pytest.raises(PathRefused) as err:
            job_file(job, name)
        assert err.value.status == 404, name


def test_binding_rules() -> None:
    check_binding("127.0.0.1", None)
    check_binding("localhost", None)
    check_binding("::1", None)
    check_binding("0.0.0.0", "x" * 16)
    with pytest.raises(ConfigError, match=r"--host 0\.0\.0\.0: binding an address other"):
        check_binding("0.0.0.0", None)
    with pytest.raises(ConfigError, match="--host 192.168.1.5"):
        check_binding("192.168.1.5", None)
    with pytest.raises(ConfigError, match="--token: use at least 16 characters"):
        check_binding("127.0.0.1", "short")


def test_host_names() -> None:
    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("LocalHost") == "localhost"
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("localhost.example.com")
    assert not is_loopback(host_name("127.0.0.1.nip.io:80"))


def test_job_file_never_reads_outside_even_for_absolute_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "JOB").mkdir(parents=True)
    (real / "JOB" / "a.tif").write_bytes(b"a")
    os.symlink(real, tmp_path / "jobs")  # the jobs folder itself may be a symlink
    assert job_file(tmp_path / "jobs" / "JOB", "a.tif").read_bytes() == b"a"
