"""Dataset download: verified, resumed after a dropped connection, extracted safely."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from pvdetect.acquire.datasets import DATASETS
from pvdetect.acquire.download import CHUNK, fetch
from pvdetect.acquire.http import NetworkError, RetryPolicy
from pvdetect.cli import main
from pvdetect.data.raster import write_raster

from .stac_server import serve

NAME = "solar-plants-brazil"


def _tif_bytes(tmp: Path, array: np.ndarray) -> bytes:
    path = tmp / "x.tif"
    write_raster(path, array, crs="EPSG:32723", transform=Affine(10, 0, 5e5, 0, -10, 8.2e6))
    return path.read_bytes()


def _dataset_zip(tmp: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """A small archive in the Solar-Plants-Brazil layout, below a top folder."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        n = 0
        for split, count in (("train", 3), ("val", 2), ("test", 1)):
            for _ in range(count):
                n += 1
                img = rng.integers(100, 3000, size=(4, 64, 64)).astype(np.float32)
                mask = (rng.random((64, 64)) < 0.1).astype(np.float32)
                zf.writestr(f"solarplantsbrazil/{split}/input/img({n}).tif", _tif_bytes(tmp, img))
                zf.writestr(
                    f"solarplantsbrazil/{split}/labels/target({n}).tif", _tif_bytes(tmp, mask)
                )
        zf.writestr("solarplantsbrazil/README.md", "Solar plants of Brazil\n")
        zf.writestr("__MACOSX/solarplantsbrazil/._README.md", "junk")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _run(url: str, out: Path, *extra: str) -> int:
    return main(["download", NAME, str(out), "--url", url, *extra])


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, bytes, str]:
    root = tmp_path / "srv"
    root.mkdir()
    data = _dataset_zip(tmp_path)
    (root / "spb.zip").write_bytes(data)
    return root, data, hashlib.sha256(data).hexdigest()


