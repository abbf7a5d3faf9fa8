"""The ancestry model: a ViT trained on the task suite whose CLS features define tasks.

Its mean CLS feature over a task's training images is that task's embedding (what the
hypernetwork is conditioned on), and its per-image CLS features are the distillation targets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.transfer import TRANSFER_METHODS, TransferMethod

FEATURE_BATCH = 256
TASK_EMBEDDING_EXAMPLES = 300  # training images behind a task's embedding ("a few hundred")
MIN_TASK_EXAMPLES = 1


class NoAncestryError(RuntimeError):
    """The checkpoint has no ancestry model, so it cannot embed new tasks from images."""


def ancestry_inputs(images: torch.Tensor, spec: ViTSpec) -> torch.Tensor:
    """``(N, C, H, W)`` or ``(N, H, W)`` float -> ``(N, spec.in_chans, img, img)``.

    Resizes bilinearly and converts channels (mean to grey, repeat to colour); values are
    standardised per batch so images from any source land in the range the model was trained on.
    """
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[0] < MIN_TASK_EXAMPLES:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
    images = images.float()
    if images.shape[1] != spec.in_chans:
        grey = images.mean(dim=1, keepdim=True)
        images = grey.expand(-1, spec.in_chans, -1, -1)
    if images.shape[-2:] != (spec.img_size, spec.img_size):
        images = F.interpolate(
            images, size=(spec.img_size, spec.img_size), mode="bilinear", align_corners=False
        )
    std = images.std().clamp_min(1e-6)
    return (images - images.mean()) / std


@dataclass
class Ancestry:
    """A timm ViT and the label ranges of the tasks it was trained on.

    Attributes:
        task_offsets: task name -> ``(start, stop)`` of its classes in the shared head.
    """

    spec: ViTSpec
    model: nn.Module
    task_offsets: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def create(cls, spec: ViTSpec, task_offsets: dict[str, tuple[int, int]]) -> Ancestry:
        return cls(spec, build_model(spec, "timm"), dict(task_offsets))

    @property
    def width(self) -> int:
        return self.spec.embed_dim

    def cls_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` prepared images -> ``(N, width)`` pooled features (differentiable)."""
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)

    @torch.no_grad()
    def features(self, images: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """``(N, width)`` CLS features in evaluation mode, computed in batches; with ``logits``
        the head's ``(N, union classes)`` logits instead (``task_offsets`` slice them)."""
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        compute = self.model if logits else self.cls_features
        chunks = [compute(batch.to(device)) for batch in images.split(FEATURE_BATCH)]
        self.model.train(was_training)
        return torch.cat(chunks)

    def embed_task(self, images: torch.Tensor) -> torch.Tensor:
        """The task embedding ``(width,)``: mean CLS feature over the task's images."""
        return self.features(ancestry_inputs(images, self.spec)).mean(dim=0)

    def transfer(
        self, target: ViTSpec, method: TransferMethod, task: str | None = None, seed: int = 0
    ) -> dict[str, torch.Tensor]:
        """The target's timm state dict transferred from this model's weights by ``method``
        (``tal.transfer``: ``"weight_selection"`` or ``"dct"``), with no training.

        For a ``task`` this model learned, its rows of the union head become the target's head
        (``target.num_classes`` must equal the task's class count); for any other task, or
        none, the head keeps the target's timm initialisation.
        """
        if method not in TRANSFER_METHODS:
            raise ValueError(
                f"unknown transfer method {method!r}; use one of {list(TRANSFER_METHODS)}"
            )
        head_rows = self.task_offsets.get(task) if task is not None else None
        source_state = {name: t.detach().cpu() for name, t in self.model.state_dict().items()}
        return TRANSFER_METHODS[method](self.spec, source_state, target, seed, head_rows)

    def to_bytes(self) -> bytes:
        """Safetensors bytes (metadata: spec, task offsets); the same model gives the same bytes."""
        from tal.blobs.io import to_bytes

        metadata = {
            "spec": self.spec.canonical_json(),
            "task_offsets": json.dumps(self.task_offsets),
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        return to_bytes(state, metadata=metadata)

    @classmethod
    def from_bytes(cls, blob: bytes, device: str | torch.device = "cpu") -> Ancestry:
        from tal.blobs.io import read_metadata

        metadata = read_metadata(blob)
        spec = ViTSpec.model_validate_json(metadata["spec"])
        offsets = {k: tuple(v) for k, v in json.loads(metadata["task_offsets"]).items()}
        model = build_model(spec, "timm")
        model.load_state_dict(safetensors.torch.load(blob), strict=True)
        return cls(spec, model.to(device).eval(), offsets)  # type: ignore[arg-type]
