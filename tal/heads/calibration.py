"""Shrinks a predicted classifier head so fine-tuning starts no more confident than it is right.

A hypernetwork predicts the head of a task it may never have trained on (a new task, known only
by an embedding of a few hundred images). Its argmax can beat chance while its logits are
confidently wrong, so fine-tuning starts with a loss above the uniform ``ln(C)`` and spends its
first epoch undoing that. One scalar fixes it: scale the head's weight and bias by the
``t`` in ``[0, 1]`` that minimises the cross-entropy of a few labelled examples (temperature
scaling, fitted on training examples only). ``t = 0`` predicts the uniform distribution, so the
fitted loss never exceeds ``ln(C)``; for ``t > 0`` the argmax, and so the untrained accuracy, is
unchanged; ``t`` never exceeds 1, so a head is never made more confident than predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SCALE_GRID_POINTS = 201  # the cross-entropy is convex in t; a grid on [0, 1] finds it to 0.005
BATCH = 512


@dataclass(frozen=True)
class HeadCalibration:
    """The fitted scale and the examples' mean cross-entropy before and after applying it."""

    scale: float
    loss_before: float
    loss_after: float


def classifier_head(model: nn.Module) -> nn.Linear:
    """The final linear classifier of a timm (``get_classifier()``) or Hugging Face
    (``.classifier``) image model.

    Raises:
        TypeError: the model has no linear classifier head.
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head = head if head is not None else getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__} has no linear classifier head to calibrate")
    return head


@torch.no_grad()
def _head_io(model: nn.Module, head: nn.Linear, images: torch.Tensor, inputs: bool) -> torch.Tensor:
    """The head's inputs (``inputs``) or outputs for ``images``, batched, with the model in
    eval mode (its mode restored after); run on the model's device, returned on the CPU."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(
        lambda _module, args, out: captured.append((args[0] if inputs else out).float().cpu())
    )
    was_training = model.training
    device = head.weight.device
    model.eval()
    try:
        for batch in images.split(BATCH):
            model(batch.to(device))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured)


def head_logits(model: nn.Module, head: nn.Linear, images: torch.Tensor) -> torch.Tensor:
    """The head's outputs ``(N, C)`` for ``images`` ``(N, C_in, H, W)`` (model in eval mode)."""
    return _head_io(model, head, images, inputs=False)


def head_features(model: nn.Module, head: nn.Linear, images: torch.Tensor) -> torch.Tensor:
    """The head's inputs ``(N, D)``, the model's pre-logit features, for ``images``
    ``(N, C_in, H, W)`` (model in eval mode)."""
    return _head_io(model, head, images, inputs=True)


def fit_scale(logits: torch.Tensor, labels: torch.Tensor) -> HeadCalibration:
    """The ``t`` in ``[0, 1]`` minimising the cross-entropy of ``t * logits`` ``(N, C)``
    against ``labels`` ``(N,)`` (the grid point with the lowest loss; ties go to larger t)."""
    scales = torch.linspace(0.0, 1.0, SCALE_GRID_POINTS)
    losses = torch.stack([F.cross_entropy(t * logits, labels) for t in scales])
    best = len(scales) - 1 - int(torch.argmin(losses.flip(0)))
    return HeadCalibration(float(scales[best]), float(losses[-1]), float(losses[best]))


@torch.no_grad()
def calibrate_head(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> HeadCalibration:
    """Fits the head's scale on ``images`` ``(N, C_in, H, W)`` and ``labels`` ``(N,)`` and
    applies it to the model's classifier weight and bias in place."""
    if len(labels) == 0:
        raise ValueError("head calibration needs at least one labelled example")
    head = classifier_head(model)
    calibration = fit_scale(head_logits(model, head, images), labels)
    head.weight.mul_(calibration.scale)
    if head.bias is not None:
        head.bias.mul_(calibration.scale)
    return calibration
