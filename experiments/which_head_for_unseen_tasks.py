"""Untrained accuracy on the unseen task with the predicted head and with fitted heads.

The check behind ``tal.heads.discriminant``, kept apart from ``tal eval``'s test images: for the
held-out task, the small, medium and largest held-out architectures of the CPU library, and
both the learngene's prediction and random init, it prints the validation accuracy with the
head as predicted (timm's for random init), with the nearest class mean head (shrinkage 1) and
with the Ledoit-Wolf shrinkage LDA head, each fitted on the first ``--support-examples``
training images.

    python bench/unseen_head_check.py [--learngene tal-default:latest] [--support-examples 300]
"""

from __future__ import annotations

import argparse

import torch

from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.checkpoints.learngene import Learngene
from tal.evaluation.config import EvalConfig
from tal.evaluation.finetune import accuracy
from tal.evaluation.runner import eval_architectures, initial_model
from tal.heads.discriminant import fit_discriminant_head
from tal.tasks import held_out_task, load_task

ARCHITECTURES = ("small", "medium", "largest")
# head -> (fitted, shrinkage): None is Ledoit-Wolf's, 1.0 the nearest class mean classifier
HEADS: dict[str, tuple[bool, float | None]] = {
    "predicted": (False, None),
    "nearest mean": (True, 1.0),
    "Ledoit-Wolf LDA": (True, None),
}
PERCENT = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learngene", default="tal-default:latest", help="NAME:VERSION")
    parser.add_argument("--split", default="val", help="where accuracy is measured")
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--support-examples", type=int, default=TASK_EMBEDDING_EXAMPLES)
    args = parser.parse_args()

    name, version = args.learngene.split(":")
    learngene = Learngene.load(name, version, device="cpu")
    task = held_out_task()
    support = load_task(task.name, "train", limit=args.support_examples)
    evaluation = load_task(task.name, args.split, limit=args.eval_examples)
    archs = eval_architectures(EvalConfig())
    print(
        f"{task.name} ({task.num_classes} classes): {args.split} accuracy %, heads fitted on "
        f"{len(support.labels)} training images"
    )
    print(f"{'initialisation':26s} {'architecture':12s} " + " ".join(f"{h:>16s}" for h in HEADS))
    for label, source in ((learngene.model_version, learngene), ("random init", None)):
        for arch in ARCHITECTURES:
            spec = archs[arch].model_copy(update={"num_classes": task.num_classes})
            cells = []
            for fitted, shrinkage in HEADS.values():
                model = initial_model(source, spec, task.name, seed=0)
                if fitted:
                    fit_discriminant_head(model, support.images, support.labels, shrinkage)
                cells.append(f"{PERCENT * accuracy(model, evaluation):16.1f}")
            print(f"{label:26s} {arch:12s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
