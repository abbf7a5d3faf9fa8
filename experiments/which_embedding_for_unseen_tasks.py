"""Which task embedding serves an unseen task best: its own, or one built from the known tasks.

The hypernetwork's stage 2 sees a handful of task embeddings; a new task's embedding (the
ancestry's mean feature over its images) lies outside them. For the held-out image task and
the evaluation's held-out architectures this prints the untrained accuracy (shrinkage-LDA
head fitted on the task's 300 support images, as ``tal eval`` measures the unseen task) when the
prediction is conditioned on: the task's own embedding, the mean of the known tasks', each
known task's, and a similarity-weighted mixture of the known tasks' embeddings.

    PYTHONPATH=$PWD python experiments/which_embedding_for_unseen_tasks.py
"""

from __future__ import annotations

import argparse

import torch

from tal.arch.target_models import build_model
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.checkpoints.learngene import Learngene
from tal.evaluation.config import EvalConfig
from tal.evaluation.finetune import accuracy
from tal.evaluation.runner import eval_architectures
from tal.heads.discriminant import fit_discriminant_head
from tal.tasks import held_out_task, list_tasks, load_task

PERCENT = 100.0
TEST_EXAMPLES = 1000  # as docs/results.md's run


def mixture(own: torch.Tensor, known: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over negative squared distances from ``own`` ``(D,)`` to ``known`` ``(K, D)``,
    scaled by ``temperature`` times the mean squared distance; returns ``(D,)``."""
    distances = (known - own).pow(2).sum(dim=1)
    weights = torch.softmax(-distances / (temperature * distances.mean()), dim=0)
    return weights @ known


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="tal-default:latest", help="NAME:VERSION")
    parser.add_argument("--test-examples", type=int, default=TEST_EXAMPLES)
    args = parser.parse_args()
    name, version = args.checkpoint.split(":")
    learngene = Learngene.load(name, version, device="cpu")
    task = held_out_task()
    known_names = [
        info.name
        for info in list_tasks("image")
        if info.name in learngene.tasks and info.name != task.name
    ]
    known = torch.stack([learngene.tasks[n] for n in known_names])
    known_mean = known.mean(dim=0)
    own = learngene.tasks[task.name]
    support = load_task(task.name, "train", limit=TASK_EMBEDDING_EXAMPLES)
    evaluation = load_task(task.name, "test", limit=args.test_examples)
    distances = (known - own).pow(2).sum(dim=1).sqrt()
    print("distance to each known task:", dict(zip(known_names, distances.tolist(), strict=True)))
    conditions = {
        "own": own,
        "mean of known": known_mean,
        **{f"known: {n}": e for n, e in zip(known_names, known, strict=True)},
        **{f"mixture t={t}": mixture(own, known, t) for t in (0.1, 0.3, 1.0)},
        "halfway to the mean": (own + known_mean) / 2,
    }
    archs = eval_architectures(EvalConfig())
    print(f"{'condition':24s} " + " ".join(f"{a:>8s}" for a in archs) + "     mean")
    for label, embedding in conditions.items():
        cells = []
        for spec in archs.values():
            spec = spec.model_copy(update={"num_classes": task.num_classes})
            model = build_model(spec, "timm")
            model.load_state_dict(learngene.predict(spec, task=embedding), strict=True)
            fit_discriminant_head(model, support.images, support.labels)
            cells.append(PERCENT * accuracy(model, evaluation))
        mean = sum(cells) / len(cells)
        print(f"{label:24s} " + " ".join(f"{c:8.1f}" for c in cells) + f" {mean:8.1f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
