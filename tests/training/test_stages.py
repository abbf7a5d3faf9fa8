"""Few-step runs of every stage, resume after a kill, and the 2-process run (the command-line
runs mix image and text steps, as the recipe does)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch

from tal.checkpoints.ancestry import Ancestry
from tal.checkpoints.learngene import Learngene
from tal.checkpoints.store import StoreError
from tal.training.ancestry_trainer import import_ancestry_artifacts, load_ancestry_artifacts
from tal.training.config import ConfigError, HypernetTrainConfig, OptimConfig, load_config
from tal.training.data import step_generator
from tal.training.distributed import DistInfo
from tal.training.hypernet_trainer import (
    ARCH_STREAM,
    HypernetTrainer,
    as_input_of,
    distillation_loss,
)
from tal.training.schedule import LossGuard, TrainingDiverged

DATA_LIMIT = 64  # as tests/training/conftest.py
KILL_TIMEOUT_S = 600
CPU = DistInfo(rank=0, world_size=1, device=torch.device("cpu"))


def losses(run_dir, stage):
    lines = (run_dir / stage / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def tiny_stage_config(run_dir, stage=1, **overrides) -> HypernetTrainConfig:
    """Image steps only (mixed families: test_text_training.py)."""
    fields = dict(
        text_library=None,
        stage=stage,
        run_dir=run_dir,
        steps=12,
        meta_batch=1,
        batch_size=16,
        eval_every=12,
        eval_archs=1,
        eval_examples=32,
        checkpoint_every=4,
        optim=OptimConfig(lr=2e-3, warmup_steps=1),
        overfit_batch=True,
    )
    return HypernetTrainConfig(**{**fields, **overrides})


def test_ancestry_smoke(ancestry_run):
    values = losses(ancestry_run, "ancestry")
    assert values[-1] < values[0] * 0.8
    _ancestry, embeddings, summary = load_ancestry_artifacts(ancestry_run)
    assert set(embeddings) == {
        "fashion_mnist",
        "glyphs_latin",
        "glyphs_script",
        "glyphs_digits",
        "glyphs_greek",
    }
    assert all(e.shape == (32,) and torch.isfinite(e).all() for e in embeddings.values())
    assert "val_acc/fashion_mnist" in summary["metrics"]
    # store artifacts are byte-stable (safetensors writes metadata in hash-map order)
    assert len({_ancestry.to_bytes() for _ in range(5)}) == 1


def test_stage1_then_stage2_learn_and_export(run_copy, tmp_path):
    HypernetTrainer(tiny_stage_config(run_copy), CPU, DATA_LIMIT).run()
    stage1 = losses(run_copy, "stage1")
    assert stage1[-1] < stage1[0]
    config = tiny_stage_config(
        run_copy, stage=2, init_from=run_copy / "stage1" / "last.safetensors"
    )
    stage2 = HypernetTrainer(config, CPU, DATA_LIMIT)
    metrics = stage2.run()
    values = losses(run_copy, "stage2")
    assert values[-1] < values[0]
    assert 0.0 <= metrics["heldout_acc_mean"] <= 1.0
    stage2.export("tiny", "1", tmp_path / "store")
    learngene = Learngene.load("tiny", "1", root=tmp_path / "store", device="cpu")
    assert learngene.ancestry is not None and "glyphs_greek" in learngene.tasks
    assert learngene.manifest["held_out_task"] == ["glyphs_greek"]
    spec = {
        "family": "vit",
        "depth": 1,
        "embed_dim": 32,
        "num_heads": 2,
        "img_size": 32,
        "patch_size": 8,
        "in_chans": 1,
        "num_classes": 24,
    }
    plain = learngene.predict(spec)["head.weight"]
    assert not torch.equal(learngene.predict(spec, task="glyphs_greek")["head.weight"], plain)
    check_ancestry_import(tmp_path / "store" / "tiny" / "1", run_copy, tmp_path / "reused")


def test_stage1_on_the_scales_library_feeds_each_architecture_its_format(run_copy):
    """Mixed widths, depths and input formats in one run: each architecture gets the suite's
    images resized and in its channels, and the loss still falls."""
    trainer = HypernetTrainer(
        tiny_stage_config(run_copy, library="cpu-scales", meta_batch=2, steps=8), CPU, DATA_LIMIT
    )
    generator = step_generator(trainer.config.seed, 1, ARCH_STREAM)
    picked = [trainer.library.train[i] for i in trainer.draw_architectures(generator)]
    metrics = trainer.run()
    values = losses(run_copy, "stage1")
    assert values[-1] < values[0]
    assert 0.0 <= metrics["heldout_acc_mean"] <= 1.0
    images = torch.randn(3, 1, 32, 32)
    for spec in picked:
        shaped = as_input_of(spec, images)
        assert shaped.shape == (3, spec.in_chans, spec.img_size, spec.img_size)
    assert (
        as_input_of(
            picked[0].model_copy(update={"img_size": 32, "in_chans": 1, "patch_size": 8}), images
        )
        is images
    )
    draws = trainer.draw_architectures(step_generator(0, 2, ARCH_STREAM))
    formats = {
        (s.img_size, s.in_chans)
        for step in range(1, 40)
        for s in (
            trainer.library.train[i]
            for i in trainer.draw_architectures(step_generator(0, step, ARCH_STREAM))
        )
    }
    assert len(draws) == 2 and len(formats) > 4
    check_corner_draws(trainer)


def check_corner_draws(trainer):
    """About the corner's share of the slots come from the library's deep, wide corner, the
    same ones for the same step, and the other slots still reach beyond it."""
    library = trainer.library
    corner = set(library.corner_indices())
    steps = range(1, 1001)
    slots = [
        i
        for step in steps
        for i in trainer.draw_architectures(step_generator(0, step, ARCH_STREAM))
    ]
    by_cost = float(library.sampling_weights()[sorted(corner)].sum())
    expected = library.corner_share + (1 - library.corner_share) * by_cost
    share = sum(i in corner for i in slots) / len(slots)
    assert abs(share - expected) < 0.03  # 2,000 draws: over 4 standard deviations
    assert len({i for i in slots if i in corner}) > len(corner) // 2
    assert len({i for i in slots if i not in corner}) > len(corner)
    assert trainer.draw_architectures(step_generator(0, 7, ARCH_STREAM)) == slots[12:14]


def check_ancestry_import(version_dir, original_run, new_run):
    """``tal train default --ancestry-from``: a store version's ancestry becomes a run's."""
    metrics = import_ancestry_artifacts(version_dir, new_run)
    _, original_embeddings, original_summary = load_ancestry_artifacts(original_run)
    ancestry, embeddings, summary = load_ancestry_artifacts(new_run)
    assert metrics == original_summary["metrics"] == summary["metrics"]
    assert summary["num_classes"] == original_summary["num_classes"]
    assert summary["imported_from"] == "tiny:1"
    assert all(torch.equal(embeddings[k], original_embeddings[k]) for k in original_embeddings)
    assert ancestry.spec == load_ancestry_artifacts(original_run)[0].spec
    tasks_file = version_dir / "tasks.safetensors"
    data = tasks_file.read_bytes()
    tasks_file.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(StoreError, match=r"tasks\.safetensors is corrupt"):
        import_ancestry_artifacts(version_dir, new_run)


def test_baseline_switches(run_copy):
    config = tiny_stage_config(
        run_copy,
        preset="ghn3",
        distill_weight=0.0,
        steps=3,
        decoder={"basis_size": 32},
        head_features=True,
    )
    trainer = HypernetTrainer(config, CPU, DATA_LIMIT)
    trainer.run()
    assert not trainer.hypernet.config.encoder.task_conditioning
    assert trainer.hypernet.config.encoder.head_features
    assert trainer.hypernet.config.decoder.basis == "periodic"
    assert trainer.hypernet.config.decoder.basis_size == 32  # the override


def _stage1_command(run_dir, steps, checkpoint_every):
    return [
        sys.executable,
        "-m",
        "tal.cli",
        "train",
        "stage1",
        "--run-dir",
        str(run_dir),
        "--steps",
        str(steps),
        "--meta-batch",
        "2",
        "--batch-size",
        "16",
        "--checkpoint-every",
        str(checkpoint_every),
        "--eval-every",
        "1000",
        "--data-limit",
        str(DATA_LIMIT),
    ]


def _hypernet_state(run_dir):
    state = safetensors.torch.load_file(run_dir / "stage1" / "last.safetensors")
    return {k: v for k, v in state.items() if k.startswith(("hypernet.", "projection."))}


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(run_copy, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(["cp", "-r", str(run_copy), str(straight)], check=True)
    steps = 8
    subprocess.run(
        _stage1_command(straight, steps, steps),
        check=True,
        capture_output=True,
        timeout=KILL_TIMEOUT_S,
    )
    state_file = run_copy / "stage1" / "last.safetensors"
    process = subprocess.Popen(
        _stage1_command(run_copy, steps, 1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while time.monotonic() < deadline:
        if (
            state_file.exists()
            and safetensors.safe_open(state_file, "pt").metadata()["step"] >= "3"
        ):
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = int(safetensors.safe_open(state_file, "pt").metadata()["step"])
    assert killed_at < steps, "the run finished before it could be killed"
    subprocess.run(
        _stage1_command(run_copy, steps, 1), check=True, capture_output=True, timeout=KILL_TIMEOUT_S
    )
    resumed, expected = _hypernet_state(run_copy), _hypernet_state(straight)
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(run_copy, tmp_path):
    single = tmp_path / "single"
    subprocess.run(["cp", "-r", str(run_copy), str(single)], check=True)
    steps = 3
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        _stage1_command(single, steps, steps),
        check=True,
        capture_output=True,
        timeout=KILL_TIMEOUT_S,
        env=env,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            *_stage1_command(run_copy, steps, steps)[1:],
        ],
        capture_output=True,
        text=True,
        timeout=KILL_TIMEOUT_S,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parallel, expected = _hypernet_state(run_copy), _hypernet_state(single)
    for name, tensor in expected.items():
        assert torch.allclose(parallel[name], tensor, atol=1e-5, rtol=1e-4), name


def test_logit_distillation_targets_the_steps_label_space(run_copy):
    """``distill_target: logits``: the union logits in stage 1, the task's slice in stage 2,
    and a loss of zero where the student already agrees with the ancestry."""
    config = tiny_stage_config(run_copy, distill_target="logits", distill_weight=0.5, steps=6)
    trainer = HypernetTrainer(config, CPU, DATA_LIMIT)
    trainer.run()
    stage1 = losses(run_copy, "stage1")
    assert all(math.isfinite(v) for v in stage1) and stage1[-1] < stage1[0]
    _, images, _, num_classes = trainer._batch(1)
    union = trainer._teacher(None, images)
    assert union.shape == (images.shape[0], num_classes)
    start, stop = trainer.ancestry.task_offsets["glyphs_digits"]
    digits = trainer._teacher("glyphs_digits", images)
    assert stop - start == 10 and digits.shape == (images.shape[0], 10)
    assert torch.equal(digits, union[:, start:stop])
    assert float(distillation_loss(digits, digits, config.temperature)) == pytest.approx(0.0)
    assert float(distillation_loss(-digits, digits, config.temperature)) > 0.0

    ancestry_file = run_copy / "ancestry" / "ancestry.safetensors"
    ancestry = Ancestry.from_bytes(ancestry_file.read_bytes())
    ancestry.task_offsets = {name: (0, 1) for name in ancestry.task_offsets}
    ancestry_file.write_bytes(ancestry.to_bytes())
    with pytest.raises(ConfigError, match="distill_target 'logits' needs the ancestry's label"):
        HypernetTrainer(config, CPU, DATA_LIMIT)
    HypernetTrainer(tiny_stage_config(run_copy, steps=1), CPU, DATA_LIMIT)  # features: fine


def test_bad_configs_and_missing_artifacts(tmp_path):
    with pytest.raises(ConfigError, match="colour"):
        load_config(HypernetTrainConfig, None, {"colour": 1})
    with pytest.raises(ConfigError, match="steps"):
        load_config(HypernetTrainConfig, None, {"steps": 0})
    with pytest.raises(ConfigError, match="unknown decoder fields \\['basis_sise'\\]"):
        load_config(HypernetTrainConfig, None, {"decoder": {"basis_sise": 32}})
    with pytest.raises(FileNotFoundError, match="tal train ancestry"):
        HypernetTrainer(tiny_stage_config(tmp_path), CPU, DATA_LIMIT)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tal.cli",
            "train",
            "stage1",
            "--run-dir",
            str(tmp_path),
            "--steps",
            "-3",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "steps" in result.stderr


def test_loss_guard():
    from tal.training.config import GuardConfig

    guard = LossGuard(GuardConfig(max_bad_steps=2, max_rollbacks=1))
    assert guard.check(1.0, 1) and guard.check(1.1, 2)
    assert not guard.check(float("nan"), 3) and not guard.needs_rollback
    assert not guard.check(100.0, 4) and guard.needs_rollback  # 10x above the running mean
    guard.rolled_back()
    assert guard.lr_scale == 0.5 and guard.history == [3, 4]
    guard.check(float("inf"), 5)
    guard.check(float("inf"), 6)
    with pytest.raises(TrainingDiverged):
        guard.rolled_back()
