"""Fine-tuning from random init and from a learngene's weights with 0, 1 or more epochs of
learning-rate warm-up, on a validation split.

The check behind ``EvalConfig.recipe_warmup_epochs``, kept apart from ``tal eval``'s test
images: for one task (default: the held-out one) and the medium held-out architecture of the
CPU library, it fine-tunes with ``tal eval``'s recipe (head calibration for the learngene; on
the held-out task the learngene's head is first replaced by the discriminant head, as in
``tal eval``) and prints per-epoch validation accuracy and the mean final accuracy for each
warm-up length.

    python bench/finetune_warmup_check.py [--learngene tal-default:latest] [--task glyphs_latin]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from tal.checkpoints.learngene import Learngene
from tal.evaluation.config import RANDOM_INIT, EvalConfig
from tal.evaluation.finetune import finetune
from tal.evaluation.runner import eval_architectures, initial_model, unseen_task_support
from tal.heads.discriminant import fit_discriminant_head
from tal.tasks import held_out_task, load_task

PERCENT = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learngene", default="tal-default:latest", help="NAME:VERSION")
    parser.add_argument("--config", default="configs/eval-cpu-long.json", help="EvalConfig")
    parser.add_argument("--task", default=held_out_task().name)
    parser.add_argument("--split", default="val", help="where accuracy is measured")
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--warmup-epochs", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    with open(args.config) as file:
        config = EvalConfig.model_validate_json(file.read())
    name, version = args.learngene.split(":")
    learngene = Learngene.load(name, version, device="cpu")
    train = load_task(args.task, "train", limit=config.finetune_examples)
    evaluation = load_task(args.task, args.split, limit=args.eval_examples)
    spec = eval_architectures(config)["medium"].model_copy(
        update={"num_classes": train.num_classes}
    )
    # the held-out task's discriminant-head images, as tal eval takes them (None: predicted head)
    support = unseen_task_support(config) if args.task == held_out_task().name else None
    print(
        f"{args.task}: {len(train.labels)} training images, {config.epochs} epochs, "
        f"{args.split} accuracy % per epoch"
    )
    for method, source in ((RANDOM_INIT, None), (learngene.model_version, learngene)):
        for warmup in args.warmup_epochs:
            recipe = replace(config.recipe_for(method), warmup_epochs=warmup)
            finals = []
            for seed in config.seeds:
                model = initial_model(source, spec, args.task, seed)
                if support is not None and source is not None:
                    fit_discriminant_head(model, support.images, support.labels)
                accuracies = finetune(model, train, evaluation, recipe, seed).test_accuracy
                finals.append(accuracies[-1])
                cells = " ".join(f"{PERCENT * a:5.1f}" for a in accuracies)
                print(f"{method:28s} warm-up {warmup} seed {seed}: {cells}", flush=True)
            print(
                f"{method:28s} warm-up {warmup} final mean {PERCENT * statistics.mean(finals):.1f}"
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
