"""``tal eval --modality text --quick`` end to end with the real CLI, tokenizer and transformers
models, and the pieces it is built from."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION
from tal.arch.libraries import build_library
from tal.arch.specs import GPT2Spec
from tal.arch.target_models import build_model
from tal.checkpoints.learngene import Learngene
from tal.evaluation.foreign_text import BYTE_VOCAB, foreign_splits, foreign_text
from tal.evaluation.text import (
    MEASURES_DIR,
    measurement_key,
    method_key,
    text_eval_architectures,
    train_text_methods,
)
from tal.evaluation.text_config import SHIPPED, TEXT_QUICK, TextEvalConfig
from tal.evaluation.text_measure import LMPositions, fit_score_head, lm_loss
from tal.evaluation.text_report import MISSED_TARGETS_NOTE, render, targets
from tal.tasks import load_task
from tal.training.ancestry_trainer import AncestryTrainer
from tal.training.config import AncestryTrainConfig, OptimConfig, TextAncestryTrainConfig
from tal.training.distributed import DistInfo
from tal.training.text_ancestry_trainer import TextAncestryTrainer

QUICK_TIMEOUT_S = 1800
CPU = DistInfo(0, 1, torch.device("cpu"))
STORED_RESULTS = Path(__file__).parents[2] / "docs" / "text_results.json"


def _tiny_ancestries(run: Path) -> None:
    """An image and a text ancestry of a few steps in ``run``, as `tal train ancestry` writes."""
    image = AncestryTrainConfig(
        run_dir=run,
        depth=1,
        embed_dim=32,
        num_heads=2,
        steps=3,
        batch_size=16,
        task_examples=16,
        optim=OptimConfig(warmup_steps=1),
    )
    AncestryTrainer(image, CPU, data_limit=32).run_and_export()
    text = TextAncestryTrainConfig(
        run_dir=run,
        n_layer=1,
        n_embd=16,
        n_head=2,
        steps=3,
        batch_size=8,
        lm_positions=32,
        task_examples=16,
        optim=OptimConfig(warmup_steps=1),
    )
    TextAncestryTrainer(text, CPU, data_limit=32).run_and_export()


@pytest.mark.slow
def test_text_eval_quick_writes_a_well_formed_report(tmp_path):
    run = tmp_path / "ancestry_run"
    _tiny_ancestries(run)
    docs = tmp_path / "docs"
    command = [
        sys.executable, "-m", "tal.cli", "eval", "--modality", "text", "--quick",
        "--run-dir", str(tmp_path / "eval"), "--ancestry-run", str(run),
        "--output-dir", str(docs),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((docs / "text_results.json").read_text())
    methods = {"random", "ghn3", "logah", "tal", "tal-shipped"}
    assert set(results["untrained"]) == methods
    archs = results["architectures"]
    assert set(archs) == {"small", "medium", "largest", "deeper", "wider"}
    train = build_library("gpt2-cpu").train
    assert archs["deeper"]["n_layer"] > max(s.n_layer for s in train)
    assert archs["wider"]["n_embd"] > max(s.n_embd for s in train)
    for per_task in results["untrained"].values():
        for task, per_arch in per_task.items():
            for scores in per_arch.values():
                assert 0 <= scores["accuracy"] <= 1 and scores["lm_loss"] > 0
                assert ("fitted_head_accuracy" in scores) == (task == "wordnet_verb_sense")
    curves = results["finetune"]["curves"]
    assert set(curves) == methods
    for per_task in curves.values():
        assert set(per_task) == {"fortune_topic", "wordnet_verb_sense"}
        for curve in (c for runs in per_task.values() for c in runs.values()):
            assert len(curve["test_accuracy"]) == len(curve["test_lm_loss"]) == 2
    assert set(results["foreign_text"]) == {"gpt2", "bytes"}
    markdown = (docs / "text_results.md").read_text()
    for section in ("## Targets", "## 1. Untrained", "## 5. Training on text no task uses"):
        assert section in markdown
    rerender = subprocess.run(
        [*command, "--report-only"], capture_output=True, text=True, timeout=QUICK_TIMEOUT_S
    )
    assert rerender.returncode == 0 and (docs / "text_results.md").read_text() == markdown
    # a second run takes every method's measures from the run folder instead of measuring
    kept = sorted((tmp_path / "eval" / MEASURES_DIR).iterdir())
    assert len(kept) == len(methods)
    kept_before = {path: (path.stat().st_mtime_ns, path.read_text()) for path in kept}
    again = subprocess.run(command, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: (path.stat().st_mtime_ns, path.read_text()) for path in kept} == kept_before
    rerun = json.loads((docs / "text_results.json").read_text())
    for part in ("untrained", "finetune", "foreign_text"):
        assert rerun[part] == results[part]
    # a run of some methods (processes sharing the folder) reports them, TAL's targets aside
    some = docs / "some"
    only = [*command[:-1], str(some), "--methods", "logah"]
    partial = subprocess.run(only, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert set(json.loads((some / "text_results.json").read_text())["untrained"]) == {
        "random", "logah", "tal-shipped"
    }  # fmt: skip
    assert "`tal` was not measured in this run" in (some / "text_results.md").read_text()


def test_kept_measures_are_keyed_by_budgets_and_weights():
    """Measures are reused only for the same budgets and the same hypernetwork weights."""
    config = TextEvalConfig()
    assert measurement_key(config) == measurement_key(
        config.model_copy(update={"output_dir": Path("elsewhere"), "shipped": None})
    )
    assert measurement_key(config) != measurement_key(config.model_copy(update={"epochs": 4}))
    assert measurement_key(config) != measurement_key(
        config.model_copy(update={"training_seed": 1})
    )
    learngene = Learngene.fresh()
    key = method_key("tal", learngene)
    assert key.startswith("tal@") and key == method_key("tal", learngene)
    with torch.no_grad():
        next(learngene.hypernet.parameters()).add_(1.0)
    assert method_key("tal", learngene) != key
    assert method_key("random", None) == "random"


@pytest.mark.slow
def test_the_training_seed_decides_the_trained_hypernetwork(tmp_path):
    """The same training seed retrains the same weights; another seed trains others."""
    run = tmp_path / "ancestry_run"
    _tiny_ancestries(run)
    weights = {}
    for folder, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = TextEvalConfig(
            **{**TEXT_QUICK, "methods": ("tal",), "shipped": None},
            run_dir=tmp_path / folder,
            ancestry_run=run,
            training_seed=seed,
        )
        learngenes, _ = train_text_methods(config, CPU)
        weights[folder] = learngenes["tal"].hypernet.state_dict()
    assert weights["a"].keys() == weights["c"].keys()
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_the_lm_loss_is_the_models_own_and_a_fitted_head_classifies_its_rows():
    spec = GPT2Spec(n_layer=1, n_embd=32, n_head=2, n_positions=64, num_classes=14)
    torch.manual_seed(0)
    model = build_model(spec, HF_SEQUENCE_CLASSIFICATION).eval()
    data = load_task("wordnet_verb_sense", "test", limit=40)
    every = LMPositions.draw(data, 100_000, 64)  # with replacement: all targets, reweighted
    lm = build_model(spec.model_copy(update={"num_classes": 0}), "hf").eval()
    body = {k: v for k, v in model.state_dict().items() if k.startswith("transformer.")}
    lm.load_state_dict({**body, "lm_head.weight": model.transformer.wte.weight}, strict=True)
    with torch.no_grad():
        row = data.input_ids[:1, : int(data.lengths[0])]
        expected = lm(input_ids=row, labels=row).loss.item()  # transformers' own LM loss
    one = LMPositions(torch.zeros(int(data.lengths[0]) - 1, dtype=torch.long),
                      torch.arange(int(data.lengths[0]) - 1), 64)  # fmt: skip
    assert lm_loss(model, data, one) == pytest.approx(expected, rel=1e-4)
    assert lm_loss(model, data, every) == pytest.approx(10.8, abs=0.5)  # ~ ln(50257) at init
    support = load_task("wordnet_verb_sense", "train", limit=60)
    assert fit_score_head(model, support, 64) > 0.5  # it separates the rows it was fitted on


def test_foreign_text_is_read_once_per_file_and_split():
    text = foreign_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and text.count("Version 3, 29 June 2007") <= 2
    train, held_out, vocab = foreign_splits("bytes", 64)
    assert vocab == BYTE_VOCAB and int(train.input_ids.max()) < BYTE_VOCAB
    assert len(held_out) * 8 < len(train)
    rows = {tuple(r.tolist()) for r in train.input_ids}
    assert not rows & {tuple(r.tolist()) for r in held_out.input_ids}
    gpt2_train, _, gpt2_vocab = foreign_splits("gpt2", 64)
    assert gpt2_vocab == 50_257 and len(gpt2_train) < len(train)  # BPE: fewer tokens than bytes


def test_eval_architectures_are_held_out_and_ordered():
    archs = text_eval_architectures("gpt2-cpu")
    held_out = set(build_library("gpt2-cpu").held_out)
    assert {archs[k] for k in ("small", "medium", "largest")} <= held_out
    assert (
        archs["small"].num_params() < archs["medium"].num_params() < archs["largest"].num_params()
    )
    assert archs["wider"].n_embd % archs["wider"].n_head == 0


def test_the_report_points_to_the_lab_only_when_a_target_is_missed():
    """The stored run misses targets; the shipped checkpoint's figures in TAL's place meet all."""
    stored = json.loads(STORED_RESULTS.read_text())
    assert not all(met for _, met, _ in targets(stored))
    assert MISSED_TARGETS_NOTE in render(stored)
    as_shipped = copy.deepcopy(stored)
    as_shipped["untrained"]["tal"] = stored["untrained"][SHIPPED]
    as_shipped["finetune"]["curves"]["tal"] = stored["finetune"]["curves"][SHIPPED]
    for methods in as_shipped["foreign_text"].values():
        methods["tal"] = methods[SHIPPED]
    assert all(met for _, met, _ in targets(as_shipped))
    assert MISSED_TARGETS_NOTE not in render(as_shipped)
