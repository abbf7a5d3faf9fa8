"""Fine-tuning from a learngene's weights with and without head calibration, on a validation split.

The check behind ``tal.heads.calibration``, kept apart from ``tal eval``'s test images: for one
task (default: the held-out one) and the medium held-out architecture of the CPU library, it
fine-tunes random init and the learngene's prediction, each with and without the head's scale
fitted on the first ``--calibration-examples`` training images, and prints the fitted scale,
the loss on those images before and after, and per-epoch training loss and validation accuracy.

    python bench/head_calibration_check.py [--learngene tal-default:latest] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from tal.checkpoints.learngene import Learngene
from tal.evaluation.config import EvalConfig
from tal.evaluation.finetune import FinetuneRecipe, finetune
from tal.evaluation.runner import eval_architectures, initial_model
from tal.tasks import held_out_task, load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learngene", default="tal-default:latest", help="NAME:VERSION")
    parser.add_argument("--task", default=held_out_task().name)
    parser.add_argument("--split", default="val", help="where accuracy is measured")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--calibration-examples", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()

    name, version = args.learngene.split(":")
    learngene = Learngene.load(name, version, device="cpu")
    train = load_task(args.task, "train", limit=args.train_examples)
    evaluation = load_task(args.task, args.split, limit=args.eval_examples)
    spec = eval_architectures(EvalConfig())["medium"].model_copy(
        update={"num_classes": train.num_classes}
    )
    print(f"{args.task}: {spec.depth} blocks x {spec.embed_dim}, {args.split} accuracy per epoch")
    for method, source in (("random", None), (learngene.model_version, learngene)):
        for calibrated in (False, True):
            recipe = FinetuneRecipe(
                epochs=args.epochs,
                calibrate_head=calibrated,
                calibration_examples=args.calibration_examples,
            )
            finals = []
            for seed in args.seeds:
                model = initial_model(source, spec, args.task, seed)
                curve = finetune(model, train, evaluation, recipe, seed)
                fit = curve.head_calibration
                note = (
                    f" scale {fit.scale:.3f}, loss {fit.loss_before:.2f}->{fit.loss_after:.2f}"
                    if fit
                    else ""
                )
                finals.append(curve.test_accuracy[-1])
                losses = " ".join(f"{v:.2f}" for v in curve.train_loss)
                accs = " ".join(f"{100 * v:.1f}" for v in curve.test_accuracy)
                label = f"{method}{' calibrated' if calibrated else ''}"
                print(f"{label:34s} seed {seed}: loss {losses} | acc {accs}{note}", flush=True)
            print(f"{'':34s} final mean {100 * statistics.mean(finals):.1f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
