"""What a map folder holds and whether a run may continue in it.

``DIR/state/run.json`` (written before the first tile) holds the run's identity: the resolved
arguments that decide the outputs and the bundle's fingerprint. ``DIR/state/tiles/<id>.json``
(written by each task after its files are complete) says that a tile is done. A folder with a
``run.json`` holds a map run: a new run there needs ``--resume`` (same identity: only the
missing tiles are done) or ``--overwrite`` (which removes only what the map wrote).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from pvdetect import __version__
from pvdetect.errors import ConfigError, OutputError
from pvdetect.io import check_out_dir, clean_json, prepare_out_dir, write_json

__all__ = ["MAP_OUTPUTS", "RunState", "bundle_fingerprint"]

#: everything ``pvdetect map`` writes in its folder
MAP_OUTPUTS = (
    "state",
    "tiles",
    "mosaic",
    "prob.vrt",
    "prob.qml",
    "mask.vrt",
    "mask.qml",
    "plants.gpkg",
    "summary.csv",
    "quicklook.png",
)


def bundle_fingerprint(path: Path) -> str:
    """SHA-256 over a bundle's files (names and contents), or of a ``.pvb`` file."""
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """Dotted key of the first difference between two JSON values (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else prefix.rstrip(".") or "arguments"


class RunState:
    """The state folder of one map folder."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.dir = self.out / "state"
        self.run_file = self.dir / "run.json"
        self.tiles_dir = self.dir / "tiles"

    def start(self, identity: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
        """Check the folder, write ``run.json``; returns True when an earlier run continues.

        Raises:
            OutputError: the folder holds a map run and neither ``resume`` nor ``overwrite``
                was given, or it holds map outputs that no map run wrote.
            ConfigError: ``resume`` with different arguments or another bundle.
        """
        check_out_dir(self.out)
        identity = clean_json(identity)
        if self.run_file.is_file():
            if resume:
                try:
                    saved = json.loads(self.run_file.read_text())["identity"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise OutputError(f"{self.run_file}: unreadable ({exc})") from None
                diff = _first_difference(identity, saved)
                if diff:
                    raise ConfigError(
                        f"--resume: {diff} differs from the run in {self.out} "
                        "(use the same arguments and bundle, or --overwrite)"
                    )
                return True
            if not overwrite:
                raise OutputError(
                    f"{self.out}: holds a map run ({self.run_file.relative_to(self.out)}); "
                    "pass --resume to continue it or --overwrite to replace it"
                )
            self.remove_outputs()
        else:
            foreign = [n for n in MAP_OUTPUTS if (self.out / n).exists()]
            if foreign:
                raise OutputError(
                    f"{self.out / foreign[0]}: exists but no map run wrote it "
                    "(state/run.json missing); not replacing it"
                )
        prepare_out_dir(self.out)
        self.tiles_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            self.run_file,
            {
                "identity": identity,
                "pvdetect_version": __version__,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            },
        )
        return False

    def remove_outputs(self) -> None:
        """Remove what a map run wrote in the folder (and nothing else)."""
        for name in MAP_OUTPUTS:
            p = self.out / name
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
            except OSError as exc:
                raise OutputError(f"{p}: cannot remove ({exc.strerror or exc})") from None

    def done(self, tile_ids: set[str]) -> dict[str, dict[str, Any]]:
        """Records of the finished tiles among ``tile_ids`` whose files are all there."""
        out: dict[str, dict[str, Any]] = {}
        if not self.tiles_dir.is_dir():
            return out
        for f in self.tiles_dir.glob("*.json"):
            if f.stem not in tile_ids:
                continue
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            files = rec.get("files", {})
            if files and all((self.out / p).is_file() for p in files.values()):
                out[f.stem] = rec
        return out
