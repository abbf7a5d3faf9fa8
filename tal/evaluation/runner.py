"""Trains (or resumes) every method on the same library, data and budget, then measures.

Methods: ``random`` (timm's default init), ``weight_selection`` and ``dct`` (training-free:
the ancestry's trained weights carried to each architecture, ``tal.transfer``), ``ghn3`` and
``logah`` (their decoders, cross-entropy only, no task conditioning), ``tal`` and ``tal+`` (ours,
distillation and task conditioning; TAL+ on the larger library). Every learned method runs
stage 1 then stage 2 with the same steps.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tal.arch.libraries import build_library
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.checkpoints.ancestry import Ancestry
from tal.checkpoints.learngene import Learngene
from tal.checkpoints.provenance import describe_environment
from tal.evaluation.config import RANDOM_INIT, TRANSFERS, EvalConfig
from tal.evaluation.finetune import accuracy, finetune
from tal.evaluation.schema import EvalResults, FinetuneResults
from tal.heads.discriminant import fit_discriminant_head
from tal.tasks import (
    SUITE_IMAGE_SIZE,
    SUITE_IN_CHANS,
    TaskData,
    held_out_task,
    list_tasks,
    load_task,
)
from tal.training.ancestry_trainer import ARTIFACT_DIR, load_ancestry_artifacts, task_accuracy
from tal.training.config import HypernetTrainConfig
from tal.training.distributed import DistInfo
from tal.training.hypernet_trainer import HypernetTrainer
from tal.training.recipe import CPU_RECIPE, DISTILLATIONS, DistillTarget

DEEPER_BY = 2  # the "deeper than anything in training" architecture adds this many blocks
PREDICTION_REPEATS = 3


@dataclass(frozen=True)
class MethodRecipe:
    preset: str
    library_attr: str  # "library" or "plus_library" on EvalConfig
    distils: bool  # learns from the ancestry (TAL), or from the labels only (GHN-3, LoGAH)
    task_conditioning: bool

    def loss_fields(self, distillation: DistillTarget) -> dict[str, Any]:
        """HypernetTrainConfig's loss fields for a stage that would distil ``distillation``."""
        return asdict(DISTILLATIONS[distillation]) if self.distils else {"distill_weight": 0.0}


RECIPES = {
    "ghn3": MethodRecipe("ghn3", "library", distils=False, task_conditioning=False),
    "logah": MethodRecipe("logah", "library", distils=False, task_conditioning=False),
    "tal": MethodRecipe("tal", "library", distils=True, task_conditioning=True),
    "tal+": MethodRecipe("tal", "plus_library", distils=True, task_conditioning=True),
}


def _train_method(name: str, config: EvalConfig, dist: DistInfo) -> tuple[Learngene, float]:
    """Stage 1 + stage 2 for one method (resumes); returns the learngene and wall seconds."""
    recipe = RECIPES[name]
    run = config.run_dir / name.replace("+", "_plus")
    if not (run / ARTIFACT_DIR).exists():
        shutil.copytree(config.ancestry_run / ARTIFACT_DIR, run / ARTIFACT_DIR)
    common = dict(
        run_dir=run,
        preset=recipe.preset,
        library=getattr(config, recipe.library_attr),
        meta_batch=config.meta_batch,
        batch_size=config.batch_size,
        task_conditioning=recipe.task_conditioning,
        eval_every=config.check_every or max(config.stage1_steps, config.stage2_steps),
        text_library=None,  # the image evaluation trains on images only (text: tal.evaluation.text)
    )
    stage1 = HypernetTrainer(
        HypernetTrainConfig(
            stage=1,
            steps=config.stage1_steps,
            **recipe.loss_fields(CPU_RECIPE.stage1_distillation),
            **common,
        ),
        dist,
        config.data_limit,
    )
    wall = stage1.run()["wall_seconds"]
    stage2 = HypernetTrainer(
        HypernetTrainConfig(
            stage=2,
            steps=config.stage2_steps,
            task_temperature=config.stage2_task_temperature,
            init_from=run / "stage1" / "last.safetensors",
            **recipe.loss_fields(config.stage2_distillation),
            **common,
        ),
        dist,
        config.data_limit,
    )
    wall += stage2.run()["wall_seconds"]
    learngene = Learngene(
        stage2.hypernet.eval(), dict(stage2.embeddings), name=name, ancestry=stage2.ancestry
    )
    return learngene, wall


