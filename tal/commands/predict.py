"""``tal predict``: write predicted initial weights to a .safetensors file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


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


def register(commands: argparse._SubParsersAction) -> None:
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
