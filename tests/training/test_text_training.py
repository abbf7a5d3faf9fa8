"""The GPT-2 half of training: the text ancestry, mixed-family stages (image and text steps in
one run, the loss of each falling), export of one checkpoint serving both families, and the
text batches' sampling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import safetensors.torch
import torch

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION
from tal.arch.specs import GPT2Spec
from tal.arch.target_models import build_model
from tal.checkpoints.learngene import Learngene
from tal.checkpoints.text_ancestry import TextAncestry
from tal.tasks import load_task
from tal.training.ancestry_trainer import load_ancestry_artifacts
from tal.training.config import HypernetTrainConfig, OptimConfig
from tal.training.distributed import DistInfo
from tal.training.hypernet_trainer import HypernetTrainer
from tal.training.text_ancestry_trainer import (
    TEXT_ARTIFACT_DIR,
    import_text_ancestry_artifacts,
    load_text_ancestry_artifacts,
)
from tal.training.text_data import sample_lm_positions
from tal.training.text_hypernet import is_text_step

DATA_LIMIT = 64  # as tests/training/conftest.py
CLI_TIMEOUT_S = 300
CPU = DistInfo(rank=0, world_size=1, device=torch.device("cpu"))
TEXT_TASKS = {
    "fortune_topic",
    "wordnet_noun_sense",
    "man_section",
    "fortune_language",
    "wordnet_verb_sense",
}


def records(run_dir, stage):
    return [
        json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()
    ]


def mixed_config(run_dir, stage=1, **overrides) -> HypernetTrainConfig:
    fields = dict(
        stage=stage,
        run_dir=run_dir,
        steps=16,
        text_share=0.5,
        meta_batch=1,
        batch_size=16,
        text_meta_batch=1,
        text_batch_size=8,
        text_max_tokens=32,
        text_lm_positions=32,
        text_eval_examples=16,
        eval_every=16,
        eval_archs=1,
        eval_examples=32,
        checkpoint_every=8,
        optim=OptimConfig(lr=2e-3, warmup_steps=1),
        overfit_batch=True,
    )
    return HypernetTrainConfig(**{**fields, **overrides})


def family_losses(run_dir, stage, share=0.5):
    text, image = [], []
    for record in records(run_dir, stage):
        (text if is_text_step(record["step"], share) else image).append(record["loss"])
    return image, text


def test_text_ancestry_smoke(ancestry_run):
    losses = [r["loss"] for r in records(ancestry_run, TEXT_ARTIFACT_DIR)]
    assert losses[-1] < losses[0] * 0.95
    ancestry, embeddings, summary = load_text_ancestry_artifacts(ancestry_run)
    assert set(embeddings) == TEXT_TASKS
    assert all(e.shape == (16,) and torch.isfinite(e).all() for e in embeddings.values())
    assert 0 <= summary["metrics"]["val_acc_mean"] <= 1 and summary["metrics"]["val_lm_mean"] > 0
    blob = ancestry.to_bytes()
    assert len({ancestry.to_bytes() for _ in range(3)}) == 1  # byte-stable
    again = TextAncestry.from_bytes(blob)
    assert torch.equal(again.token_table(), ancestry.token_table())  # serving = training
    table = ancestry.token_table()
    assert table.shape == (50_257, 64) and torch.equal(table[:, 16:], torch.zeros(50_257, 48))
    whitened = table[:, :16].double().T @ table[:, :16].double() / 50_257 * 16
    assert torch.allclose(whitened, torch.eye(16, dtype=torch.float64), atol=1e-3)
    data = load_task("wordnet_verb_sense", "train", limit=32)  # the held-out task's rows
    embedded = again.embed_task(data.input_ids, data.lengths, task_dim=32)
    assert embedded.shape == (32,) and torch.equal(embedded[16:], torch.zeros(16))
    torch.testing.assert_close(embedded[:16], embeddings["wordnet_verb_sense"])


def test_mixed_stages_learn_and_export_one_checkpoint_for_both_families(run_copy, tmp_path):
    stage1 = HypernetTrainer(mixed_config(run_copy), CPU, DATA_LIMIT)
    metrics = stage1.run()
    image, text = family_losses(run_copy, "stage1")
    assert len(image) == len(text) == 8
    assert image[-1] < image[0] and text[-1] < text[0]
    assert 0 <= metrics["heldout_text_acc_mean"] <= 1 and metrics["heldout_text_lm_mean"] > 0
    assert 0 <= metrics["heldout_acc_mean"] <= 1  # the image check is still there
    config = mixed_config(run_copy, stage=2, init_from=run_copy / "stage1" / "last.safetensors")
    stage2 = HypernetTrainer(config, CPU, DATA_LIMIT)
    stage2.run()
    image, text = family_losses(run_copy, "stage2")
    assert image[-1] < image[0] and text[-1] < text[0]
    stage2.export("tiny", "1", tmp_path / "store")

    learngene = Learngene.load("tiny", "1", root=tmp_path / "store", device="cpu")
    assert learngene.text_ancestry is not None and learngene.ancestry is not None
    assert set(learngene.tasks) >= TEXT_TASKS and "glyphs_greek" in learngene.tasks
    assert learngene.manifest["text_held_out_task"] == ["wordnet_verb_sense"]
    assert learngene.hypernet.token_vocab_size == 50_257
    spec = GPT2Spec(n_layer=2, n_embd=64, n_head=2, n_positions=128, num_classes=12)
    conditioned = learngene.predict(spec, "fortune_topic", HF_SEQUENCE_CLASSIFICATION)
    plain = learngene.predict(spec, None, HF_SEQUENCE_CLASSIFICATION)
    assert not torch.equal(conditioned["score.weight"], plain["score.weight"])
    model = build_model(spec, HF_SEQUENCE_CLASSIFICATION).eval()
    model.load_state_dict(conditioned, strict=True)
    table = learngene.text_ancestry.token_table()
    wte = conditioned["transformer.wte.weight"]  # rows in the span of the ancestry's tokens
    solution = torch.linalg.lstsq(table[:, :16].double(), wte.double()).solution
    assert torch.allclose(table[:, :16].double() @ solution, wte.double(), atol=1e-5)

    reused = tmp_path / "reused"
    metrics = import_text_ancestry_artifacts(tmp_path / "store" / "tiny" / "1", reused)
    _, original, summary = load_text_ancestry_artifacts(run_copy)
    _, imported, again = load_text_ancestry_artifacts(reused)
    assert metrics == summary["metrics"] == again["metrics"]
    assert all(torch.equal(imported[k], original[k]) for k in original)

    # `tal train ancestry --ancestry-from`: both ancestries copied into a run, no training
    copied = tmp_path / "copied"
    command = [
        sys.executable, "-m", "tal.cli", "train", "ancestry", "--ancestry-from", "tiny:1",
        "--store", str(tmp_path / "store"), "--run-dir", str(copied),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    _, copied_text, _ = load_text_ancestry_artifacts(copied)
    assert all(torch.equal(copied_text[k], original[k]) for k in original)
    assert load_ancestry_artifacts(copied)[0].spec == load_ancestry_artifacts(run_copy)[0].spec
    command[command.index("tiny:1")] = "tiny:2"
    missing = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert missing.returncode == 2 and "tiny" in missing.stderr


def test_text_steps_are_spread_evenly_and_fixed_by_the_step():
    steps = [s for s in range(1, 1201) if is_text_step(s, 0.25)]
    assert len(steps) == 300 and steps[:3] == [4, 8, 12]
    assert sum(is_text_step(s, 400 / 1600) for s in range(1, 1601)) == 400
    assert not any(is_text_step(s, 0.0) for s in range(1, 50))
    assert all(is_text_step(s, 1.0) for s in range(1, 50))


def test_lm_positions_are_real_next_token_targets_drawn_uniformly():
    lengths = torch.tensor([1, 5, 3, 40])
    generator = torch.Generator().manual_seed(0)
    rows, positions = sample_lm_positions(lengths, 20_000, generator)
    assert bool((positions + 1 < lengths[rows]).all()) and bool((positions >= 0).all())
    counts = torch.bincount(rows, minlength=4).double() / 20_000
    expected = torch.tensor([0, 4, 2, 39], dtype=torch.float64) / 45  # targets per row
    assert torch.allclose(counts, expected, atol=0.01)
    again = sample_lm_positions(lengths, 20_000, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], rows) and torch.equal(again[1], positions)
    assert sample_lm_positions(torch.tensor([1, 1]), 5, generator)[0].numel() == 0


def test_text_embeddings_are_padded_to_the_image_ancestrys_width(run_copy):
    trainer = HypernetTrainer(mixed_config(run_copy, steps=1), CPU, DATA_LIMIT)
    assert trainer.hypernet.config.encoder.task_dim == 32
    assert all(e.shape == (32,) for e in trainer.text.embeddings.values())
    stored = safetensors.torch.load_file(run_copy / TEXT_ARTIFACT_DIR / "tasks.safetensors")
    assert torch.equal(trainer.text.embeddings["man_section"][:16], stored["man_section"])
    with pytest.raises(ValueError, match="text_share"):
        HypernetTrainConfig(text_share=1.5)