def test_good_archive_is_verified_extracted_and_reused(
    archive: tuple[Path, bytes, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, sha = archive
    out = tmp_path / "data"
    with serve(root) as srv:
        assert _run(srv.file_url("spb.zip"), out, "--sha256", sha.upper()) == 0
        assert f"sha256 {sha} (verified)" in capsys.readouterr().out
        for split, n in (("train", 3), ("val", 2), ("test", 1)):
            assert len(list((out / split / "input").glob("img(*).tif"))) == n
            assert len(list((out / split / "labels").glob("target(*).tif"))) == n
        assert (out / "README.md").is_file() and not (out / "__MACOSX").exists()
        assert not list(out.glob("*.part*"))
        assert json.loads((out / ".pvdetect_download.json").read_text())["sha256"] == sha
        seen = len(srv.state.requests)
        assert _run(srv.file_url("spb.zip"), out, "--sha256", sha) == 0
        assert "there already" in capsys.readouterr().out
        assert len(srv.state.requests) == seen
    assert main(["check", str(out)]) == 0


def test_checksum_mismatch_extracts_nothing(
    archive: tuple[Path, bytes, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, sha = archive
    out = tmp_path / "data"
    with serve(root) as srv:
        assert _run(srv.file_url("spb.zip"), out, "--sha256", "0" * 64) == 2
    err = capsys.readouterr().err
    assert err.startswith("pvdetect download: error: ") and len(err.strip().splitlines()) == 1
    assert f"checksum mismatch (expected {'0' * 64}, got {sha})" in err
    assert sorted(p.name for p in out.iterdir()) == []  # no data, no partial download


def test_dropped_connection_resumes_with_a_range_request(
    archive: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, data, sha = archive
    out = tmp_path / "data"
    half = len(data) // 2
    with serve(root) as srv:
        srv.state.drop_after["spb.zip"] = half
        assert _run(srv.file_url("spb.zip"), out, "--sha256", sha) == 0
        ranges = [h.get("Range") for m, p, h in srv.state.requests if p.endswith("spb.zip")]
    kept = half // CHUNK * CHUNK  # whole chunks written before the drop
    assert len(data) > 3 * CHUNK and kept > 0
    assert ranges == [None, f"bytes={kept}-"]
    assert (out / "train" / "input" / "img(1).tif").is_file()


def test_a_partial_download_of_an_earlier_run_is_resumed(
    archive: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, data, sha = archive
    out = tmp_path / "data"
    with serve(root) as srv:
        url = srv.file_url("spb.zip")
        part = out / "spb.zip.part"
        out.mkdir()
        srv.state.drop_after["spb.zip"] = 2 * CHUNK + 100
        with pytest.raises(NetworkError, match=f"download failed.*{2 * CHUNK} bytes kept"):
            fetch(url, part, policy=RetryPolicy(retries=0, backoff=0.01))
        assert part.stat().st_size == 2 * CHUNK
        served = srv.state.served("spb.zip")
        assert _run(url, out, "--sha256", sha) == 0
        assert srv.state.served("spb.zip") - served == len(data) - 2 * CHUNK
        last = [h for m, p, h in srv.state.requests if p.endswith("spb.zip")][-1]
        assert last["Range"] == f"bytes={2 * CHUNK}-" and last["If-Range"].startswith('"')
    # a file that changed on the server since is fetched again from the start
    out2 = tmp_path / "data2"
    out2.mkdir()
    (out2 / "spb.zip.part").write_bytes(data[:500])
    (out2 / "spb.zip.part.json").write_text(json.dumps({"url": url, "etag": '"old"'}))
    with serve(root) as srv:
        url = srv.file_url("spb.zip")
        (out2 / "spb.zip.part.json").write_text(json.dumps({"url": url, "etag": '"old"'}))
        assert _run(url, out2, "--sha256", sha) == 0
        assert srv.state.served("spb.zip") == len(data)


@pytest.mark.parametrize(
    "member",
    ["../evil.txt", "/tmp/pvdetect-abs-evil.txt", "solarplantsbrazil/train/../../../evil.txt"],
)
def test_members_outside_the_folder_are_refused(
    member: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    data = _dataset_zip(tmp_path, {member: b"owned"})
    (root / "bad.zip").write_bytes(data)
    out = tmp_path / "a" / "data"
    with serve(root) as srv:
        rc = _run(srv.file_url("bad.zip"), out, "--sha256", hashlib.sha256(data).hexdigest())
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "nothing extracted" in err
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/pvdetect-abs-evil.txt").exists()
    assert not (out / "train").exists()


def test_links_are_refused_in_zip_and_tar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    link = zipfile.ZipInfo("solarplantsbrazil/train/input/img(9).tif")
    link.external_attr = 0o120777 << 16  # a symbolic link to /etc/passwd
    buf = io.BytesIO(_dataset_zip(tmp_path))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(link, "/etc/passwd")
    (root / "link.zip").write_bytes(buf.getvalue())
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        info = tarfile.TarInfo("ds/train/input/img(1).tif")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"abcd"))
        hard = tarfile.TarInfo("ds/train/labels/target(1).tif")
        hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
        tf.addfile(hard)
    (root / "link.tar.gz").write_bytes(tbuf.getvalue())
    with serve(root) as srv:
        for name in ("link.zip", "link.tar.gz"):
            out = tmp_path / name
            assert _run(srv.file_url(name), out, "--no-verify") == 2
            err = capsys.readouterr().err
            assert "is a link or special file; nothing extracted" in err, err
            assert not (out / "train").exists()


def test_unknown_checksum_needs_sha256_or_no_verify(
    archive: tuple[Path, bytes, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data, sha = archive
    assert DATASETS[NAME].sha256 is None  # the publisher gives none
    out = tmp_path / "data"
    with serve(root) as srv:
        url = srv.file_url("spb.zip")
        assert _run(url, out) == 2
        err = capsys.readouterr().err
        assert f"has SHA-256 {sha}" in err and f"--sha256 {sha}" in err and "--no-verify" in err
        assert len(err.strip().splitlines()) == 1
        assert not (out / "train").exists() and (out / "spb.zip.part").stat().st_size == len(data)
        served = srv.state.served("spb.zip")
        assert _run(url, out, "--sha256", sha) == 0  # no second download
        assert srv.state.served("spb.zip") == served
        out2 = tmp_path / "data2"
        assert _run(url, out2, "--no-verify") == 0
        assert "NOT verified" in capsys.readouterr().out
        assert (out2 / "val" / "labels" / "target(4).tif").is_file()
        assert json.loads((out2 / ".pvdetect_download.json").read_text())["verified"] is False


def test_corrupt_archive_and_existing_data_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    data = bytearray(_dataset_zip(tmp_path))
    data[200:260] = b"\0" * 60  # inside the first member's deflate stream
    (root / "broken.zip").write_bytes(bytes(data))
    out = tmp_path / "data"
    with serve(root) as srv:
        rc = _run(srv.file_url("broken.zip"), out, "--sha256", hashlib.sha256(data).hexdigest())
        err = capsys.readouterr().err
        assert rc == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1
        assert sorted(p.name for p in out.iterdir()) == ["broken.zip.part", "broken.zip.part.json"]
        (out / "train").mkdir()
        assert _run(srv.file_url("broken.zip"), out, "--no-verify") == 2
        assert "train: exists already" in capsys.readouterr().err
    assert main(["download", "nope", str(out)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_a_tar_archive_without_top_folder_is_extracted(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    with zipfile.ZipFile(io.BytesIO(_dataset_zip(tmp_path))) as zf:
        members = {
            n.split("/", 1)[1]: zf.read(n)
            for n in zf.namelist()
            if n.startswith("solarplantsbrazil/") and not n.endswith("/")
        }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (root / "spb.tar.gz").write_bytes(buf.getvalue())
    out = tmp_path / "data"
    with serve(root) as srv:
        sha = hashlib.sha256(buf.getvalue()).hexdigest()
        assert _run(srv.file_url("spb.tar.gz"), out, "--sha256", sha) == 0
    assert sorted(p.name for p in (out / "train" / "labels").iterdir()) == [
        "target(1).tif",
        "target(2).tif",
        "target(3).tif",
    ]
    assert main(["check", str(out)]) == 0


def test_offline_download_is_one_line_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "new" / "data"
    assert _run(f"http://127.0.0.1:{port}/spb.zip", out, "--no-verify") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pvdetect download: error: http://127.0.0.1:{port}/spb.zip: download")
    assert "offline" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()
