"""``pvdetect serve``: the web page and JSON API (point at a place, get its PV plants)."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from pvdetect.errors import ConfigError

#: the file the page cannot work without; ``make`` puts it there with npm
VENDOR_PROBE = Path("vendor") / "leaflet" / "leaflet.js"
TOKEN_ENV = "PVDETECT_SERVE_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pvdetect serve``."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; others need --token)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle (folder or .pvb)")
    parser.add_argument(
        "--source",
        default="bdc",
        metavar="bdc|earth-search|planetary-computer|stac:URL|scenes:DIR",
        help="where imagery comes from (default bdc)",
    )
    parser.add_argument(
        "--collection", metavar="NAME", help="collection of a catalog (default: its Sentinel-2)"
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token every API call must carry (default ${TOKEN_ENV}; none)",
    )
    parser.add_argument(
        "--jobs-dir",
        type=Path,
        default=Path("pvdetect-jobs"),
        metavar="DIR",
        help="folder of the jobs (default ./pvdetect-jobs)",
    )
    parser.add_argument(
        "--max-km", type=float, default=50.0, metavar="KM", help="largest side of an area (50)"
    )
    parser.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1)")
    parser.add_argument("--queue", type=int, default=8, help="jobs that may wait (default 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="tiles per forward pass (default: device's)"
    )
    parser.add_argument(
        "--memory-mb",
        type=float,
        default=1024.0,
        metavar="MB",
        help="memory budget of a catalog composite (1024)",
    )
    parser.add_argument(
        "--max-items", type=int, default=60, metavar="N", help="catalog items used at most (60)"
    )
    # tests only: seconds slept after each tile row, so that a job is slow enough to kill
    parser.add_argument("--row-delay", type=float, default=0.0, help=argparse.SUPPRESS)


def _check(args: argparse.Namespace) -> None:
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must lie in [1, 65535]")
    if not args.max_km > 0:
        raise ConfigError(f"--max-km {args.max_km:g}: must be > 0")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    if args.queue < 0:
        raise ConfigError(f"--queue {args.queue}: must be 0 or more")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be at least 1")
    if not args.memory_mb > 0:
        raise ConfigError(f"--memory-mb {args.memory_mb:g}: must be > 0")
    if args.max_items < 1:
        raise ConfigError(f"--max-items {args.max_items}: must be at least 1")
    if args.row_delay < 0:
        raise ConfigError("--row-delay: must be >= 0")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, so that a port in use is a one-line error before anything starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"--host {host}: cannot listen there ({exc.strerror or exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from None
    return sock


def run(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError(
            "pvdetect serve needs FastAPI and uvicorn: pip install 'pvdetect[serve]'"
        ) from None
    from pvdetect.io import prepare_out_dir
    from pvdetect.model.bundle import read_meta
    from pvdetect.serve.app import STATIC, create_app
    from pvdetect.serve.security import check_binding
    from pvdetect.serve.settings import ServeSettings
    from pvdetect.serve.sources import parse_source

    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    check_binding(args.host, token)
    _check(args)
    read_meta(args.bundle)  # a broken bundle is an error now, not at the first job
    source = parse_source(args.source, args.collection)
    if not (STATIC / VENDOR_PROBE).is_file():
        raise ConfigError(
            f"{STATIC / VENDOR_PROBE}: missing; run `make` in the repository (it installs "
            "Leaflet with npm into src/pvdetect/serve/static/vendor)"
        )
    jobs_dir = prepare_out_dir(args.jobs_dir).resolve()
    settings = ServeSettings(
        bundle=args.bundle.resolve(),
        source=source,
        jobs_dir=jobs_dir,
        host=args.host,
        port=args.port,
        token=token,
        max_km=args.max_km,
        workers=args.workers,
        queue=args.queue,
        device=args.device,
        batch_size=args.batch_size,
        memory_mb=args.memory_mb,
        max_items=args.max_items,
        row_delay=args.row_delay,
    )
    app = create_app(settings)
    sock = _listen(args.host, args.port)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"pvdetect serve: {source.label}, jobs in {jobs_dir}", flush=True)
    print(
        f"pvdetect serve: open http://{shown}:{args.port}/"
        + ("?token=TOKEN (the --token)" if token else ""),
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0
