"""``tal init --server URL``: fetch predicted initial weights from the service (pipelines)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tal.arch.formats import DTYPES, FORMATS
from tal.cli.predict import add_output_options, read_arch
from tal.heads.choice import HEAD_AUTO, HEAD_CHOICES

API_KEY_ENV = "TAL_API_KEY"
SERVER_ENV = "TAL_SERVER"


def _cmd_init(args: argparse.Namespace) -> int:
    from tal.arch.model_folder import write_model_folder
    from tal.arch.parse import parse_arch
    from tal.arch.specs import SpecError
    from tal.blobs.reader import read_metadata
    from tal.client import RetryPolicy, TALClient, TALError
    from tal.heads.support import INPUT_NORM_METADATA_KEY

    if not args.server:
        print(f"error: give --server URL or set ${SERVER_ENV}", file=sys.stderr)
        return 2
    retry = RetryPolicy(retries=args.retries, backoff=args.backoff)
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    arch = read_arch(args.arch)
    try:
        with TALClient(args.server, api_key, args.timeout, retry, args.cache_dir) as client:
            if args.out_dir is None:
                path = client.initialize(
                    arch, args.task, args.format, args.dtype, args.out, args.head
                )
            else:  # the folder's config.json is made here, from the spec the server echoes
                blob = client.initialize(arch, args.task, args.format, args.dtype, None, args.head)
                metadata = read_metadata(blob)
                norm = metadata.get(INPUT_NORM_METADATA_KEY)
                spec = parse_arch(metadata["tal.spec"])
                input_norm = json.loads(norm) if norm else None
                path = write_model_folder(args.out_dir, spec, args.format, blob, input_norm)
    except (TALError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({Path(path).stat().st_size:,} bytes) from {args.server}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser("init", help="fetch predicted weights from a TAL server")
    init.add_argument("--server", default=os.environ.get(SERVER_ENV), help="e.g. http://tal:8000")
    init.add_argument("--arch", required=True, help="spec JSON file, inline JSON, or timm name")
    init.add_argument("--task", default=None)
    init.add_argument("--format", default="timm", choices=FORMATS)
    init.add_argument("--dtype", default="float32", choices=list(DTYPES))
    init.add_argument(
        "--head",
        default=HEAD_AUTO,
        choices=HEAD_CHOICES,
        help="classifier head: fitted to a task registered from images (discriminant), the "
        "predicted one, or auto (fitted where the task has images)",
    )
    add_output_options(init)
    init.add_argument("--api-key", default=None, help=f"default: ${API_KEY_ENV}")
    init.add_argument("--cache-dir", type=Path, default=None, help="reuse blobs by ETag")
    init.add_argument("--retries", type=int, default=5)
    init.add_argument("--backoff", type=float, default=0.5, help="first retry delay, seconds")
    init.add_argument("--timeout", type=float, default=300.0, help="per request, seconds")
    init.set_defaults(func=_cmd_init)
