"""``tal eval --modality text``: GPT-2 starts compared on the text tasks.

Methods: ``random`` (Hugging Face's default init), ``ghn3`` and ``logah`` (their decoders,
cross-entropy only, no task conditioning) and ``tal`` (token basis, distillation of the text
ancestry, task conditioning), each hypernetwork trained on the text tasks with the same steps,
library and batches; and, beside them, the model store's checkpoint (``tal-shipped``), which
learned images and text in one run. Measured on held-out GPT-2 architectures (one deeper and
one wider than any in training):

* untrained: language-model loss (nats per token) on each task's test text, and accuracy of
  the predicted sequence-classification head; on the unseen task the head is also fitted to
  its support rows (logistic regression without intercept), for every method;
* fine-tuned (one recipe, several seeds): loss and accuracy after each epoch, paired t-tests;
* foreign text (``tal.evaluation.foreign_text``): served weights trained on text no task uses,
  with GPT-2's vocabulary and with bytes, against Hugging Face's init.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION
from tal.arch.libraries import build_library
from tal.arch.specs import GPT2Spec
from tal.arch.target_models import build_model
from tal.checkpoints import store
from tal.checkpoints.learngene import Learngene
from tal.checkpoints.provenance import describe_environment
from tal.evaluation.foreign_text import VOCABULARIES, foreign_splits, train_on_foreign_text
from tal.evaluation.runner import RECIPES
from tal.evaluation.text_config import HF_INIT, SHIPPED, TextEvalConfig
from tal.evaluation.text_measure import (
    LMPositions,
    accuracy,
    finetune_text,
    fit_score_head,
    lm_loss,
)
from tal.tasks import TextTaskData, held_out_task, list_tasks, load_task
from tal.training.ancestry_trainer import ARTIFACT_DIR
from tal.training.config import HypernetTrainConfig
from tal.training.distributed import DistInfo
from tal.training.hypernet_trainer import HypernetTrainer
from tal.training.recipe import CPU_RECIPE
from tal.training.text_ancestry_trainer import TEXT_ARTIFACT_DIR, load_text_ancestry_artifacts
from tal.training.text_data import TEXT

DEEPER_BY = 2  # blocks beyond the deepest training architecture
WIDER_BY = 128  # width beyond the widest training architecture
WIDER_HEAD_DIM = 64
FOREIGN_SPEC = GPT2Spec(n_layer=4, n_embd=128, n_head=4, n_positions=128)  # DESIGN.md's case


def _train_method(name: str, config: TextEvalConfig, dist: DistInfo) -> tuple[Learngene, float]:
    """Stage 1 + stage 2 on text only for one method (resumes); its learngene and seconds."""
    recipe = RECIPES[name]
    run = config.run_dir / name
    for folder in (ARTIFACT_DIR, TEXT_ARTIFACT_DIR):
        if not (run / folder).exists():
            shutil.copytree(config.ancestry_run / folder, run / folder)
    common = dict(
        run_dir=run,
        preset=recipe.preset,
        task_conditioning=recipe.task_conditioning,
        text_library=config.library,
        seed=config.training_seed,
        text_share=1.0,
        text_meta_batch=config.meta_batch,
        text_batch_size=config.batch_size,
        text_max_tokens=config.max_tokens,
        text_lm_positions=config.lm_positions,
        eval_every=max(config.stage1_steps, config.stage2_steps),
    )
    wall = 0.0
    trainer: HypernetTrainer | None = None
    for stage, steps, distillation in (
        (1, config.stage1_steps, CPU_RECIPE.stage1_distillation),
        (2, config.stage2_steps, CPU_RECIPE.stage2_distillation),
    ):
        init = {"init_from": run / "stage1" / "last.safetensors"} if stage == 2 else {}
        trainer = HypernetTrainer(
            HypernetTrainConfig(
                stage=stage, steps=steps, **init, **recipe.loss_fields(distillation), **common
            ),
            dist,
            config.data_limit,
        )
        wall += trainer.run()["wall_seconds"]
    assert trainer is not None and trainer.text is not None
    learngene = Learngene(
        trainer.hypernet.eval(),
        dict(trainer.text.embeddings),
        name=name,
        text_ancestry=trainer.text.ancestry,
    )
    return learngene, wall


def train_text_methods(
    config: TextEvalConfig, dist: DistInfo
) -> tuple[dict[str, Learngene], dict[str, float]]:
    """Trains (or resumes) every learned method of ``config``; learngenes and seconds."""
    learngenes, seconds = {}, {}
    for method in config.methods:
        if method != HF_INIT:
            learngenes[method], seconds[method] = _train_method(method, config, dist)
    return learngenes, seconds


def text_eval_architectures(library_name: str) -> dict[str, GPT2Spec]:
    """Small, medium and largest held-out architectures of the library, one deeper and one
    wider than any in training."""
    library = build_library(library_name)
    held_out = sorted(library.held_out, key=lambda s: s.num_params())
    largest = held_out[-1]
    medium = held_out[len(held_out) // 2]
    deepest = max(s.n_layer for s in library.train)
    widest = max(s.n_embd for s in library.train) + WIDER_BY
    return {
        "small": held_out[0],
        "medium": medium,
        "largest": largest,
        "deeper": largest.model_copy(update={"n_layer": deepest + DEEPER_BY}),
        "wider": medium.model_copy(
            update={"n_embd": widest, "n_head": widest // WIDER_HEAD_DIM, "n_inner": 4 * widest}
        ),
    }


def initial_model(
    learngene: Learngene | None, spec: GPT2Spec, task: str, seed: int
) -> torch.nn.Module:
    """``GPT2ForSequenceClassification`` of ``spec`` with ``learngene``'s prediction for
    ``task`` (task-conditioned when its hypernetwork is and it knows the task), or Hugging
    Face's init seeded by ``seed`` when None."""
    torch.manual_seed(seed)
    model = build_model(spec, HF_SEQUENCE_CLASSIFICATION).eval()
    if learngene is not None:
        conditioned = learngene.hypernet.config.encoder.task_conditioning
        known = conditioned and task in learngene.tasks
        state = learngene.predict(spec, task if known else None, HF_SEQUENCE_CLASSIFICATION)
        model.load_state_dict(state, strict=True)
    return model


