"""Does training on the ``cpu-scales`` library teach the hypernetwork the shapes users request?

Starts from a stored learngene's hypernetwork (default: the shipped one), trains stage 2 for
``--steps`` on the ``cpu-scales`` library (depth 2-12, width up to 384, 32-96 px, grey and
RGB, a tenth of the slots from its deep, wide corner; each architecture fed the suite in its
own format, the ancestry's logits distilled as in the CPU recipe), then prints the untrained
test accuracy of user-scale architectures (default: the ViT-S-width model, 12 blocks, width
384, patch 16, 64 px RGB; ``--architectures`` takes any of ``tal eval --user-scale``'s) on the
tasks the ancestry learned for: the stored learngene as served (lifted from its proxy), its
hypernetwork's own prediction (unlifted), the trained hypernetwork as served (predicted where
the shape is in its range, lifted from its nearest proxy otherwise), and the ancestry's DCT
transfer. The trained learngene is kept in ``RUN_DIR/store``; ``--trained VERSION`` measures a
kept one without training again (``--trained-only``: its rows alone; ``--served-only``: the
stored learngene's rows alone, no training).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/does_training_at_user_scale_help.py \
        --steps 400 --run-dir runs/scales-experiment
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tal.checkpoints import store
from tal.checkpoints.learngene import Learngene
from tal.evaluation.finetune import accuracy
from tal.evaluation.runner import RECIPES
from tal.evaluation.user_scale import (
    ARCHITECTURES,
    TAL,
    TAL_UNLIFTED,
    VIT_S_WIDTH_64_RGB,
    UserScale,
    UserScaleConfig,
)
from tal.tasks import load_task
from tal.training.ancestry_trainer import import_ancestry_artifacts
from tal.training.config import HypernetTrainConfig, OptimConfig
from tal.training.distributed import init_distributed
from tal.training.hypernet_trainer import HypernetTrainer
from tal.training.recipe import CPU_RECIPE

SCALES = "cpu-scales"
TRAINED = "tal-scales"


def train_on_scales(learngene: Learngene, args: argparse.Namespace) -> Learngene:
    """Stage 2 on the scales library from ``learngene``'s hypernetwork; the trained learngene
    (its manifest names the scales library, so its range is that library's), kept in
    ``RUN_DIR/store`` as version ``<steps>-steps``."""
    source = store.resolve(learngene.name, learngene.version)
    if not (args.run_dir / "ancestry").exists():
        import_ancestry_artifacts(source, args.run_dir)
    config = HypernetTrainConfig(
        stage=2,
        run_dir=args.run_dir,
        library=SCALES,
        steps=args.steps,
        meta_batch=CPU_RECIPE.meta_batch,
        batch_size=CPU_RECIPE.batch_size,
        task_temperature=CPU_RECIPE.stage2_task_temperature,
        text_library=None,
        eval_every=args.steps,
        eval_archs=1,
        eval_examples=64,
        optim=OptimConfig(lr=args.lr, warmup_steps=args.steps // 10),
        **RECIPES["tal"].loss_fields(CPU_RECIPE.stage2_distillation),
    )
    trainer = HypernetTrainer(config, init_distributed("cpu"))
    # the stored weights to start from (a resumed run loads its own state over them)
    trainer.hypernet.load_state_dict(learngene.hypernet.state_dict(), strict=True)
    began = time.perf_counter()
    trainer.run()
    print(f"trained {args.steps} steps on {SCALES} in {time.perf_counter() - began:.0f} s")
    trained = Learngene(
        trainer.hypernet.eval(),
        dict(learngene.tasks),
        name=TRAINED,
        ancestry=learngene.ancestry,
        manifest={"library": {"name": SCALES}},
    )
    trained.save(TRAINED, f"{args.steps}-steps", args.run_dir / "store", trained.manifest)
    return trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="tal-default:latest")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/scales-experiment"))
    parser.add_argument("--test-examples", type=int, default=500, help="per task and arch")
    parser.add_argument(
        "--architectures", nargs="+", choices=list(ARCHITECTURES), default=[VIT_S_WIDTH_64_RGB]
    )
    parser.add_argument("--trained", help="a version in RUN_DIR/store to measure; no training")
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--trained-only", action="store_true", help="skip the stored learngene's starts"
    )
    only.add_argument(
        "--served-only", action="store_true", help="the stored learngene's starts, no training"
    )
    args = parser.parse_args()
    name, _, version = args.checkpoint.partition(":")
    learngene = Learngene.load(name, version or store.LATEST, device="cpu")
    if args.served_only:
        trained = learngene
    elif args.trained:
        trained = Learngene.load(TRAINED, args.trained, args.run_dir / "store", device="cpu")
    else:
        trained = train_on_scales(learngene, args)
    served = UserScale(learngene, UserScaleConfig())
    scaled = UserScale(trained, UserScaleConfig())
    starts = {
        "dct (ancestry)": (served, "dct"),
        "served (lifted)": (served, TAL),
        "served, unlifted": (served, TAL_UNLIFTED),
        f"trained on {SCALES}": (scaled, TAL),
    }
    if args.trained_only:
        starts = {label: start for label, start in starts.items() if start[0] is scaled}
    if args.served_only:
        starts = {label: start for label, start in starts.items() if start[0] is served}
    tasks = list(learngene.ancestry.task_offsets)
    for arch in args.architectures:
        spec = ARCHITECTURES[arch]
        print(f"\n{arch}; proxy of the trained learngene: {trained.proxy(spec)} (None: in range)")
        tests = {
            task: load_task(
                task,
                "test",
                limit=args.test_examples,
                image_size=spec.img_size,
                in_chans=spec.in_chans,
            )
            for task in tasks
        }
        print("| start | " + " | ".join(tasks) + " | mean |")
        print("| --- " * (len(tasks) + 2) + "|")
        for label, (scale, method) in starts.items():
            scores = []
            for task, test in tests.items():
                task_spec = spec.model_copy(update={"num_classes": test.num_classes})
                with torch.no_grad():
                    scores.append(100 * accuracy(scale.model(method, task_spec, task, 0), test))
            cells = " | ".join(f"{s:.1f}" for s in scores)
            print(f"| {label} | {cells} | {sum(scores) / len(scores):.1f} |", flush=True)


if __name__ == "__main__":
    main()
