"""``tal train ancestry | stage1 | stage2 | default``: the training job.

Every command takes ``--config FILE.json`` and flags (flags win), shows progress, validates
periodically and resumes from ``<run-dir>/<stage>/last.safetensors`` when re-run. Launch with
``torchrun --nproc_per_node N -m tal.cli train ...`` for data / architecture parallelism.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tal.training.recipe import CPU_RECIPE

if TYPE_CHECKING:
    from tal.training.distributed import DistInfo

DEFAULT_VERSION_FORMAT = "%Y.%m.%d"


def _export_target(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    name, sep, version = value.partition(":")
    if not sep or not name or not version:
        raise argparse.ArgumentTypeError(f"expected NAME:VERSION, got {value!r}")
    return name, version


def _distillation(name: str) -> str:
    """``--stage2-distillation``: a key of DISTILLATIONS."""
    from tal.training.recipe import DISTILLATIONS

    if name not in DISTILLATIONS:
        raise argparse.ArgumentTypeError(f"expected one of {sorted(DISTILLATIONS)}, got {name!r}")
    return name


def _decoder_overrides(text: str) -> dict:
    """``--decoder`` JSON: an object whose keys are DecoderConfig fields."""
    from tal.hypernet.config import check_decoder_overrides

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--decoder is not JSON: {exc}") from exc
    try:
        if not isinstance(value, dict):
            raise ValueError(f"got {type(value).__name__}")
        return check_decoder_overrides(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--decoder takes a JSON object with keys from DecoderConfig: {exc}"
        ) from exc


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="JSON config file")
    parser.add_argument("--run-dir", type=Path, default=None, help="state and artifacts folder")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument(
        "--data-limit",
        type=int,
        default=None,
        help="use at most this many examples per task and split (smoke runs)",
    )
    parser.add_argument(
        "--overfit-batch",
        action="store_true",
        default=None,
        help="reuse the first batch every step (a smoke test of the loss)",
    )


def _overrides(args: argparse.Namespace, names: list[str]) -> dict:
    return {name: getattr(args, name, None) for name in names}


COMMON_FIELDS = [
    "run_dir",
    "steps",
    "batch_size",
    "seed",
    "eval_every",
    "checkpoint_every",
    "data_root",
    "overfit_batch",
]


MODALITIES = ("image", "text", "both")
TEXT_ANCESTRY_FIELDS = ["n_layer", "n_embd", "n_head"]


def _cmd_ancestry(args: argparse.Namespace) -> int:
    """The image ancestry ViT, the text ancestry GPT-2, or both (``--modality``). ``--config``
    is the image ancestry's config with ``--modality image`` and the text one's with ``text``."""
    from tal.training.ancestry_trainer import AncestryTrainer
    from tal.training.config import AncestryTrainConfig, TextAncestryTrainConfig, load_config
    from tal.training.distributed import init_distributed
    from tal.training.text_ancestry_trainer import TextAncestryTrainer

    if args.ancestry_from is not None:
        return _copy_ancestries(args)
    dist = init_distributed()
    results = {}
    if args.modality in ("image", "both"):
        config = load_config(
            AncestryTrainConfig,
            args.config if args.modality == "image" else None,
            _overrides(args, [*COMMON_FIELDS, "depth", "embed_dim", "num_heads", "patch_size"]),
        )
        results["ancestry"] = AncestryTrainer(config, dist, args.data_limit).run_and_export()
    if args.modality in ("text", "both"):
        text_config = load_config(
            TextAncestryTrainConfig,
            args.config if args.modality == "text" else None,
            _overrides(args, [*COMMON_FIELDS, *TEXT_ANCESTRY_FIELDS]),
        )
        trainer = TextAncestryTrainer(text_config, dist, args.data_limit)
        results["text_ancestry"] = trainer.run_and_export()
    if dist.is_main:
        print(json.dumps(results, indent=2))
    return 0


def _copy_ancestries(args: argparse.Namespace) -> int:
    """``tal train ancestry --ancestry-from NAME:VERSION``: that store version's ancestries
    (``--modality``) and task embeddings written into the run folder, with no training, as
    the evaluations and the hypernetwork stages read them."""
    from tal.checkpoints.store import resolve
    from tal.training.ancestry_trainer import import_ancestry_artifacts
    from tal.training.config import AncestryTrainConfig
    from tal.training.text_ancestry_trainer import import_text_ancestry_artifacts

    source = resolve(*args.ancestry_from, root=args.store)
    run_dir = args.run_dir or AncestryTrainConfig().run_dir
    results = {}
    if args.modality in ("image", "both"):
        results["ancestry"] = import_ancestry_artifacts(source, run_dir)
    if args.modality in ("text", "both"):
        results["text_ancestry"] = import_text_ancestry_artifacts(source, run_dir)
    print(json.dumps(results, indent=2))
    return 0


def _import_ancestry(args: argparse.Namespace, run_dir: Path, dist: DistInfo) -> dict:
    """``--ancestry-from NAME:VERSION``: that store version's ancestry and task embeddings
    become ``run_dir``'s (written by rank 0); returns its ancestry metrics."""
    from tal.checkpoints.store import resolve
    from tal.training.ancestry_trainer import import_ancestry_artifacts
    from tal.training.distributed import barrier

    source = resolve(*args.ancestry_from, root=args.store)
    metrics = import_ancestry_artifacts(source, run_dir) if dist.is_main else {}
    barrier(dist)
    return metrics


