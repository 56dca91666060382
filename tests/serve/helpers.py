"""What the serve tests share: a model whose plants the tests know, scenes, a live server.

:func:`write_nir_bundle` saves a real smp U-Net (resnet18) bundle whose weights are set by
hand so that it says PV exactly where NIR > 2000 (reflectance x 10000), sampled on even
pixels: the encoder's first convolution passes the normalised NIR on, the decoder blocks pass
it up through their skip connection, the head thresholds it. A scene with high-NIR rectangles
on even pixel edges therefore has exactly those rectangles as plants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from affine import Affine

from pvdetect.data.raster import write_raster
from pvdetect.model.bundle import BundleMeta, save_bundle
from pvdetect.model.factory import build_model

REPO = Path(__file__).resolve().parents[2]
STATS = {"mean": [1000.0] * 4, "std": [500.0] * 4, "p2": [0.0] * 4, "p98": [3000.0] * 4}
UTM33 = "EPSG:32633"
#: the test scene: 10 m pixels, top-left corner in UTM 33N (near 15.0 E, 47.8 N)
SCENE_X0, SCENE_Y0 = 500_000.0, 5_300_000.0
#: plants of the test scene: (row0, col0, rows, cols), even edges
PLANTS = ((20, 30, 40, 60), (80, 120, 20, 30), (120, 40, 30, 30))
SCENE_SIZE = 200


def nir_model() -> torch.nn.Module:
    """The hand-set U-Net: logit = 2 * relu((NIR - 1000) / 500) - 4 on even pixels."""
    model = build_model("unet", "resnet18", in_channels=4, weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
            elif isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
        model.encoder.conv1.weight[0, 3, 3, 3] = 1.0  # centre tap of the 7x7 kernel on NIR
        blocks = model.decoder.blocks
        skip_at = blocks[3].conv1[0].weight.shape[1] - model.encoder.conv1.weight.shape[0]
        blocks[3].conv1[0].weight[0, skip_at, 1, 1] = 1.0  # take the first conv's channel 0
        blocks[3].conv2[0].weight[0, 0, 1, 1] = 1.0
        blocks[4].conv1[0].weight[0, 0, 1, 1] = 1.0
        blocks[4].conv2[0].weight[0, 0, 1, 1] = 1.0
        head = model.segmentation_head[0]
        head.weight[0, 0, 1, 1] = 2.0
        head.bias.fill_(-4.0)
    return model.eval()


def write_nir_bundle(path: Path) -> Path:
    """Save the hand-set model as a bundle (64 px tiles, threshold 0.5)."""
    meta = BundleMeta(
        arch="unet", encoder="resnet18", band_stats=STATS, tile_size=64, overlap=16, threshold=0.5
    )
    return save_bundle(path, nir_model(), meta)


def scene_array(size: int = SCENE_SIZE, seed: int = 0) -> np.ndarray:
    """float32 ``[4, size, size]``: low-NIR land with the high-NIR :data:`PLANTS`."""
    rng = np.random.default_rng(seed)
    fields = rng.uniform(0.0, 1.0, (4, size // 20 + 1, size // 20 + 1))  # 200 m fields
    fields = fields.repeat(20, axis=1).repeat(20, axis=2)[:, :size, :size]
    noise = rng.normal(0.0, 0.03, (4, size, size))
    arr = np.empty((4, size, size), np.float32)
    arr[:3] = 500 + 2000 * np.clip(fields[:3] + noise[:3], 0, 1)
    arr[3] = 300 + 1500 * np.clip(fields[3] + noise[3], 0, 1)  # NIR < 2000: no PV
    for r, c, h, w in PLANTS:
        if r + h <= size and c + w <= size:
            arr[3, r : r + h, c : c + w] = 3500.0
            arr[:3, r : r + h, c : c + w] = 600.0
    return arr


def write_scene(
    path: Path,
    arr: np.ndarray | None = None,
    x0: float = SCENE_X0,
    y0: float = SCENE_Y0,
    crs: str = UTM33,
) -> Path:
    """A 4-band scene GeoTIFF (bands described Red, Green, Blue, NIR), 10 m pixels."""
    data = scene_array() if arr is None else arr
    return write_raster(
        path,
        data,
        crs=crs,
        transform=Affine(10.0, 0.0, x0, 0.0, -10.0, y0),
        nodata=-9999.0,
        descriptions=["Red", "Green", "Blue", "NIR"],
    )


def scene_lonlat(row: float, col: float) -> tuple[float, float]:
    """WGS 84 lon, lat of a pixel position of the test scene."""
    from pyproj import Transformer

    tr = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(SCENE_X0 + col * 10.0, SCENE_Y0 - row * 10.0)
    return float(lon), float(lat)


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(client: Any, job_id: str, states: tuple[str, ...], timeout: float = 60.0) -> dict:
    """Poll a job until its status is one of ``states``; returns its JSON."""
    deadline = time.monotonic() + timeout
    while True:
        info = client.get(f"/api/jobs/{job_id}").json()
        if info["status"] in states:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {info['status']}: {info}")
        time.sleep(0.1)


class LiveServer:
    """``pvdetect serve`` in a subprocess on 127.0.0.1 (a free port)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}
        self.log = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pvdetect.cli", "serve", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the API answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited {self.proc.returncode}: {self.log.read_text()}"
                )
            try:
                httpx.get(self.url + "/openapi.json", timeout=2.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"server not ready: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and close its log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextlib.contextmanager
def live_server(args: list[str], log: Path) -> Iterator[LiveServer]:
    """A :class:`LiveServer`, ready, stopped at the end of the block."""
    server = LiveServer(args, log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
