"""What fitting a discriminant head to a new task's images costs on top of predicting weights.

The service's ``head: "auto"`` (docs/service.md) and ``tal predict --task-data`` both predict
the weights in float32 and then fit the classifier head to the task's kept images
(``tal.heads.support.fit_head_to_support``). For the held-out task's 300 support images and each
architecture, this prints the median time of the prediction alone (the baseline, measured in
the same run) and of prediction plus fit, their ratio, and, for architectures at the support
images' own size, untrained test accuracy with the predicted and the fitted head.

    python bench/head_fit.py [--learngene tal-default:latest] [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tal.arch.parse import parse_arch
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.checkpoints.learngene import Learngene
from tal.evaluation.config import EvalConfig
from tal.evaluation.runner import eval_architectures
from tal.heads.support import fit_head_to_support, task_support
from tal.tasks import TaskData, held_out_task, load_task

PERCENT = 100.0
MS = 1e3
LARGE_ARCH = "vit_small_patch16_224"  # a timm model users initialise, at its own 224 px


def _median_seconds(run: object, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def _accuracy(spec: ViTSpec, tensors: dict[str, torch.Tensor], test: TaskData) -> float:
    model = build_model(spec, "timm").eval()
    model.load_state_dict(tensors, strict=True)
    return PERCENT * float((model(test.images).argmax(1) == test.labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learngene", default="tal-default:latest", help="NAME:VERSION")
    parser.add_argument("--config", default="configs/eval-cpu-long.json", help="EvalConfig")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--test-examples", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with open(args.config) as file:
        config = EvalConfig.model_validate_json(file.read())
    name, version = args.learngene.split(":")
    learngene = Learngene.load(name, version, device="cpu")
    task = held_out_task().name
    support = task_support(load_task(task, "train"), TASK_EMBEDDING_EXAMPLES)
    test = load_task(task, "test", limit=args.test_examples)
    embedding = learngene.embed_task(support.images)
    archs = {
        label: spec.model_copy(update={"num_classes": support.num_classes})
        for label, spec in eval_architectures(config).items()
    }
    archs[LARGE_ARCH] = parse_arch(LARGE_ARCH).model_copy(  # type: ignore[union-attr]
        update={"num_classes": support.num_classes}
    )
    print(
        f"{learngene.model_version}, task {task}: {len(support.labels)} support images, "
        f"{args.threads} threads, median of {args.reps}"
    )
    columns = ("arch", "params", "predict ms", "with fit ms", "ratio", "test acc % pred -> fit")
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for label, spec in archs.items():

        def predict(spec: ViTSpec = spec) -> dict[str, torch.Tensor]:
            return learngene.predict(spec, embedding, "timm", "float32")

        def predict_and_fit(spec: ViTSpec = spec) -> dict[str, torch.Tensor]:
            return fit_head_to_support(spec, predict(spec), support, "timm")[0]

        predict()  # warm-up: first-call allocations
        baseline = _median_seconds(predict, args.reps)
        fitted_seconds = _median_seconds(predict_and_fit, args.reps)
        accuracy = "-"
        if test.images.shape[1:] == (spec.in_chans, spec.img_size, spec.img_size):
            before = _accuracy(spec, predict(), test)
            after = _accuracy(spec, predict_and_fit(), test)
            accuracy = f"{before:.1f} -> {after:.1f}"
        print(
            f"| {label} | {spec.num_params():,} | {baseline * MS:.0f} | "
            f"{fitted_seconds * MS:.0f} | {fitted_seconds / baseline:.1f}x | {accuracy} |"
        )


if __name__ == "__main__":
    main()
