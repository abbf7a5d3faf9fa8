"""Why does fine-tuning from TAL's predicted weights end below random init? (docs/lab/ablations.md)

Fine-tunes the evaluation's medium held-out architecture with the evaluation's recipe from
several initialisations built out of one checkpoint and prints, per task, the untrained and
final test accuracy (mean over seeds) and how far the predicted weights' per-tensor standard
deviations are from timm's init of the same spec:

- ``random``: timm's default init.
- ``tal``: the checkpoint's prediction with the task's embedding (what the evaluation uses).
- ``tal-no-task``: the unconditioned prediction.
- ``tal-timm-scale``: ``tal`` with every matrix rescaled to the standard deviation timm's init
  gives that tensor (direction from TAL, scale from timm).
- ``tal-plus-random``: ``sqrt(1 - m) * tal + sqrt(m) * random`` per matrix (``--mix``): some of
  random init's full-rank diversity added back.

    python scripts/init_scale_study.py [--model tal-default] [--store DIR] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch

from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.checkpoints.learngene import Learngene
from tal.evaluation.config import EvalConfig
from tal.evaluation.finetune import FinetuneRecipe, accuracy, finetune
from tal.evaluation.runner import eval_architectures
from tal.tasks import load_task

VARIANTS = ("random", "tal", "tal-no-task", "tal-timm-scale", "tal-plus-random")
DEFAULT_TASKS = ("fashion_mnist", "glyphs_script", "glyphs_digits")
MATRIX_DIMS = 2


def _is_matrix(name: str, tensor: torch.Tensor) -> bool:
    return tensor.dim() >= MATRIX_DIMS and not name.endswith(("pos_embed", "cls_token"))


def initial_state(
    variant: str,
    learngene: Learngene,
    spec: ViTSpec,
    timm_state: dict[str, torch.Tensor],
    task: str,
    seed: int,
    mix: float,
) -> dict[str, torch.Tensor]:
    """The state dict of ``variant`` for ``spec``; ``timm_state`` is timm's init for ``seed``."""
    if variant == "random":
        return timm_state
    predicted = learngene.predict(spec, task=None if variant == "tal-no-task" else task)
    if variant in ("tal", "tal-no-task"):
        return predicted
    out = {}
    for name, tensor in predicted.items():
        reference = timm_state[name]
        if not _is_matrix(name, tensor):
            out[name] = tensor
        elif variant == "tal-timm-scale":
            out[name] = tensor * (reference.std() / tensor.std().clamp_min(1e-12))
        else:  # tal-plus-random
            out[name] = math.sqrt(1 - mix) * tensor + math.sqrt(mix) * reference
    return out


def scale_ratios(predicted: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]):
    """Per-matrix std(predicted) / std(timm init): median, min, max."""
    ratios = [
        float(predicted[k].std() / reference[k].std())
        for k in predicted
        if _is_matrix(k, predicted[k]) and reference[k].std() > 0
    ]
    return statistics.median(ratios), min(ratios), max(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tal-default")
    parser.add_argument("--version", default="latest")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--examples", type=int, default=2000, help="training images per task")
    parser.add_argument("--test-examples", type=int, default=1000)
    parser.add_argument("--mix", type=float, default=0.3)
    parser.add_argument("--store", type=Path, default=None, help="model store root")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()

    learngene = Learngene.load(args.model, args.version, root=args.store, device="cpu")
    base = eval_architectures(EvalConfig())["medium"]
    recipe = FinetuneRecipe(epochs=args.epochs)
    print(f"{args.model}:{learngene.manifest['version']}, medium arch {base.model_dump()}")
    print(f"{'task':<15}{'variant':<17}{'untrained %':>12}{'final %':>9}{'sd':>6}  std ratio")
    for task in args.tasks:
        train = load_task(task, "train", limit=args.examples)
        test = load_task(task, "test", limit=args.test_examples)
        spec = base.model_copy(update={"num_classes": train.num_classes})
        for variant in args.variants:
            untrained, final, ratios = [], [], None
            for seed in args.seeds:
                torch.manual_seed(seed)
                model = build_model(spec, "timm")
                reference = {k: v.detach().clone() for k, v in model.state_dict().items()}
                state = initial_state(variant, learngene, spec, reference, task, seed, args.mix)
                ratios = ratios or scale_ratios(state, reference)
                model.load_state_dict(state, strict=True)
                untrained.append(accuracy(model, test))
                final.append(finetune(model, train, test, recipe, seed).test_accuracy[-1])
            spread = statistics.stdev(final) if len(final) > 1 else 0.0
            print(
                f"{task:<15}{variant:<17}{100 * statistics.mean(untrained):>12.1f}"
                f"{100 * statistics.mean(final):>9.1f}{100 * spread:>6.1f}  "
                f"median {ratios[0]:.2f} (min {ratios[1]:.2f}, max {ratios[2]:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
