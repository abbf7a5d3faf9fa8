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
_AFTER_THE_BLOCKS = ("norm.", "fc_norm.", "attn_pool.", "head.")  # timm ViT parameter names


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
    layer_decay: float = 1.0  # block i of L trains at lr * layer_decay ** (L + 1 - i)
    head_only_epochs: int = 0  # the first epochs train the head alone, at a constant ``lr``


def layer_decayed_groups(model: nn.Module, lr: float, decay: float) -> list[dict]:
    """AdamW parameter groups of a timm ViT with layer-wise learning-rate decay.

    Depth 0 is everything before the blocks (patch embedding, class token, positions), depth
    ``i`` block ``i`` (1-based) and depth ``L + 1`` the final norm and the head; a parameter at
    depth ``d`` trains at ``lr * decay ** (L + 1 - d)``, so the head keeps ``lr`` and the first
    layers move least. ``decay == 1`` is one group at ``lr``.
    """
    if not 0 < decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {decay}")
    if decay == 1:
        return [{"params": list(model.parameters()), "lr": lr}]
    top = len(model.blocks) + 1
    groups: dict[int, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if name.startswith("blocks."):
            depth = int(name.split(".")[1]) + 1
        elif name.startswith(_AFTER_THE_BLOCKS):
            depth = top
        else:
            depth = 0
        groups.setdefault(depth, []).append(p)
    return [
        {"params": params, "lr": lr * decay ** (top - depth)}
        for depth, params in sorted(groups.items())
    ]


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

    With ``recipe.head_only_epochs`` the classifier head trains alone first (linear probing,
    then fine-tuning: the features do not move while the head is still wrong); the warm-up and
    the cosine schedule then span the remaining epochs.

    With ``recipe.calibrate_head`` the classifier head is first scaled by the factor in [0, 1]
    fitted on the first ``recipe.calibration_examples`` training images (in place).
    """
    if not 0 <= recipe.head_only_epochs < recipe.epochs:
        raise ValueError(
            f"head_only_epochs must leave epochs to fine-tune: {recipe.head_only_epochs} of "
            f"{recipe.epochs}"
        )
    curve = Curve()
    if recipe.calibrate_head:
        support = slice(0, recipe.calibration_examples)
        curve.head_calibration = calibrate_head(model, train.images[support], train.labels[support])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        layer_decayed_groups(model, recipe.lr, recipe.layer_decay),
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
    )
    head = {id(p) for p in model.get_classifier().parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head]
    steps_per_epoch = max(1, len(train.labels) // recipe.batch_size)
    scheduler = None
    for epoch in range(recipe.epochs):
        if epoch == recipe.head_only_epochs:
            scheduler = warmup_cosine_schedule(
                optimizer,
                (recipe.epochs - epoch) * steps_per_epoch,
                recipe.warmup_epochs * steps_per_epoch,
            )
        for p in backbone:  # frozen parameters get no gradient, so AdamW leaves them alone
            p.requires_grad_(scheduler is not None)
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
            if scheduler is not None:
                scheduler.step()
            total += loss.item()
        curve.train_loss.append(total / steps_per_epoch)
        curve.test_accuracy.append(accuracy(model, test))
    return curve