def load_shipped(reference: str) -> Learngene:
    name, _, version = reference.partition(":")
    return Learngene.load(name, version or store.LATEST, device="cpu")


@dataclass(frozen=True)
class TextEvalInputs:
    """What every method is measured on, the same for all (drawn once from the config)."""

    tasks: list[str]
    unseen: str
    archs: dict[str, GPT2Spec]
    test: dict[str, TextTaskData]
    lm_test: dict[str, TextTaskData]
    positions: dict[str, LMPositions]
    support: TextTaskData
    foreign: dict[str, tuple[TextTaskData, TextTaskData, int]]

    @classmethod
    def draw(cls, config: TextEvalConfig) -> TextEvalInputs:
        tasks = [t.name for t in list_tasks(TEXT)]
        lm_test = {t: load_task(t, "test") for t in tasks}
        return cls(
            tasks=tasks,
            unseen=held_out_task(TEXT).name,
            archs=text_eval_architectures(config.library),
            test={t: load_task(t, "test", limit=config.test_examples) for t in tasks},
            lm_test=lm_test,
            positions={
                t: LMPositions.draw(lm_test[t], config.test_lm_positions, config.max_tokens)
                for t in tasks
            },
            support=load_task(held_out_task(TEXT).name, "train", limit=config.support_examples),
            foreign={v: foreign_splits(v, config.max_tokens) for v in VOCABULARIES},
        )


def _measure_untrained(
    learngene: Learngene | None, inputs: TextEvalInputs, config: TextEvalConfig
) -> dict[str, dict[str, dict[str, float]]]:
    """task -> architecture -> LM loss, accuracy (and, on the unseen task, the fitted head's)."""
    untrained: dict[str, dict[str, dict[str, float]]] = {}
    for task in inputs.tasks:
        untrained[task] = {}
        test = inputs.test[task]
        for arch_name, base in inputs.archs.items():
            spec = base.model_copy(update={"num_classes": test.num_classes})
            model = initial_model(learngene, spec, task, seed=0)
            scores = {
                "lm_loss": lm_loss(model, inputs.lm_test[task], inputs.positions[task]),
                "accuracy": accuracy(model, test, config.max_tokens),
            }
            if task == inputs.unseen:
                scores["fitted_head_support_accuracy"] = fit_score_head(
                    model, inputs.support, config.max_tokens
                )
                scores["fitted_head_accuracy"] = accuracy(model, test, config.max_tokens)
            untrained[task][arch_name] = scores
    return untrained


def _measure_prediction_ms(learngene: Learngene, inputs: TextEvalInputs) -> dict[str, float]:
    timings = {}
    for arch_name, spec in inputs.archs.items():
        began = time.perf_counter()
        learngene.predict(spec, None, "hf")
        timings[arch_name] = 1e3 * (time.perf_counter() - began)
    return timings


