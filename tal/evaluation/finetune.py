"""Fine-tuning a ViT from a given initialisation with one fixed recipe for every method."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.heads.calibration import HeadCalibration, calibrate_head
from tal.tasks import TaskData

EVAL_BATCH = 512


@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    calibrate_head: bool = False  # scale the head first (tal.heads.calibration)
    calibration_examples: int = TASK_EMBEDDING_EXAMPLES  # the first this many fit the scale
    warmup_epochs: int = 0  # the learning rate rises linearly to ``lr`` over these epochs


@dataclass
class Curve:
    """Per-epoch training loss and test accuracy (index 0 = after epoch 1), and the head's
    calibration before epoch 1 when the recipe asks for one."""

    train_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    head_calibration: HeadCalibration | None = None


@torch.no_grad()
def accuracy(model: nn.Module, data: TaskData) -> float:
    model.eval()
    correct = sum(
        int((model(batch_x).argmax(1) == batch_y).sum())
        for batch_x, batch_y in zip(
            data.images.split(EVAL_BATCH), data.labels.split(EVAL_BATCH), strict=True
        )
    )
    return correct / len(data.labels)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over ``warmup_steps`` steps (the first at ``lr / (warmup_steps + 1)``),
    then cosine annealing to zero over the remaining steps; plain cosine with no warm-up.

    Adam's first updates are about ``lr`` per weight whatever the gradient's size, and from a
    predicted initialisation on a small task a few such steps undid what the prediction gave
    (docs/lab/ablations.md).
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warm-up must leave steps to anneal: {warmup_steps} of {total_steps} steps"
        )
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps)
    if warmup_steps == 0:
        return cosine
    warmup = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0 / (warmup_steps + 1), total_iters=warmup_steps
    )
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer, schedulers=[warmup, cosine], milestones=[warmup_steps]
    )


def finetune(
    model: nn.Module, train: TaskData, test: TaskData, recipe: FinetuneRecipe, seed: int
) -> Curve:
    """AdamW with a cosine schedule over ``recipe.epochs``; the seed fixes the data order.

    With ``recipe.calibrate_head`` the classifier head is first scaled by the factor in [0, 1]
    fitted on the first ``recipe.calibration_examples`` training images (in place).
    """
    curve = Curve()
    if recipe.calibrate_head:
        support = slice(0, recipe.calibration_examples)
        curve.head_calibration = calibrate_head(model, train.images[support], train.labels[support])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    steps_per_epoch = max(1, len(train.labels) // recipe.batch_size)
    scheduler = warmup_cosine_schedule(
        optimizer, recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch
    )
    for _ in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(train.labels), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            loss = F.cross_entropy(
                model(train.images[idx]), train.labels[idx], label_smoothing=recipe.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        curve.train_loss.append(total / steps_per_epoch)
        curve.test_accuracy.append(accuracy(model, test))
    return curve
