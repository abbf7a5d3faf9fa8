"""Tiny ancestry runs shared by the training tests (seconds, not minutes): the image ancestry
ViT and the text ancestry GPT-2 in one run folder, as ``tal train ancestry`` writes them."""

from __future__ import annotations

import shutil

import pytest

from tal.training.ancestry_trainer import AncestryTrainer
from tal.training.config import AncestryTrainConfig, OptimConfig, TextAncestryTrainConfig
from tal.training.distributed import DistInfo
from tal.training.text_ancestry_trainer import TEXT_ARTIFACT_DIR, TextAncestryTrainer

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


def tiny_text_ancestry_config(run_dir, **overrides) -> TextAncestryTrainConfig:
    fields = dict(
        run_dir=run_dir,
        n_layer=1,
        n_embd=16,
        n_head=2,
        steps=20,
        batch_size=16,
        max_tokens=32,
        lm_positions=64,
        eval_every=20,
        checkpoint_every=20,
        task_examples=32,
        optim=OptimConfig(lr=3e-3, warmup_steps=2),
    )
    return TextAncestryTrainConfig(**{**fields, **overrides})


@pytest.fixture(scope="session")
def ancestry_run(tmp_path_factory):
    """A run folder holding trained (tiny) image and text ancestry artifacts."""
    run_dir = tmp_path_factory.mktemp("run")
    trainer = AncestryTrainer(tiny_ancestry_config(run_dir, overfit_batch=True), CPU, DATA_LIMIT)
    trainer.run_and_export()
    text = tiny_text_ancestry_config(run_dir, overfit_batch=True)
    TextAncestryTrainer(text, CPU, DATA_LIMIT).run_and_export()
    return run_dir


@pytest.fixture
def run_copy(ancestry_run, tmp_path):
    """A fresh run folder with the shared ancestry artifacts (no hypernet state)."""
    target = tmp_path / "run"
    for folder in ("ancestry", TEXT_ARTIFACT_DIR):
        shutil.copytree(ancestry_run / folder, target / folder)
    return target
