"""The ``tal`` command line: ``tal predict``, ``tal store list``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tal.hypernet.decoder import THP_ENV


def _read_arch(value: str) -> object:
    """A path to a JSON file, inline JSON, or a timm model name."""
    path = Path(value)
    if value.endswith(".json") or (path.is_file() and not value.lstrip().startswith("{")):
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"error: cannot read arch file {value}: {exc}") from exc
    return value


def _cmd_predict(args: argparse.Namespace) -> int:
    from tal import io, store
    from tal.learngene import Learngene, UnknownTaskError, load_default
    from tal.predict import blob_metadata
    from tal.specs import SpecError, parse_arch

    try:
        spec = parse_arch(_read_arch(args.arch))  # type: ignore[arg-type]
        if args.checkpoint:
            name, _, version = args.checkpoint.partition(":")
            learngene = Learngene.load(name, version or store.LATEST, args.store)
        else:
            learngene = load_default(args.store)
        start = time.perf_counter()
        tensors = learngene.predict(spec, args.task, args.format, args.dtype, args.seed)
        elapsed = time.perf_counter() - start
        metadata = blob_metadata(spec, args.task, args.format, args.dtype, args.seed, learngene)
        io.save_file(tensors, args.out, metadata)
    except (SpecError, UnknownTaskError, store.StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if learngene.name == "untrained":
        print(
            "note: no trained checkpoint in the model store; used a fresh hypernetwork",
            file=sys.stderr,
        )
    print(
        f"wrote {args.out}: {len(tensors)} tensors, {spec.num_params():,} parameters, "
        f"{args.format}/{args.dtype}, model {learngene.model_version}, "
        f"predicted in {elapsed * 1e3:.0f} ms"
    )
    return 0


def _cmd_store_list(args: argparse.Namespace) -> int:
    from tal import store

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tal", description="Task-Aware Learngene tools")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="predict initial weights into a .safetensors")
    predict.add_argument(
        "--arch", required=True, help="spec JSON file, inline JSON, or a timm model name"
    )
    predict.add_argument("--task", default=None, help="task name known to the checkpoint")
    predict.add_argument("--format", default="timm", choices=["timm", "hf"])
    predict.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    predict.add_argument("--seed", type=int, default=0)
    predict.add_argument("--out", required=True, type=Path)
    predict.add_argument(
        "--checkpoint",
        default=None,
        help="NAME[:VERSION] in the model store (default: the shipped one)",
    )
    predict.add_argument("--store", type=Path, default=None, help="model store folder")
    predict.set_defaults(func=_cmd_predict)

    store_cmd = commands.add_parser("store", help="inspect the model store")
    store_sub = store_cmd.add_subparsers(dest="store_command", required=True)
    listing = store_sub.add_parser("list", help="names, versions, tasks and metrics")
    listing.add_argument("--store", type=Path, default=None)
    listing.set_defaults(func=_cmd_store_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault(THP_ENV, "1")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
