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
import dataclasses
import statistics

from tal.checkpoints.learngene import load_default
from tal.evaluation.text import initial_model, text_eval_architectures
from tal.evaluation.text_config import TextEvalConfig
from tal.evaluation.text_measure import LMPositions, finetune_text, fit_score_head
from tal.tasks import held_out_task, list_tasks, load_task
from tal.training.text_data import TEXT

STARTS = ("hugging-face", "tal-shipped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every text task")
    args = parser.parse_args()

    config = TextEvalConfig()
    shipped = load_default(device="cpu")
    tasks = args.tasks or [task.name for task in list_tasks(TEXT)]
    unseen = held_out_task(TEXT).name
    support = load_task(unseen, "train", limit=config.support_examples)
    base = text_eval_architectures(config.library)["medium"]
    final: dict[tuple[float, str], list[float]] = {}
    for task in tasks:
        train = load_task(task, "train", limit=config.finetune_examples)
        test = load_task(task, "test", limit=config.test_examples)
        lm_test = load_task(task, "test")
        positions = LMPositions.draw(lm_test, config.test_lm_positions, config.max_tokens)
        spec = base.model_copy(update={"num_classes": train.num_classes})
        for lr in args.lrs:
            recipe = dataclasses.replace(config.recipe, lr=lr)
            for start in STARTS:
                learngene = shipped if start == "tal-shipped" else None
                for seed in args.seeds:
                    model = initial_model(learngene, spec, task, seed)
                    if task == unseen and learngene is not None:
                        fit_score_head(model, support, config.max_tokens)
                    curve = finetune_text(model, train, test, lm_test, positions, recipe, seed)
                    accuracy = 100 * curve.test_accuracy[-1]
                    final.setdefault((lr, start), []).append(accuracy)
                    print(
                        f"{task:20} lr {lr:g} {start:12} seed {seed}: accuracy {accuracy:.1f}, "
                        f"LM loss {curve.test_lm_loss[-1]:.3f}",
                        flush=True,
                    )
    print(f"\n{'lr':>8} " + " ".join(f"{start:>12}" for start in STARTS) + "  TAL's lead")
    for lr in args.lrs:
        means = [statistics.mean(final[(lr, start)]) for start in STARTS]
        print(f"{lr:8g} " + " ".join(f"{m:12.1f}" for m in means) + f"  {means[1] - means[0]:+.1f}")


if __name__ == "__main__":
    main()