def _text_ancestry(args: argparse.Namespace, run_dir: Path, dist: DistInfo) -> dict:
    """``tal train default``'s text ancestry: imported with ``--ancestry-from`` when that
    version carries one, else trained with the recipe's steps; returns its metrics."""
    from tal.checkpoints.store import resolve
    from tal.training.config import TextAncestryTrainConfig
    from tal.training.distributed import barrier
    from tal.training.text_ancestry_trainer import (
        TextAncestryTrainer,
        has_text_ancestry,
        import_text_ancestry_artifacts,
    )

    if args.ancestry_from is not None:
        source = resolve(*args.ancestry_from, root=args.store)
        if has_text_ancestry(source):
            metrics = import_text_ancestry_artifacts(source, run_dir) if dist.is_main else {}
            barrier(dist)
            return metrics
    config = TextAncestryTrainConfig(run_dir=run_dir, steps=args.text_ancestry_steps)
    return TextAncestryTrainer(config, dist).run_and_export()


def _ancestry_from_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ancestry-from",
        type=_export_target,
        default=None,
        metavar="NAME:VERSION",
        help="reuse the ancestry model and task embeddings of this store version "
        "instead of training them (retrains only the hypernetwork)",
    )


def _stage(args: argparse.Namespace, stage: int) -> int:
    from tal.training.config import HypernetTrainConfig, load_config
    from tal.training.distributed import init_distributed
    from tal.training.hypernet_trainer import HypernetTrainer

    overrides = _overrides(
        args,
        [
            *COMMON_FIELDS,
            "preset",
            "library",
            "meta_batch",
            "distill_weight",
            "init_from",
            "device",
        ],
    )
    overrides["stage"] = stage
    if args.no_task_conditioning:
        overrides["task_conditioning"] = False
    if args.head_features:
        overrides["head_features"] = True
    if args.lr is not None:
        overrides["optim"] = {"lr": args.lr}
    config = load_config(HypernetTrainConfig, args.config, overrides)
    dist = init_distributed(config.device)
    if args.ancestry_from is not None:
        _import_ancestry(args, config.run_dir, dist)
    trainer = HypernetTrainer(config, dist, args.data_limit)
    metrics = trainer.run()
    if trainer.dist.is_main:
        if args.export:
            path = trainer.export(*args.export, args.store)
            print(f"exported {path}")
        print(json.dumps({trainer.name: metrics}, indent=2))
    return 0


