"""Where do the training-free transfers of the ancestry beat a stored learngene's prediction?

Prints the untrained test accuracy of each method on the small-scale evaluation's held-out
architectures (``tal.evaluation.runner.eval_architectures``: small, medium, largest, deeper),
every image task of the suite, one line per task and architecture. Methods: ``tal`` (the
learngene as served: in its range as predicted, lifted beyond it), ``tal_unlifted`` (its
hypernetwork's own prediction), ``weight_selection`` and ``dct`` (the ancestry's weights
carried to the shape, ``tal.transfer``), ``random`` (timm's init). On a task the ancestry did
not learn, every method's head is the shrinkage-LDA head fitted to the task's balanced support
images, as ``tal eval --user-scale`` does.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/where_the_transfers_beat_tal.py \
        --methods weight_selection dct tal tal_unlifted
"""

from __future__ import annotations

import argparse

import torch

from tal.checkpoints import store
from tal.checkpoints.learngene import Learngene
from tal.evaluation.config import EvalConfig
from tal.evaluation.finetune import accuracy
from tal.evaluation.runner import eval_architectures
from tal.evaluation.user_scale import METHODS, UserScale, UserScaleConfig
from tal.tasks import SUITE_IMAGE_SIZE, SUITE_IN_CHANS, list_tasks, load_task

TEST_EXAMPLES = 1000  # as docs/results.md's run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=store.DEFAULT_NAME, help="NAME or NAME:VERSION")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--test-examples", type=int, default=TEST_EXAMPLES)
    args = parser.parse_args()
    torch.manual_seed(0)
    name, _, version = args.checkpoint.partition(":")
    learngene = Learngene.load(name, version or store.LATEST)
    scale = UserScale(learngene, UserScaleConfig(checkpoint=args.checkpoint))
    tasks = list_tasks(image_size=SUITE_IMAGE_SIZE, in_chans=SUITE_IN_CHANS)
    means: dict[tuple[str, str], list[float]] = {}
    for task in tasks:
        test = load_task(task.name, "test", limit=args.test_examples)
        for arch, base in eval_architectures(EvalConfig()).items():
            spec = base.model_copy(update={"num_classes": test.num_classes})
            row = []
            for method in args.methods:
                score = accuracy(scale.model(method, spec, task.name, seed=0).eval(), test)
                means.setdefault((method, arch), []).append(score)
                row.append(f"{method} {100 * score:.1f}")
            print(f"{task.name:14s} {arch:8s} " + "  ".join(row), flush=True)
    print("mean over tasks:")
    for (method, arch), scores in means.items():
        print(f"  {method:16s} {arch:8s} {100 * sum(scores) / len(scores):.1f}")


if __name__ == "__main__":
    main()
