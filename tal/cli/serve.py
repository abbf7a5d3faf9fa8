"""``tal serve``: run the initialization service under uvicorn.

The service lives in the top-level ``service`` package; it is named by its import string so
the core library never imports it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

APP = "service.main:create_app"
SETTINGS_FILE_ENV = "TAL_SETTINGS_FILE"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKERS_ENV = "TAL_WORKERS"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.config:
        if not args.config.is_file():
            raise SystemExit(f"error: settings file {args.config} does not exist")
        os.environ[SETTINGS_FILE_ENV] = str(args.config.resolve())
    if args.store:
        os.environ["TAL_MODEL_STORE"] = str(args.store.resolve())
    if args.workers > 1:
        # Several processes: metrics go through files that /metrics merges.
        os.environ.setdefault(MULTIPROC_ENV, tempfile.mkdtemp(prefix="tal-metrics-"))
    os.environ[WORKERS_ENV] = str(args.workers)  # each worker takes its share of the cores
    options = {
        "factory": True,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "log_level": args.log_level,
        "timeout_graceful_shutdown": args.graceful_seconds,
    }
    if args.workers > 1:
        _supervise(uvicorn.Config(APP, **options))
    else:
        uvicorn.run(APP, **options)
    return 0


def _supervise(config: Any) -> None:
    """Runs uvicorn's multi-process supervisor as ``uvicorn.run`` does, except that on SIGTERM
    it closes its own copy of the shared listening socket before it signals the workers.

    Otherwise, once every worker has drained and stopped accepting, the supervisor's copy keeps
    the socket listening: new connections wait in a backlog nobody reads (a client hangs, then
    is reset) instead of being refused at once, which clients and load balancers retry
    elsewhere.
    """
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def terminate_all(self) -> None:  # called once, when the supervisor stops
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

    Supervisor(config, sockets=[config.bind_socket()]).run()


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the HTTP initialization service (uvicorn)")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--config", type=Path, default=None, help="settings file (KEY=value)")
    serve.add_argument("--store", type=Path, default=None, help="model store folder")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--graceful-seconds",
        type=float,
        default=None,
        help="after SIGTERM, let requests in flight finish this long (default: the service "
        "setting TAL_DRAIN_GRACE_SECONDS)",
    )
    serve.set_defaults(func=_cmd_serve)
