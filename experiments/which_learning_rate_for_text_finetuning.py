"""Does the text evaluation's fine-tuning recipe favour TAL? (docs/lab/text_finetuning.md)

``tal eval --modality text`` fine-tunes every start with one recipe (AdamW, lr 1e-3, warm-up
over the first epoch then cosine, 3 epochs of 480 rows, the ``medium`` held-out GPT-2) and
asks TAL to end 10 points above Hugging Face's init. A learning rate that suits one start may
not suit the other: this sweeps the recipe's learning rate for Hugging Face's init (seeded by
the run) and the shipped checkpoint (``tal-shipped``, task-conditioned; on the unseen task from
its fitted head, as the evaluation does), and prints each start's final accuracy and LM loss
per task, then per learning rate the mean accuracy of each start and TAL's lead.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 \\
        python experiments/which_learning_rate_for_text_finetuning.py --lrs 3e-4 1e-3 3e-3
"""

from __future__ import annotations

import argparse
import statistics

from tal.checkpoints.learngene import load_default
from tal.evaluation.text import TextEvalInputs, measure_finetuned
from tal.evaluation.text_config import TextEvalConfig
from tal.tasks import list_tasks
from tal.training.text_data import TEXT

STARTS = ("hugging-face", "tal-shipped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every text task")
    args = parser.parse_args()

    tasks = tuple(args.tasks or [task.name for task in list_tasks(TEXT)])
    learngenes = {"hugging-face": None, "tal-shipped": load_default(device="cpu")}
    inputs = TextEvalInputs.draw(TextEvalConfig())
    final: dict[tuple[float, str], list[float]] = {}
    for lr in args.lrs:
        config = TextEvalConfig(recipe_lr=lr, seeds=tuple(args.seeds), finetune_tasks=tasks)
        for start in STARTS:
            curves = measure_finetuned(learngenes[start], inputs, config)
            for task, per_seed in curves.items():
                for seed, curve in per_seed.items():
                    accuracy = 100 * curve["test_accuracy"][-1]
                    final.setdefault((lr, start), []).append(accuracy)
                    print(
                        f"{task:20} lr {lr:g} {start:12} seed {seed}: accuracy {accuracy:.1f}, "
                        f"LM loss {curve['test_lm_loss'][-1]:.3f}",
                        flush=True,
                    )
    print(f"\n{'lr':>8} " + " ".join(f"{start:>12}" for start in STARTS) + "  TAL's lead")
    for lr in args.lrs:
        means = [statistics.mean(final[(lr, start)]) for start in STARTS]
        print(f"{lr:8g} " + " ".join(f"{m:12.1f}" for m in means) + f"  {means[1] - means[0]:+.1f}")


if __name__ == "__main__":
    main()
