"""Initial weights for a task the checkpoint never trained on, from its labelled images.

Three steps, none a gradient step: embed the task with the checkpoint's ancestry model (the
mean feature of a few hundred of its images), predict the weights for that embedding, then
replace the predicted classifier head, whose rows follow no class order the hypernetwork could
have learned, by the discriminant head fitted on the same images (``tal.discriminant_head``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tal.discriminant_head import DiscriminantHeadFit, fit_discriminant_head
from tal.formats import OutputFormat
from tal.learngene import Learngene, parse_dtype
from tal.models import build_model
from tal.specs import SpecLike, ViTSpec, parse_arch
from tal.tasks import TaskData
from tal.training.config import TASK_EMBEDDING_EXAMPLES


@dataclass(frozen=True)
class NewTaskPrediction:
    """Predicted tensors (the model's ``state_dict`` names), the task embedding ``(task_dim,)``
    and the head fit (None when the predicted head was kept)."""

    tensors: dict[str, torch.Tensor]
    embedding: torch.Tensor
    head_fit: DiscriminantHeadFit | None


def balanced_support(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``(min(count, N),)`` into ``labels`` ``(N,)`` taking the classes in turn (each
    class's examples in their order), so that a data set sorted by class gives every class
    its share of the first ``count``."""
    rank_in_class = torch.empty_like(labels)
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        rank_in_class[members] = torch.arange(len(members))
    # rank first, then label: the first example of every class, then the second, ...
    order = torch.argsort(rank_in_class * (int(labels.max()) + 1) + labels, stable=True)
    return order[:count]


def predict_for_task_data(
    learngene: Learngene,
    arch: SpecLike,
    data: TaskData,
    format: OutputFormat = "timm",
    dtype: str = "float32",
    seed: int = 0,
    examples: int = TASK_EMBEDDING_EXAMPLES,
    fit_head: bool = True,
) -> NewTaskPrediction:
    """Weights of ViT ``arch`` for the task of ``data`` (images at the spec's size and
    channels), using at most ``examples`` of its images, balanced over classes.

    Raises:
        ValueError: ``arch`` is not a ViT, its ``num_classes`` differs from the data's, or
            (with ``fit_head``) some class has no image among those used.
        NoAncestryError: the checkpoint has no ancestry model to embed the task with.
    """
    spec = parse_arch(arch)
    if not isinstance(spec, ViTSpec):
        raise ValueError("weights for a task's images need a ViT spec (family 'vit')")
    if spec.num_classes != data.num_classes:
        raise ValueError(
            f"the spec has num_classes={spec.num_classes} but the data has "
            f"{data.num_classes} classes; set num_classes to {data.num_classes}"
        )
    if examples < 1:
        raise ValueError(f"examples must be at least 1, got {examples}")
    support = balanced_support(data.labels, examples)
    images, labels = data.images[support], data.labels[support]
    embedding = learngene.embed_task(images)
    tensors = learngene.predict(spec, embedding, format, "float32", seed)
    head_fit = None
    if fit_head:
        model = build_model(spec, format)
        model.load_state_dict(tensors, strict=True)
        head_fit = fit_discriminant_head(model, images, labels)
        state = model.state_dict()
        tensors = {name: state[name].detach() for name in tensors}
    target = parse_dtype(dtype)
    return NewTaskPrediction(
        {name: value.to(target).contiguous() for name, value in tensors.items()},
        embedding,
        head_fit,
    )