def measure_finetuned(
    learngene: Learngene | None, inputs: TextEvalInputs, config: TextEvalConfig
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """task -> seed -> the fine-tuning curve of the ``medium`` architecture."""
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    base = inputs.archs["medium"]
    for task in config.finetune_tasks or inputs.tasks:
        train = load_task(task, "train", limit=config.finetune_examples)
        for seed in config.seeds:
            spec = base.model_copy(update={"num_classes": train.num_classes})
            model = initial_model(learngene, spec, task, seed)
            if task == inputs.unseen and learngene is not None:
                fit_score_head(model, inputs.support, config.max_tokens)
            curve = finetune_text(
                model,
                train,
                inputs.test[task],
                inputs.lm_test[task],
                inputs.positions[task],
                config.recipe,
                seed,
            )
            curves.setdefault(task, {})[str(seed)] = asdict(curve)
    return curves


def measure_foreign(
    learngene: Learngene | None, inputs: TextEvalInputs, config: TextEvalConfig
) -> dict[str, dict[str, list[float]]]:
    """vocabulary -> {"before": [...], "after": [...]} over the foreign seeds."""
    results = {}
    for vocabulary, (train, held_out, vocab_size) in inputs.foreign.items():
        spec = FOREIGN_SPEC.model_copy(update={"vocab_size": vocab_size})
        state = None if learngene is None else learngene.predict(spec, None, "hf")
        runs = [
            train_on_foreign_text(spec, state, train, held_out, config.foreign_steps, seed)
            for seed in config.foreign_seeds
        ]
        results[vocabulary] = {
            "before": [before for before, _ in runs],
            "after": [after for _, after in runs],
        }
    return results


def _measure_method(
    learngene: Learngene | None, inputs: TextEvalInputs, config: TextEvalConfig
) -> dict[str, Any]:
    """Every measure of one method (None: Hugging Face's init)."""
    return {
        "untrained": _measure_untrained(learngene, inputs, config),
        "prediction_ms": None if learngene is None else _measure_prediction_ms(learngene, inputs),
        "curves": measure_finetuned(learngene, inputs, config),
        "foreign": measure_foreign(learngene, inputs, config),
    }


MEASURES_DIR = "measures"  # in the run folder: one file of measures per method, as taken


def measurement_key(config: TextEvalConfig) -> str:
    """What a method's measures depend on besides its weights: every budget of ``config`` but
    where the report goes, which methods run and which checkpoint stands beside them."""
    fields = config.model_dump(mode="json", exclude={"output_dir", "methods", "shipped"})
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def method_key(method: str, learngene: Learngene | None) -> str:
    """A method's entry among the kept measures: its name and a digest of its hypernetwork's
    weights and task embeddings (retrained or another checkpoint: measured again)."""
    if learngene is None:
        return method
    digest = hashlib.sha256()
    tensors = {
        **{f"hypernet.{k}": v for k, v in learngene.hypernet.state_dict().items()},
        **{f"task.{k}": v for k, v in learngene.tasks.items()},
    }
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return f"{method}@{digest.hexdigest()[:16]}"


def _kept_measures(folder: Path, entry: str, key: str) -> dict[str, Any] | None:
    """A method's measures from an earlier run with the same budgets, or None."""
    path = folder / f"{entry}.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return saved["measures"] if saved.get("key") == key else None


def _keep_measures(folder: Path, entry: str, key: str, measures: dict[str, Any]) -> None:
    """Writes a method's measures whole (a temporary file renamed), so runs measuring other
    methods in the same folder at the same time never see a partial file."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{entry}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps({"key": key, "measures": measures}))
    temporary.replace(folder / f"{entry}.json")


def run_text_evaluation(config: TextEvalConfig, dist: DistInfo) -> dict[str, Any]:
    """Everything the text report shows, as plain data (also written to text_results.json).

    Each method's measures are kept in the run folder (:data:`MEASURES_DIR`, a file per
    :func:`method_key`) as soon as they are taken; a run with the same budgets
    (:func:`measurement_key`) takes them from there instead of measuring again, so an
    interrupted evaluation resumes, a new shipped checkpoint is measured alone, and runs
    measuring different methods can share the folder."""
    _, _, text_summary = load_text_ancestry_artifacts(config.ancestry_run)
    trained, training_seconds = train_text_methods(config, dist)
    learngenes: dict[str, Learngene | None] = {HF_INIT: None, **trained}
    if config.shipped:
        learngenes[SHIPPED] = load_shipped(config.shipped)
    inputs = TextEvalInputs.draw(config)
    key = measurement_key(config)
    folder = config.run_dir / MEASURES_DIR
    per_method = {}
    for method, learngene in learngenes.items():
        entry = method_key(method, learngene)
        measures = _kept_measures(folder, entry, key)
        if measures is None:
            measures = _measure_method(learngene, inputs, config)
            _keep_measures(folder, entry, key, measures)
        per_method[method] = measures

    return {
        "config": config.model_dump(mode="json"),
        "architectures": {
            k: v.model_dump(mode="json") | {"num_params": v.num_params()}
            for k, v in inputs.archs.items()
        },
        "unseen_task": inputs.unseen,
        "text_ancestry": {"metrics": text_summary["metrics"], "spec": text_summary["spec"]},
        "shipped": _shipped_summary(learngenes.get(SHIPPED)),
        "environment": describe_environment(),
        "training_seconds": {HF_INIT: 0.0, **training_seconds},
        "prediction_ms": {
            m: v["prediction_ms"] for m, v in per_method.items() if v["prediction_ms"] is not None
        },
        "untrained": {m: v["untrained"] for m, v in per_method.items()},
        "finetune": {
            "architecture": "medium",
            "recipe": asdict(config.recipe),
            "curves": {m: v["curves"] for m, v in per_method.items()},
        },
        "foreign_text": {
            vocabulary: {m: v["foreign"][vocabulary] for m, v in per_method.items()}
            for vocabulary in VOCABULARIES
        },
    }


def _shipped_summary(learngene: Learngene | None) -> dict[str, Any] | None:
    if learngene is None:
        return None
    manifest = learngene.manifest
    return {
        "version": learngene.model_version,
        "text_ancestry_metrics": manifest.get("text_ancestry_metrics"),
        "how_made": manifest.get("how_made", {}).get("command"),
    }
