"""``tal store list``: the checkpoints in the model store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_store_list(args: argparse.Namespace) -> int:
    from tal.checkpoints import store

    root = args.store or store.default_root()
    rows = 0
    for name in store.list_models(root):
        for version in store.list_versions(name, root):
            manifest = store.read_manifest(root / name / version)
            metrics = manifest.get("metrics", {})
            print(
                f"{name}/{version}\ttasks={','.join(manifest.get('tasks', []))}\t"
                f"metrics={json.dumps(metrics, sort_keys=True)}"
            )
            rows += 1
    if not rows:
        print(f"no checkpoints in {root}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    store_cmd = commands.add_parser("store", help="inspect the model store")
    store_sub = store_cmd.add_subparsers(dest="store_command", required=True)
    listing = store_sub.add_parser("list", help="names, versions, tasks and metrics")
    listing.add_argument("--store", type=Path, default=None)
    listing.set_defaults(func=_cmd_store_list)
