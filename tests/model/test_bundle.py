"""Bundle save/load: round trip, zip form, safety, preprocessing, TTA, bad bundles."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from pvdetect.errors import BundleError
from pvdetect.model.bundle import (
    BundleMeta,
    UpscaleMeta,
    load_bundle,
    read_meta,
    save_bundle,
)
from pvdetect.model.factory import build_model

STATS = {
    "mean": [800.0, 700.0, 600.0, 2500.0],
    "std": [300.0, 250.0, 200.0, 900.0],
    "p2": [200.0, 200.0, 150.0, 800.0],
    "p98": [1800.0, 1500.0, 1300.0, 4500.0],
}


def _meta(**kw) -> BundleMeta:
    return BundleMeta(arch="unet", encoder="resnet18", band_stats=STATS, threshold=0.42, **kw)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", "resnet18", in_channels=4).eval()


def _raw(b: int = 2, h: int = 48, w: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    raw = 500 + 2000 * torch.rand(b, 4, h, w, generator=g)
    valid = torch.ones(b, h, w, dtype=torch.bool)
    return raw, valid


@pytest.mark.parametrize("name", ["bundle", "model.pvb"])
def test_round_trip_keeps_weights_and_meta(tmp_path: Path, model, name: str) -> None:
    path = save_bundle(tmp_path / name, model, _meta(val_metrics={"iou": 0.5}))
    b = load_bundle(path)
    assert b.meta.threshold == pytest.approx(0.42)
    assert b.meta.val_metrics == {"iou": 0.5}
    assert b.meta.created
    for k, v in model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert read_meta(path).arch == "unet"


def test_bundle_json_is_plain_and_weights_are_safetensors(tmp_path: Path, model) -> None:
    path = save_bundle(tmp_path / "b", model, _meta())
    data = json.loads((path / "bundle.json").read_text())
    for key in (
        "format_version",
        "arch",
        "encoder",
        "band_order",
        "input_scale",
        "band_stats",
        "threshold",
        "upscale",
        "tile_size",
        "overlap",
        "data_fingerprint",
        "val_metrics",
        "nodata",
    ):
        assert key in data
    assert data["band_order"] == ["Red", "Green", "Blue", "NIR"]
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "model.safetensors"]
    # a pickle in place of the weights is refused, never unpickled
    torch.save(model.state_dict(), path / "model.safetensors")
    with pytest.raises(BundleError, match="weights do not load"):
        load_bundle(path)


def test_predict_probs_matches_manual_preprocessing(tmp_path: Path, model) -> None:
    b = load_bundle(save_bundle(tmp_path / "b", model, _meta()))
    raw, valid = _raw()
    valid[0, :5, :] = False
    raw[0, :, :5, :] = -9999.0
    probs = b.predict_probs(raw, valid)
    assert probs.shape == (2, 48, 40) and probs.dtype == torch.float32
    assert torch.all(probs[0, :5] == 0)
    mean = torch.tensor(STATS["mean"]).view(1, 4, 1, 1)
    std = torch.tensor(STATS["std"]).view(1, 4, 1, 1)
    x = ((raw - mean) / std) * valid[:, None]
    x = torch.nn.functional.pad(x, (0, 24, 0, 16), mode="reflect")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = torch.sigmoid(model(x).float())[:, 0, :48, :40] * valid
    assert torch.allclose(probs, ref, atol=2e-2)


def test_tta_is_invariant_to_flips(tmp_path: Path, model) -> None:
    b = load_bundle(save_bundle(tmp_path / "b", model, _meta()))
    raw, valid = _raw(1, 64, 64)
    p = b.predict_probs(raw, valid, tta=True)
    p_flipped = b.predict_probs(torch.flip(raw, dims=(-1,)), valid, tta=True)
    assert torch.allclose(torch.flip(p_flipped, dims=(-1,)), p, atol=2e-2)
    assert not torch.allclose(p, b.predict_probs(raw, valid), atol=1e-4)


def test_upscaling_bundle_returns_native_or_upscaled_grid(tmp_path: Path, model) -> None:
    meta = _meta(upscale=UpscaleMeta(factor=2, method="bicubic"))
    b = load_bundle(save_bundle(tmp_path / "b", model, meta))
    raw, valid = _raw(1, 32, 32)
    assert b.predict_probs(raw, valid).shape == (1, 32, 32)
    assert b.predict_probs(raw, valid, native=False).shape == (1, 64, 64)


def test_bad_bundles_raise_one_line_errors(tmp_path: Path, model) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="bundle.json missing"):
        load_bundle(empty)
    junk = tmp_path / "junk.pvb"
    junk.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(junk)
    path = save_bundle(tmp_path / "b", model, _meta())
    data = json.loads((path / "bundle.json").read_text())
    data["format_version"] = 99
    (path / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="newer"):
        load_bundle(path)


KNOWN_MEMBERS = {"bundle.json", "model.safetensors", "sr_model.safetensors"}
UNEXPECTED_MEMBERS = ["../evil.txt", "/abs/evil.txt", "sub/evil.txt", "evil.txt", "x/../evil2.txt"]


def test_zip_bundle_never_extracts_unexpected_members(
    tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a .pvb reads no member but the known file names, and writes nothing else."""
    path = save_bundle(tmp_path / "m.pvb", model, _meta())
    with zipfile.ZipFile(path, "a") as zf:
        for name in UNEXPECTED_MEMBERS:
            zf.writestr(name, "x")
    # every way of getting at a member's bytes (extract, extractall, read) goes through open()
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy_open(self, name, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        if mode == "r":
            opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(self, name, mode, *args, **kwargs)

    # temporary folders live in a sandbox, and their contents are listed before they go
    sandbox = tmp_path / "tmp"
    sandbox.mkdir()
    listings: list[list[str]] = []

    class ListedTemporaryDirectory(tempfile.TemporaryDirectory):
        def cleanup(self) -> None:
            root = Path(self.name)
            listings.append(sorted(str(p.relative_to(root)) for p in root.rglob("*")))
            super().cleanup()

    monkeypatch.setattr(zipfile.ZipFile, "open", spy_open)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", ListedTemporaryDirectory)
    monkeypatch.setattr(tempfile, "tempdir", str(sandbox))
    monkeypatch.chdir(sandbox)
    b = load_bundle(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert "bundle.json" in opened and "model.safetensors" in opened
    assert set(opened) <= KNOWN_MEMBERS, opened
    for listing in listings:
        assert set(listing) <= KNOWN_MEMBERS, listing
    assert not list(tmp_path.rglob("evil*"))
    assert not Path("/abs/evil.txt").exists()
    assert list(sandbox.iterdir()) == []  # and the extraction folder is gone


def test_resolve_device_names_bad_devices() -> None:
    from pvdetect.device import resolve_device
    from pvdetect.errors import ConfigError

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="--device warp-drive"):
        resolve_device("warp-drive")
    with pytest.raises(ConfigError, match="--device meta"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