def _mixed_steps(args: argparse.Namespace, stage: int) -> dict:
    """A stage's ``steps`` (image + text) and ``text_share`` from the image and text steps."""
    image = args.stage1_steps if stage == 1 else args.stage2_steps
    text = args.text_stage1_steps if stage == 1 else args.text_stage2_steps
    return {"steps": image + text, "text_share": text / (image + text)}


def _cmd_default(args: argparse.Namespace) -> int:
    """The shipped default: ancestry, stage 1 and stage 2 with the CPU recipe, then export."""
    from tal.checkpoints.provenance import code_version
    from tal.checkpoints.store import DEFAULT_NAME
    from tal.training.ancestry_trainer import AncestryTrainer
    from tal.training.config import AncestryTrainConfig, HypernetTrainConfig
    from tal.training.distributed import init_distributed
    from tal.training.hypernet_trainer import HypernetTrainer

    run_dir = args.run_dir
    dist = init_distributed()
    began = time.perf_counter()
    trained_by = code_version()  # the code that trains, not what the checkout holds at export
    if args.ancestry_from is None:
        ancestry = AncestryTrainer(
            AncestryTrainConfig(run_dir=run_dir, steps=args.ancestry_steps), dist
        )
        ancestry_metrics = ancestry.run_and_export()
    else:
        ancestry_metrics = _import_ancestry(args, run_dir, dist)
    text_ancestry_metrics = _text_ancestry(args, run_dir, dist)
    stage1 = HypernetTrainer(
        HypernetTrainConfig(
            stage=1,
            run_dir=run_dir,
            decoder=args.decoder,
            head_features=args.head_features,
            **_mixed_steps(args, 1),
        ),
        dist,
    )
    stage1_metrics = stage1.run()
    stage2 = HypernetTrainer(
        HypernetTrainConfig(
            stage=2,
            run_dir=run_dir,
            decoder=args.decoder,
            head_features=args.head_features,
            **_mixed_steps(args, 2),
            task_temperature=args.stage2_task_temperature,
            distill_target=args.stage2_distillation,
            init_from=run_dir / "stage1" / "last.safetensors",
        ),
        dist,
    )
    stage2_metrics = stage2.run()
    wall = time.perf_counter() - began
    if dist.is_main:
        command = "tal train default " + " ".join(sys.argv[3:])
        path = stage2.export(
            DEFAULT_NAME,
            args.version,
            args.store,
            {
                "code_version": trained_by,
                "how_made": {
                    "command": command.strip(),
                    "wall_seconds": wall,
                    "stages": {
                        "ancestry": ancestry_metrics,
                        "text_ancestry": text_ancestry_metrics,
                        "stage1": stage1_metrics,
                        "stage2": stage2_metrics,
                    },
                },
                "training": {
                    "stage1": json.loads(stage1.config.model_dump_json()),
                    "stage2": json.loads(stage2.config.model_dump_json()),
                },
            },
        )
        print(f"exported {path} after {wall / 60:.1f} min")
    return 0


def _head_features_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--head-features",
        action="store_true",
        help="the hypernetwork reads each attention layer's head count and head width",
    )


