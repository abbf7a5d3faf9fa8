"""Fine-tuning a ViT from a given initialisation with one fixed recipe for every method."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tal.tasks import TaskData

EVAL_BATCH = 512


@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    label_smoothing: float = 0.0


@dataclass
class Curve:
    """Per-epoch training loss and test accuracy (index 0 = after epoch 1)."""

    train_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


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


def finetune(
    model: nn.Module, train: TaskData, test: TaskData, recipe: FinetuneRecipe, seed: int
) -> Curve:
    """AdamW with a cosine schedule over ``recipe.epochs``; the seed fixes the data order."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    steps_per_epoch = max(1, len(train.labels) // recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=recipe.epochs * steps_per_epoch
    )
    curve = Curve()
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
