"""Constants and helpers shared by the client tests (imported by name: unique module)."""

from __future__ import annotations

from pathlib import Path

import torch

MODEL = "tal-client"
TASK = "t"


def make_store(root: Path) -> Path:
    from tal.checkpoints.learngene import Learngene

    learngene = Learngene.fresh()
    learngene.add_task(TASK, torch.ones(learngene.hypernet.config.encoder.task_dim))
    learngene.save(MODEL, "1", root=root)
    return root


def service_settings(store: Path) -> dict[str, str]:
    return {
        "TAL_MODEL_STORE": str(store),
        "TAL_MODEL_NAME": MODEL,
        "TAL_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
