"""Write the legacy-bundle fixture: a bundle of format 1, a scene, and what predict made of it.

Run from the repository root (it rewrites ``tests/data/bundles/``)::

    PYTHONPATH=src:. python tests/data/bundles/make_legacy_bundle.py

Outputs, all committed:

* ``v1/``: a bundle folder (``bundle.json`` + ``model.safetensors``) written by
  :func:`pvdetect.model.bundle.save_bundle` of pvdetect 0.1.0: a LinkNet with timm's
  ``test_efficientnet`` encoder (94,971 parameters, 0.4 MB: tracked files stay under 1 MiB;
  a U-Net's decoder alone is over 4 MB), trained for a few steps on the scene so that its BatchNorm
  statistics and weights are not the initial ones;
* ``scene.tif``: 64 x 64 px, 4 bands (R, G, B, NIR reflectance x 10000, nodata -9999) with
  plants that are dark in NIR and a nodata corner;
* ``expected_prob.npy``: the probabilities ``pvdetect predict --device cpu`` wrote for the scene
  (float32, -9999 at nodata), and ``expected.json``: how they were made.

``tests/model/test_legacy_bundle.py`` loads ``v1/`` with the current code and checks that it
still predicts these probabilities. Regenerate only on purpose: a new bundle format gets a new
folder (``v2/``) and this one stays. Everything is seeded and ``created`` is fixed, so running the
script again gives the same files (``expected_prob.npy`` on the same CPU kind).
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pvdetect import __version__
from pvdetect.cli import main as pvdetect_main
from pvdetect.data.raster import DEFAULT_NODATA, read_raster
from pvdetect.device import autocast_dtype
from pvdetect.model.bundle import BundleMeta, save_bundle
from pvdetect.model.factory import build_model
from pvdetect.model.losses import build_loss
from pvdetect.model.transforms import normalize
from tests.fixtures import grid, plant_pattern, write_scene

HERE = Path(__file__).resolve().parent
ARCH = "linknet"
ENCODER = "tu-test_efficientnet"
SEED = 0
SIZE = 64
CREATED = "2025-01-01T00:00:00+00:00"
#: the scene's grid: 10 m pixels in UTM 33N near 15.07 E, 47.85 N
TRANSFORM = grid(500_010.0, 5_300_020.0)


def make_scene() -> tuple[np.ndarray, np.ndarray]:
    """Image ``[4, 64, 64]`` with three plants dark in NIR and nodata corner, and its PV mask."""
    image, mask = plant_pattern(SEED, SIZE, plants=(3, 3), side=(8, 16))
    image[:, :6, :10] = DEFAULT_NODATA  # a nodata corner
    image[2, 40, 20] = DEFAULT_NODATA  # one band invalid: the pixel is nodata
    return image, mask[0]


def band_stats(image: np.ndarray) -> dict[str, list[float]]:
    """Mean, std, 2nd and 98th percentile of the valid pixels per band."""
    valid = (image != DEFAULT_NODATA).all(axis=0)
    v = image[:, valid].astype(np.float64)
    return {
        "mean": [round(float(x), 3) for x in v.mean(axis=1)],
        "std": [round(float(x), 3) for x in v.std(axis=1)],
        "p2": [round(float(x), 3) for x in np.percentile(v, 2, axis=1)],
        "p98": [round(float(x), 3) for x in np.percentile(v, 98, axis=1)],
    }


def train(image: np.ndarray, mask: np.ndarray, stats: dict[str, list[float]]) -> torch.nn.Module:
    """A few float32 Adam steps on random 32 px crops of the scene (deterministic on CPU)."""
    torch.manual_seed(SEED)
    model = build_model(ARCH, ENCODER, in_channels=4, weights=None)
    raw = torch.from_numpy(image)[None]
    valid = (raw != DEFAULT_NODATA).all(dim=1)
    x = normalize(raw, valid, stats["mean"], stats["std"])
    target = torch.from_numpy(mask)[None].to(torch.uint8)
    loss_fn = build_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(30):
        ys, xs = torch.randint(0, SIZE - 32 + 1, (2, 4), generator=g).tolist()
        crops = [(y, x0) for y, x0 in zip(ys, xs, strict=True)]
        xb = torch.cat([x[..., y : y + 32, x0 : x0 + 32] for y, x0 in crops])
        tb = torch.cat([target[..., y : y + 32, x0 : x0 + 32] for y, x0 in crops])
        vb = torch.cat([valid[..., y : y + 32, x0 : x0 + 32] for y, x0 in crops])
        optimizer.zero_grad()
        loss = loss_fn(model(xb), tb, vb)
        loss.backward()
        optimizer.step()
    return model.eval()


def scene_metrics(
    model: torch.nn.Module,
    image: np.ndarray,
    mask: np.ndarray,
    stats: dict[str, list[float]],
    threshold: float,
) -> dict[str, float]:
    """IoU and F1 of the float32 model on the whole scene (its 'validation' metrics)."""
    raw = torch.from_numpy(image)[None]
    valid = (raw != DEFAULT_NODATA).all(dim=1)
    with torch.no_grad():
        prob = torch.sigmoid(model(normalize(raw, valid, stats["mean"], stats["std"])))[0, 0]
    pred = (prob >= threshold).numpy() & valid[0].numpy()
    truth = (mask == 1) & valid[0].numpy()
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    return {
        "iou": round(float(tp / (tp + fp + fn)), 4),
        "f1": round(float(2 * tp / (2 * tp + fp + fn)), 4),
        "threshold": threshold,
    }


def main() -> None:
    """Write the bundle, the scene and the expected probabilities."""
    torch.use_deterministic_algorithms(True)
    image, mask = make_scene()
    stats = band_stats(image)
    model = train(image, mask, stats)
    meta = BundleMeta(
        arch=ARCH,
        encoder=ENCODER,
        band_stats=stats,
        threshold=0.45,
        threshold_metric="f1",
        tile_size=32,
        overlap=8,
        data_fingerprint="legacy-fixture-v1",
        val_metrics=scene_metrics(model, image, mask, stats, 0.45),
        created=CREATED,
    )
    shutil.rmtree(HERE / "v1", ignore_errors=True)
    save_bundle(HERE / "v1", model, meta)
    scene = write_scene(HERE / "scene.tif", image, transform=TRANSFORM)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        args = ["predict", str(HERE / "v1"), str(scene), "--out", str(out), "--device", "cpu"]
        if pvdetect_main([*args, "--no-overlay", "--min-area", "0"]) != 0:
            sys.exit("pvdetect predict failed")
        prob, _ = read_raster(out / "scene_prob.tif")
    np.save(HERE / "expected_prob.npy", prob[0].astype(np.float32))
    info = {
        "command": "pvdetect predict v1 scene.tif --device cpu --no-overlay --min-area 0",
        "pvdetect_version": __version__,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "autocast": str(autocast_dtype("cpu")).removeprefix("torch."),
        "machine": platform.machine(),
        "valid_pixels": int((prob[0] != DEFAULT_NODATA).sum()),
    }
    (HERE / "expected.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {HERE}: v1/, scene.tif, expected_prob.npy, expected.json")


if __name__ == "__main__":
    main()
