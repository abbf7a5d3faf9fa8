"""A tiny ancestry run shared by the training tests (seconds, not minutes)."""

from __future__ import annotations

import shutil

import pytest

from tal.training.ancestry_trainer import AncestryTrainer
from tal.training.config import AncestryTrainConfig, OptimConfig
from tal.training.distributed import DistInfo

DATA_LIMIT = 64
CPU = DistInfo(rank=0, world_size=1, device=__import__("torch").device("cpu"))


def tiny_ancestry_config(run_dir, **overrides) -> AncestryTrainConfig:
    fields = dict(
        run_dir=run_dir,
        depth=1,
        embed_dim=32,
        num_heads=2,
        steps=30,
        batch_size=32,
        eval_every=30,
        checkpoint_every=30,
        task_examples=32,
        optim=OptimConfig(lr=3e-3, warmup_steps=2),
    )
    return AncestryTrainConfig(**{**fields, **overrides})


@pytest.fixture(scope="session")
def ancestry_run(tmp_path_factory):
    """A run folder holding trained (tiny) ancestry artifacts."""
    run_dir = tmp_path_factory.mktemp("run")
    trainer = AncestryTrainer(tiny_ancestry_config(run_dir, overfit_batch=True), CPU, DATA_LIMIT)
    trainer.run_and_export()
    return run_dir


@pytest.fixture
def run_copy(ancestry_run, tmp_path):
    """A fresh run folder with the shared ancestry artifacts (no hypernet state)."""
    target = tmp_path / "run"
    shutil.copytree(ancestry_run / "ancestry", target / "ancestry")
    return target
