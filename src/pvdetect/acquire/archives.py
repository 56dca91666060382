"""Safe extraction of dataset archives (zip or tar).

:func:`extract_archive` refuses the whole archive if any member would land outside the
target (absolute paths, ``..``, symbolic or hard links, devices), finds the dataset folder
inside it (the one holding ``{train,val,test}/input`` and ``labels``), extracts into a
temporary folder and renames the dataset's folders into place only when all went well.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pvdetect.errors import DataError, OutputError

CHUNK = 1 << 20
SPLITS = ("train", "val", "test")
_SKIP = re.compile(r"(^|/)(__MACOSX|\.DS_Store)(/|$)|(^|/)\._")


@dataclass(frozen=True)
class Member:
    """One regular file or folder of an archive, at a safe relative path."""

    name: str
    path: PurePosixPath
    is_dir: bool
    size: int


def _safe_path(name: str, archive: Path) -> PurePosixPath:
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise DataError(f"{archive}: member {name!r} has an absolute path; nothing extracted")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(
            f"{archive}: member {name!r} would land outside the folder; nothing extracted"
        )
    return PurePosixPath(*parts)


def _zip_members(zf: zipfile.ZipFile, archive: Path) -> list[Member]:
    out = []
    for info in zf.infolist():
        mode = (info.external_attr >> 16) & 0o170000
        if mode and mode not in (0o100000, 0o040000):  # 0o120000: a symbolic link
            raise DataError(
                f"{archive}: member {info.filename!r} is a link or special file; nothing extracted"
            )
        path = _safe_path(info.filename, archive)
        out.append(Member(info.filename, path, info.is_dir(), info.file_size))
    return out


def _tar_members(tf: tarfile.TarFile, archive: Path) -> list[Member]:
    out = []
    for m in tf.getmembers():
        if not (m.isfile() or m.isdir()):
            raise DataError(
                f"{archive}: member {m.name!r} is a link or special file; nothing extracted"
            )
        out.append(Member(m.name, _safe_path(m.name, archive), m.isdir(), m.size))
    return out


@contextlib.contextmanager
def _open_archive(
    archive: Path,
) -> Iterator[tuple[list[Member], Callable[[Member], Any]]]:
    """Members of a zip or tar archive (all checked) and an opener of their bytes."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            yield _zip_members(zf, archive), lambda m: zf.open(m.name)
        return
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError):
        raise DataError(f"{archive}: not a zip or tar archive") from None
    with tf:
        yield _tar_members(tf, archive), lambda m: tf.extractfile(m.name)


def dataset_root(members: list[Member], archive: Path) -> PurePosixPath:
    """The folder inside the archive that holds ``{train,val,test}/input`` and ``labels``.

    Raises:
        DataError: No such folder, or several.
    """
    roots = set()
    for m in members:
        parts = m.path.parts
        for i in range(1, len(parts)):
            if parts[i] in ("input", "labels") and parts[i - 1] in SPLITS:
                roots.add(PurePosixPath(*parts[: i - 1]))
    if not roots:
        raise DataError(f"{archive}: no {{train,val,test}}/input and labels folders in the archive")
    if len(roots) > 1:
        shown = ", ".join(sorted(str(r) or "." for r in roots))
        raise DataError(f"{archive}: several dataset folders in the archive ({shown})")
    return roots.pop()


def extract_archive(archive: Path, out_dir: Path) -> list[Path]:
    """Extract the dataset folders of ``archive`` into ``out_dir``; returns the folders made.

    Nothing is written unless every member is safe; extraction goes to a temporary folder in
    ``out_dir`` and its top-level entries are renamed into place at the end.

    Raises:
        DataError: Unsafe member, no dataset layout, corrupt archive.
        OutputError: A target folder exists already, or the disk is too small.
    """
    with _open_archive(archive) as (members, open_member):
        root = dataset_root(members, archive)
        chosen = [
            (m, m.path.relative_to(root))
            for m in members
            if m.path.is_relative_to(root) and m.path != root and not _SKIP.search(str(m.path))
        ]
        tops = sorted({rel.parts[0] for _, rel in chosen})
        for top in tops:
            if (out_dir / top).exists():
                raise OutputError(f"{out_dir / top}: exists already; give an empty folder")
        _check_space(out_dir, sum(m.size for m, _ in chosen))
        work = Path(tempfile.mkdtemp(prefix=".pvdetect-extract-", dir=out_dir))
        try:
            for m, rel in chosen:
                target = work.joinpath(*rel.parts)
                if m.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_member(m) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            made = []
            for top in tops:
                os.replace(work / top, out_dir / top)
                made.append(out_dir / top)
            return made
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataError(f"{archive}: corrupt archive ({exc})") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OutputError(
            f"{folder}: {needed / 2**20:.0f} MiB to extract but {free / 2**20:.0f} MiB free"
        )