def _run(func):
    def wrapped(args: argparse.Namespace) -> int:
        from tal.checkpoints.store import StoreError
        from tal.training.config import ConfigError

        try:
            return func(args)
        except (ConfigError, FileNotFoundError, KeyError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train the ancestry model and the hypernetwork")
    stages = train.add_subparsers(dest="stage", required=True)

    ancestry = stages.add_parser(
        "ancestry", help="the ancestry ViT and GPT-2 and their task embeddings"
    )
    _common(ancestry)
    ancestry.add_argument(
        "--modality",
        choices=MODALITIES,
        default="both",
        help="train the image ancestry (ViT), the text ancestry (GPT-2) or both",
    )
    ancestry.add_argument("--n-layer", type=int, default=None, help="text ancestry blocks")
    ancestry.add_argument("--n-embd", type=int, default=None, help="text ancestry width")
    ancestry.add_argument("--n-head", type=int, default=None, help="text ancestry heads")
    ancestry.add_argument("--depth", type=int, default=None)
    ancestry.add_argument("--embed-dim", type=int, default=None)
    ancestry.add_argument("--num-heads", type=int, default=None)
    ancestry.add_argument("--patch-size", type=int, default=None)
    ancestry.add_argument(
        "--ancestry-from",
        type=_export_target,
        default=None,
        metavar="NAME:VERSION",
        help="copy this store version's ancestries and task embeddings into --run-dir "
        "instead of training them",
    )
    ancestry.add_argument("--store", type=Path, default=None)
    ancestry.set_defaults(func=_run(_cmd_ancestry))

    for stage in (1, 2):
        sub = stages.add_parser(
            f"stage{stage}",
            help=("model library + distillation" if stage == 1 else "multi-task, task-conditioned"),
        )
        _common(sub)
        sub.add_argument(
            "--preset",
            choices=["tal", "ghn3", "logah"],
            default=None,
            help="decoder: ours, GHN-3 tiling or LoGAH low-rank",
        )
        sub.add_argument(
            "--library",
            default=None,
            help="cpu, cpu-plus (TAL+), cpu-scales (up to ViT-S, 32-96 px, grey and RGB), "
            "vits-1k, ...",
        )
        sub.add_argument("--meta-batch", type=int, default=None)
        sub.add_argument("--lr", type=float, default=None)
        sub.add_argument(
            "--distill-weight",
            type=float,
            default=None,
            help="0 trains with cross-entropy only (the baselines)",
        )
        sub.add_argument("--no-task-conditioning", action="store_true")
        _head_features_option(sub)
        _ancestry_from_option(sub)
        sub.add_argument(
            "--init-from",
            type=Path,
            default=None,
            help="training state to start from (stage 2: stage 1's last state)",
        )
        sub.add_argument("--device", default=None, help="auto, cpu or cuda")
        sub.add_argument(
            "--export",
            type=_export_target,
            default=None,
            metavar="NAME:VERSION",
            help="write the result to the model store",
        )
        sub.add_argument("--store", type=Path, default=None)
        sub.set_defaults(func=_run(lambda a, s=stage: _stage(a, s)))

    default = stages.add_parser("default", help="train and export the shipped default")
    default.add_argument("--run-dir", type=Path, default=Path("runs/default"))
    default.add_argument("--version", default=time.strftime(DEFAULT_VERSION_FORMAT))
    default.add_argument("--store", type=Path, default=None)
    recipe = CPU_RECIPE
    default.add_argument("--ancestry-steps", type=int, default=recipe.ancestry_steps)
    default.add_argument("--text-ancestry-steps", type=int, default=recipe.text.ancestry_steps)
    _ancestry_from_option(default)
    _head_features_option(default)
    default.add_argument(
        "--stage1-steps", type=int, default=recipe.stage1_steps, help="image steps of stage 1"
    )
    default.add_argument(
        "--stage2-steps", type=int, default=recipe.stage2_steps, help="image steps of stage 2"
    )
    default.add_argument(
        "--text-stage1-steps",
        type=int,
        default=recipe.text.stage1_steps,
        help="GPT-2 / text steps of stage 1, interleaved with its image steps",
    )
    default.add_argument("--text-stage2-steps", type=int, default=recipe.text.stage2_steps)
    default.add_argument(
        "--stage2-task-temperature",
        type=float,
        default=recipe.stage2_task_temperature,
        help="stage 2 samples tasks ~ (n_i / N)^T: 1 = by size, near 0 = uniform (the paper: 0.5)",
    )
    default.add_argument(
        "--stage2-distillation",
        type=_distillation,
        default=recipe.stage2_distillation,
        help="what stage 2 distils from the ancestry: `logits`, its class logits on the step's "
        "task (0.5 CE + 0.5 KD), or `features`, its CLS features (the authors', 0.8 CE + 0.2 KD)",
    )
    default.add_argument(
        "--decoder",
        type=_decoder_overrides,
        default={},
        help="JSON object of decoder fields that replace the tal preset's "
        "(e.g. '{\"span_scaling\": false}'; see DecoderConfig)",
    )
    default.set_defaults(func=_run(_cmd_default))
