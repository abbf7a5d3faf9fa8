"""``tal predict``: write predicted initial weights to a .safetensors file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tal.arch.formats import DTYPES, FORMATS

if TYPE_CHECKING:
    from tal.heads.discriminant import DiscriminantHeadFit


def read_arch(value: str) -> object:
    """A path to a JSON file, inline JSON, or a timm model name."""
    path = Path(value)
    if value.endswith(".json") or (path.is_file() and not value.lstrip().startswith("{")):
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"error: cannot read arch file {value}: {exc}") from exc
    return value


def _load_task_data(path: Path, spec: object) -> object:
    """The user's labelled examples: for a ViT images (an .npz file or a
    ``<class>/<image>`` folder) at the spec's image size and channels, for a GPT-2 texts (a
    ``.jsonl`` / ``.csv`` / ``.tsv`` of ``{text, label}``) tokenised with GPT-2's BPE."""
    from tal.arch.specs import ViTSpec
    from tal.tasks import load_image_folder, load_npz
    from tal.tasks.text.user_data import load_text_file

    if not isinstance(spec, ViTSpec):
        return load_text_file(path)
    load = load_image_folder if path.is_dir() else load_npz
    return load(path, image_size=spec.img_size, in_chans=spec.in_chans)


def _cmd_predict(args: argparse.Namespace) -> int:
    from tal.arch.model_folder import write_model_folder
    from tal.arch.parse import parse_arch
    from tal.arch.specs import SpecError
    from tal.blobs.io import write_atomic
    from tal.checkpoints import store
    from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES, NoAncestryError
    from tal.checkpoints.learngene import Learngene, load_default
    from tal.heads.support import INPUT_NORM_METADATA_KEY
    from tal.predict import (
        ADAPTER_METADATA_KEY,
        PROXY_METADATA_KEY,
        predict_blob,
        predict_for_task_data,
    )
    from tal.tasks.errors import UnknownTaskError

    if args.task and args.task_data:
        print("error: give --task (a known task) or --task-data (new), not both", file=sys.stderr)
        return 2
    try:
        spec = parse_arch(read_arch(args.arch))  # type: ignore[arg-type]
        data = _load_task_data(args.task_data, spec) if args.task_data else None
        if args.checkpoint:
            name, _, version = args.checkpoint.partition(":")
            learngene = Learngene.load(name, version or store.LATEST, args.store)
        else:
            learngene = load_default(args.store)
        start = time.perf_counter()
        head_note = ""
        if data is None:
            blob = predict_blob(spec, args.task, args.format, args.dtype, learngene=learngene).blob
        else:
            prediction = predict_for_task_data(
                learngene,
                spec,
                data,  # type: ignore[arg-type]
                args.format,
                args.dtype,
                TASK_EMBEDDING_EXAMPLES if args.task_examples is None else args.task_examples,
                fit_head=not args.keep_predicted_head,
                task=f"data:{args.task_data.name}",
            )
            blob = prediction.blob
            if prediction.head_fit:
                head_note = _head_note(prediction.head_fit)
        elapsed = time.perf_counter() - start
        proxy = blob.layout.metadata.get(PROXY_METADATA_KEY)
        if proxy:
            head_note += f"; outside the trained range, lifted from {proxy}"
        adapter = blob.layout.metadata.get(ADAPTER_METADATA_KEY)
        if adapter:
            head_note += f"; its first {adapter} blocks rebuild the proxy's patch grid"
        if args.out_dir is not None:
            norm = blob.layout.metadata.get(INPUT_NORM_METADATA_KEY)
            input_norm = json.loads(norm) if norm else None
            out = write_model_folder(args.out_dir, spec, args.format, blob.memoryview(), input_norm)
        else:
            out = args.out
            write_atomic(out, blob.memoryview())
    except (
        SpecError,
        UnknownTaskError,
        store.StoreError,
        NoAncestryError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if learngene.name == "untrained":
        print(
            "note: no trained checkpoint in the model store; used a fresh hypernetwork",
            file=sys.stderr,
        )
    print(
        f"wrote {out}: {len(blob.layout.names)} tensors, {spec.num_params():,} parameters, "
        f"{args.format}/{args.dtype}, model {learngene.model_version}, "
        f"predicted in {elapsed * 1e3:.0f} ms{head_note}"
    )
    return 0


def _head_note(fit: DiscriminantHeadFit) -> str:
    """What the fitted head's out-of-fold check says, for the closing line."""
    return f"; head fitted on {fit.examples} images (" + (
        f"{100 * fit.cross_validated_accuracy:.1f}% right out of fold, "
        f"{fit.folds} folds; scale {fit.scale:.2f})"
        if fit.folds
        else "too few per class to cross-validate)"
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--out FILE`` or ``--out-dir DIR`` (config.json + model.safetensors), one required."""
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="the safetensors file to write")
    out.add_argument(
        "--out-dir",
        type=Path,
        help="a model folder: config.json + model.safetensors, what transformers' "
        "from_pretrained(DIR) (format hf) or timm.create_model('local-dir:DIR', "
        "pretrained=True) (format timm) loads",
    )


def register(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="predict initial weights into a .safetensors")
    predict.add_argument(
        "--arch", required=True, help="spec JSON file, inline JSON, or a timm model name"
    )
    predict.add_argument("--task", default=None, help="task name known to the checkpoint")
    predict.add_argument(
        "--task-data",
        type=Path,
        default=None,
        help="a new task's labelled examples: for a ViT an .npz (images, labels) or a "
        "<class>/<image> folder, for a GPT-2 a .jsonl/.csv/.tsv of {text, label}; embeds the task "
        "and fits the classifier head on them (tal.heads.support)",
    )
    predict.add_argument(
        "--task-examples",
        type=int,
        default=None,
        help="examples of --task-data used, balanced over classes (default: as many as the "
        "checkpoint's task embeddings used, tal.checkpoints.ancestry.TASK_EMBEDDING_EXAMPLES)",
    )
    predict.add_argument(
        "--keep-predicted-head",
        action="store_true",
        help="with --task-data: keep the predicted classifier head",
    )
    predict.add_argument("--format", default="timm", choices=FORMATS)
    predict.add_argument("--dtype", default="float32", choices=list(DTYPES))
    add_output_options(predict)
    predict.add_argument(
        "--checkpoint",
        default=None,
        help="NAME[:VERSION] in the model store (default: the shipped one)",
    )
    predict.add_argument("--store", type=Path, default=None, help="model store folder")
    predict.set_defaults(func=_cmd_predict)
