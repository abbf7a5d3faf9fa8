"""Constants and helpers shared by the client tests (imported by name: unique module)."""

from __future__ import annotations

from pathlib import Path

import torch

MODEL = "tal-client"
TASK = "t"


ANCESTRY_SPEC = dict(
    depth=1, embed_dim=192, num_heads=3, img_size=32, patch_size=4, in_chans=1, num_classes=3
)


def make_store(root: Path) -> Path:
    """``tal-client/1``: a fresh hypernetwork, task ``t`` and an (untrained) ancestry ViT, so
    tasks can be registered from images."""
    from tal.arch.specs import ViTSpec
    from tal.checkpoints.ancestry import Ancestry
    from tal.checkpoints.learngene import Learngene

    learngene = Learngene.fresh()
    learngene.add_task(TASK, torch.ones(learngene.hypernet.config.encoder.task_dim))
    learngene.ancestry = Ancestry.create(ViTSpec(**ANCESTRY_SPEC), {TASK: (0, 3)})
    learngene.save(MODEL, "1", root=root)
    return root


def labelled_npz(path: Path, classes: int = 3, per_class: int = 8) -> Path:
    """An ``.npz`` of grey 28 x 28 images (``images``) and their classes (``labels``)."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(classes * per_class) % classes
    images = rng.integers(0, 255, (len(labels), 28, 28), dtype=np.uint8)
    np.savez(path, images=images, labels=labels)
    return path


def service_settings(store: Path) -> dict[str, str]:
    return {
        "TAL_MODEL_STORE": str(store),
        "TAL_MODEL_NAME": MODEL,
        "TAL_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