def train_methods(
    config: EvalConfig, dist: DistInfo
) -> tuple[dict[str, Learngene], dict[str, float]]:
    """Trains (or resumes) every learned method of ``config`` (all but ``random``).

    Returns the learngenes and each method's training wall seconds (kept across resumes).
    Processes with disjoint ``methods`` and the same run folder can train side by side.
    """
    learngenes: dict[str, Learngene] = {}
    training_seconds: dict[str, float] = {}
    for method in config.methods:
        if method in RECIPES:
            learngenes[method], training_seconds[method] = _train_method(method, config, dist)
    return learngenes, training_seconds


def eval_architectures(config: EvalConfig) -> dict[str, ViTSpec]:
    """Small, medium and largest held-out architectures, plus one deeper than any in training."""
    library = build_library(config.library)
    held_out = sorted(library.held_out, key=lambda s: s.num_params())
    largest = held_out[-1]
    deepest = max(s.depth for s in library.train)
    return {
        "small": held_out[0],
        "medium": held_out[len(held_out) // 2],
        "largest": largest,
        "deeper": largest.model_copy(update={"depth": deepest + DEEPER_BY}),
    }


def ancestry_test_accuracy(ancestry: Ancestry, test: dict[str, TaskData]) -> dict[str, float]:
    """The ancestry's accuracy on the same test images as the methods, for each task it
    learned (its logits restricted to the task's slice of its shared head)."""
    scores = {}
    for task, (start, stop) in ancestry.task_offsets.items():
        if task in test:
            logits = ancestry.features(test[task].images, logits=True)[:, start:stop]
            scores[task] = task_accuracy(logits, test[task].labels)
    return scores


def initial_model(
    method: str,
    learngene: Learngene | None,
    ancestry: Ancestry,
    spec: ViTSpec,
    task: str,
    seed: int,
) -> torch.nn.Module:
    """A timm model of ``spec`` as ``method`` starts it for ``task``: ``learngene``'s predicted
    weights (task conditioned when the hypernetwork is), the ancestry's weights transferred
    (``TRANSFERS``; its head rows for a task it learned), or timm's own init seeded by
    ``seed``."""
    torch.manual_seed(seed)
    model = build_model(spec, "timm")
    if method in TRANSFERS:
        head_task = task if task in ancestry.task_offsets else None
        model.load_state_dict(ancestry.transfer(spec, method, head_task, seed), strict=True)
    elif learngene is not None:
        task_input = task if learngene.hypernet.config.encoder.task_conditioning else None
        model.load_state_dict(learngene.predict(spec, task=task_input), strict=True)
    return model


def unseen_task_support(config: EvalConfig) -> TaskData | None:
    """The unseen task's images behind its task embedding (the first ``calibration_examples``
    training images), which fit its discriminant head; None when ``unseen_head`` is
    "predicted"."""
    if config.unseen_head != "discriminant":
        return None
    return load_task(held_out_task().name, "train", limit=config.calibration_examples)


def run_evaluation(config: EvalConfig, dist: DistInfo) -> dict[str, Any]:
    """Everything the report shows, as plain data (also written to results.json)."""
    ancestry, _, ancestry_summary = load_ancestry_artifacts(config.ancestry_run)
    trained, training_seconds = train_methods(config, dist)
    free = [m for m in config.methods if m in TRANSFERS]  # nothing to train
    learngenes: dict[str, Learngene | None] = {
        RANDOM_INIT: None,  # the reference
        **dict.fromkeys(free),
        **trained,
    }
    training_seconds = {RANDOM_INIT: 0.0, **dict.fromkeys(free, 0.0), **training_seconds}
    # The 32x32 grey tasks the learngenes were trained and are evaluated on.
    tasks = [t.name for t in list_tasks(image_size=SUITE_IMAGE_SIZE, in_chans=SUITE_IN_CHANS)]
    unseen = held_out_task().name
    archs = eval_architectures(config)
    test = {t: load_task(t, "test", limit=config.test_examples) for t in tasks}
    support = unseen_task_support(config)

    untrained: dict[str, dict[str, dict[str, float]]] = {}
    unseen_predicted_head: dict[str, dict[str, float]] = {}
    for method, learngene in learngenes.items():
        untrained[method] = {}
        for task in tasks:
            untrained[method][task] = {}
            for arch_name, base in archs.items():
                spec = base.model_copy(update={"num_classes": test[task].num_classes})
                model = initial_model(method, learngene, ancestry, spec, task, seed=0)
                if task == unseen and support is not None:
                    predicted = accuracy(model, test[task])
                    unseen_predicted_head.setdefault(method, {})[arch_name] = predicted
                    fit_discriminant_head(model, support.images, support.labels)
                untrained[method][task][arch_name] = accuracy(model, test[task])

    prediction_ms: dict[str, dict[str, float]] = {}
    for method, learngene in learngenes.items():
        if learngene is None:
            continue
        prediction_ms[method] = {}
        for arch_name, spec in archs.items():
            times = []
            for _ in range(PREDICTION_REPEATS):
                began = time.perf_counter()
                learngene.predict(spec)
                times.append(time.perf_counter() - began)
            prediction_ms[method][arch_name] = 1e3 * sorted(times)[len(times) // 2]

    finetune_tasks = list(config.finetune_tasks or tasks)
    curves: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    spec_base = archs["medium"]
    for task in finetune_tasks:
        train = load_task(task, "train", limit=config.finetune_examples)
        for method, learngene in learngenes.items():
            for seed in config.seeds:
                spec = spec_base.model_copy(update={"num_classes": train.num_classes})
                model = initial_model(method, learngene, ancestry, spec, task, seed)
                head_fit = None
                if task == unseen and support is not None and method != RANDOM_INIT:
                    head_fit = fit_discriminant_head(model, support.images, support.labels)
                curve = finetune(model, train, test[task], config.recipe_for(method), seed)
                calibration = curve.head_calibration
                curves.setdefault(method, {}).setdefault(task, {})[str(seed)] = {
                    "train_loss": curve.train_loss,
                    "test_accuracy": curve.test_accuracy,
                    "head_calibration": asdict(calibration) if calibration else None,
                    "discriminant_head": asdict(head_fit) if head_fit else None,
                }
    return EvalResults(
        config=config.model_dump(mode="json"),
        architectures={
            k: v.model_dump(mode="json") | {"num_params": v.num_params()} for k, v in archs.items()
        },
        unseen_task=unseen,
        ancestry_val_accuracy=ancestry_summary["metrics"],
        ancestry_test_accuracy=ancestry_test_accuracy(ancestry, test),
        environment=describe_environment(),
        training_seconds=training_seconds,
        prediction_ms=prediction_ms,
        untrained_accuracy=untrained,
        unseen_predicted_head_accuracy=unseen_predicted_head,
        finetune=FinetuneResults(
            architecture="medium", recipe=config.recipe.__dict__, curves=curves
        ),
    ).model_dump()


def clean_run(config: EvalConfig) -> None:
    """Removes previous training state of this evaluation (a fresh, not resumed, run)."""
    if config.run_dir.exists():
        shutil.rmtree(config.run_dir)


def output_paths(config: EvalConfig) -> tuple[Path, Path]:
    return config.output_dir / "results.md", config.output_dir / "results.json"
