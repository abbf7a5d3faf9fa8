"""The user-scale evaluation: a stored learngene and the training-free baselines at the ViTs
users ask for (``tal eval --user-scale``).

The shipped learngene trains on small one-channel ViTs; users request ViT-S/B shapes with three
channels at 64-224 px. Here every method initialises those shapes for every image task of the
suite, brought to each shape's size and channels, and is measured:

* untrained, on the test split: on the tasks the ancestry learned with each method's own head
  (TAL's predicted head, the ancestry's rows for weight selection and the DCT transfer, timm's
  random head), on the others (unseen by the ancestry) with a shrinkage-LDA head fitted to
  ``support_examples`` training images for every method (``tal.heads.discriminant``);
* fine-tuned, the ViT-S-width model on chosen tasks (``finetune_tasks``, every seed), and a
  few-shot fine-tune on an unseen task from its support images alone with the fitted head,
  the way a task registered over the API is served.

Methods: ``random`` (timm's init), ``weight_selection`` and ``dct`` (from the ancestry,
``tal.transfer``), ``tal`` (what the service returns: lifted by ``tal.transfer.lift`` outside
the trained range) and ``tal_unlifted`` (the hypernetwork's prediction at the target's shape,
the behaviour before the lift). The ancestry's own test accuracy is the reference.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from tal.arch import libraries
from tal.arch.parse import parse_arch
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.checkpoints import store
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.checkpoints.learngene import Learngene
from tal.checkpoints.provenance import describe_environment
from tal.evaluation.finetune import FinetuneRecipe, accuracy, finetune
from tal.evaluation.runner import ancestry_test_accuracy
from tal.heads.discriminant import fit_discriminant_head
from tal.heads.support import task_support
from tal.tasks import TaskData, list_tasks, load_task
from tal.transfer.layout import target_initial_state
from tal.transfer.regrid import plan_regrid

RANDOM = "random"
TAL = "tal"
TAL_UNLIFTED = "tal_unlifted"
TRANSFERS = ("weight_selection", "dct")
METHODS = (RANDOM, *TRANSFERS, TAL, TAL_UNLIFTED)
VIT_S_WIDTH_64_RGB = "vit_s_width_64_rgb"
ARCHITECTURES: dict[str, ViTSpec] = {
    VIT_S_WIDTH_64_RGB: libraries.VIT_S_WIDTH_64_RGB,
    "vit_small_patch16_224": parse_arch("vit_small_patch16_224"),
    "vit_base_patch16_224": parse_arch("vit_base_patch16_224"),
}


# Layer-wise learning-rate decay (block i of L at lr * decay ** (L + 1 - i)): on 300 images it
# keeps a trained start's lower layers from drifting while the head adapts; with 2,048 images
# it helped the transfers of the ancestry and not TAL (docs/lab/user_scale.md, section 6)
FEW_SHOT_LAYER_DECAY = 0.75
FINETUNE_LAYER_DECAY = 1.0
LAYER_DECAY_HELP = "block i of L trains at lr * layer_decay ** (L + 1 - i); 1: one rate for all"


class UserScaleConfig(BaseModel):
    """What ``tal eval --user-scale`` measures, and with how many images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str = Field(store.DEFAULT_NAME, description="NAME or NAME:VERSION in the store")
    output_dir: Path = Path("docs")
    architectures: tuple[str, ...] = tuple(ARCHITECTURES)
    methods: tuple[str, ...] = METHODS
    tasks: tuple[str, ...] | None = None  # None: every image task
    test_examples: dict[str, int] = Field(
        default_factory=lambda: {
            VIT_S_WIDTH_64_RGB: 1000,
            "vit_small_patch16_224": 200,
            "vit_base_patch16_224": 100,
        },
        description="test images per task for an architecture (default_test_examples otherwise)",
    )
    default_test_examples: int = Field(200, ge=1)
    support_examples: int = Field(TASK_EMBEDDING_EXAMPLES, ge=1, description="for fitted heads")
    unseen_task_architectures: tuple[str, ...] = Field(
        (VIT_S_WIDTH_64_RGB,),
        description="where the tasks the ancestry did not learn are measured (their fitted heads "
        "cost a forward pass over the support images per method: minutes at 224 px on a CPU)",
    )
    finetune_architecture: str = VIT_S_WIDTH_64_RGB
    finetune_tasks: tuple[str, ...] = ("fashion_mnist", "glyphs_digits")
    finetune_methods: tuple[str, ...] = (RANDOM, *TRANSFERS, TAL)
    finetune_examples: int = Field(2048, ge=1, description="training images per task")
    finetune_epochs: int = Field(3, ge=1)
    finetune_batch_size: int = Field(64, ge=1)
    finetune_lr: float = Field(5e-4, gt=0)
    finetune_warmup_epochs: int = Field(1, ge=0)
    finetune_layer_decay: float = Field(
        FINETUNE_LAYER_DECAY, gt=0, le=1, description=LAYER_DECAY_HELP
    )
    few_shot_task: str | None = Field(
        "glyphs_greek",
        description="an image task the ancestry did not learn, served as a registered task is "
        "(a head fitted to its support images); on emoji_groups every start ends within a point "
        "of the others near chance, so it cannot tell them apart",
    )
    few_shot_epochs: int = Field(3, ge=1)
    few_shot_batch_size: int = Field(32, ge=1)
    few_shot_warmup_epochs: int = Field(1, ge=0)
    few_shot_lr: float = Field(
        1e-4, gt=0, description="lower than finetune_lr: 300 images, most of an epoch warming up"
    )
    few_shot_layer_decay: float = Field(
        FEW_SHOT_LAYER_DECAY, gt=0, le=1, description=LAYER_DECAY_HELP
    )
    seeds: tuple[int, ...] = (0, 1, 2)

    def recipe(self) -> FinetuneRecipe:
        """The recipe of the fine-tuned table."""
        return FinetuneRecipe(
            epochs=self.finetune_epochs,
            batch_size=self.finetune_batch_size,
            lr=self.finetune_lr,
            warmup_epochs=self.finetune_warmup_epochs,
            layer_decay=self.finetune_layer_decay,
        )

    def few_shot_recipe(self) -> FinetuneRecipe:
        """The recipe of the few-shot fine-tune (on the support images alone)."""
        return FinetuneRecipe(
            epochs=self.few_shot_epochs,
            batch_size=self.few_shot_batch_size,
            lr=self.few_shot_lr,
            warmup_epochs=self.few_shot_warmup_epochs,
            layer_decay=self.few_shot_layer_decay,
        )


USER_SCALE_QUICK: dict[str, Any] = {
    "architectures": (VIT_S_WIDTH_64_RGB,),
    "tasks": ("glyphs_digits", "emoji_groups"),
    "test_examples": {VIT_S_WIDTH_64_RGB: 40},
    "support_examples": 40,
    "finetune_tasks": ("glyphs_digits",),
    "finetune_examples": 64,
    "finetune_epochs": 1,
    "finetune_batch_size": 32,
    "finetune_warmup_epochs": 0,
    "few_shot_task": "emoji_groups",
    "few_shot_epochs": 1,
    "few_shot_warmup_epochs": 0,
    "seeds": (0,),
}
"""A budget that runs in seconds (tests): one architecture, two tasks, one seed."""


class UserScale:
    """One stored learngene, its ancestry, and the methods' initial states at user scale."""

    def __init__(self, learngene: Learngene, config: UserScaleConfig) -> None:
        if learngene.ancestry is None:
            raise ValueError(
                f"{learngene.model_version} has no ancestry: the transfers start from it"
            )
        self.learngene = learngene
        self.ancestry = learngene.ancestry
        self.config = config
        self._supports: dict[tuple[str, int, int], TaskData] = {}

    def learned(self, task: str) -> bool:
        """Whether the ancestry (and so each method's own head) knows ``task``."""
        return task in self.ancestry.task_offsets

    def support(self, task: str, spec: ViTSpec) -> TaskData:
        """The first balanced ``support_examples`` training images, in ``spec``'s format
        (loaded once per task and format: every method's head is fitted to them)."""
        key = (task, spec.img_size, spec.in_chans)
        if key not in self._supports:
            train = load_task(task, "train", image_size=spec.img_size, in_chans=spec.in_chans)
            self._supports[key] = task_support(train, self.config.support_examples)
        return self._supports[key]

    def embedding(self, task: str) -> torch.Tensor:
        """The learngene's embedding of ``task``, or one made from its support images (in the
        ancestry's format) as registering it over the API does."""
        if task in self.learngene.tasks:
            return self.learngene.tasks[task]
        return self.learngene.embed_task(self.support(task, self.ancestry.spec).images)

    def initial_state(self, method: str, spec: ViTSpec, task: str, seed: int):
        """The timm state dict ``method`` starts ``spec`` from for ``task``."""
        if method == RANDOM:
            return target_initial_state(spec, seed)
        if method in TRANSFERS:
            return self.ancestry.transfer(spec, method, task, seed)
        embedding = self.embedding(task)
        if method == TAL:
            return self.learngene.predict(spec, embedding)
        if method == TAL_UNLIFTED:
            return self.learngene.hypernet(spec, embedding, "timm", torch.float32)
        raise ValueError(f"unknown method {method!r}; use one of {list(METHODS)}")

    def model(self, method: str, spec: ViTSpec, task: str, seed: int) -> torch.nn.Module:
        """``spec`` initialised by ``method``; on a task the ancestry did not learn, with the
        head fitted to the support images."""
        model = build_model(spec)
        model.load_state_dict(self.initial_state(method, spec, task, seed), strict=True)
        if not self.learned(task):
            support = self.support(task, spec)
            fit_discriminant_head(model.eval(), support.images, support.labels)
        return model

    def ancestry_accuracy(self, tasks: dict[str, int], test_examples: int) -> dict[str, float]:
        """The ancestry's own test accuracy on each of ``tasks`` it learned (in its format)."""
        spec = self.ancestry.spec
        test = {
            task: load_task(
                task, "test", limit=test_examples, image_size=spec.img_size, in_chans=spec.in_chans
            )
            for task in tasks
            if self.learned(task)
        }
        return ancestry_test_accuracy(self.ancestry, test)


def _tasks(config: UserScaleConfig) -> dict[str, int]:
    classes = {info.name: info.num_classes for info in list_tasks()}
    names = config.tasks or tuple(classes)
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise ValueError(f"unknown image tasks {unknown}; choose from {sorted(classes)}")
    return {name: classes[name] for name in names}


def _check(config: UserScaleConfig) -> None:
    for name in (*config.architectures, config.finetune_architecture):
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {name!r}; choose from {list(ARCHITECTURES)}")
    unknown = sorted(set(config.methods + config.finetune_methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")


def _log(message: str) -> None:
    print(message, flush=True)


def measure_untrained(
    scale: UserScale, tasks: dict[str, int], architectures: tuple[str, ...]
) -> dict[str, Any]:
    """``{architecture: {task: {method: accuracy}}}`` (seed 0)."""
    config = scale.config
    untrained: dict[str, Any] = {}
    for arch in architectures:
        limit = config.test_examples.get(arch, config.default_test_examples)
        for task, classes in tasks.items():
            if not scale.learned(task) and arch not in config.unseen_task_architectures:
                continue
            spec = ARCHITECTURES[arch].model_copy(update={"num_classes": classes})
            test = load_task(
                task, "test", limit=limit, image_size=spec.img_size, in_chans=spec.in_chans
            )
            row = untrained.setdefault(arch, {}).setdefault(task, {})
            for method in config.methods:
                started = time.perf_counter()
                row[method] = accuracy(scale.model(method, spec, task, 0), test)
                _log(
                    f"{arch} {task} {method}: {row[method]:.3f} "
                    f"({time.perf_counter() - started:.1f} s)"
                )
    return untrained


def _finetuned(
    scale: UserScale,
    spec: ViTSpec,
    task: str,
    method: str,
    train: TaskData,
    test: TaskData,
    recipe: FinetuneRecipe,
) -> dict[str, Any]:
    runs = []
    for seed in scale.config.seeds:
        model = scale.model(method, spec, task, seed)
        start = accuracy(model, test)
        curve = finetune(model, train, test, recipe, seed)
        runs.append({"seed": seed, "untrained": start, **asdict(curve)})
        _log(
            f"{spec.img_size}px {task} {method} seed {seed}: {start:.3f} -> "
            f"{curve.test_accuracy[-1]:.3f}"
        )
    return {"runs": runs}


def measure_finetuned(scale: UserScale, tasks: dict[str, int]) -> dict[str, Any]:
    """Curves per task, method and seed on the fine-tuning architecture, and the few-shot
    fine-tune from the support images of ``few_shot_task``."""
    config = scale.config
    arch = ARCHITECTURES[config.finetune_architecture]
    limit = config.test_examples.get(config.finetune_architecture, config.default_test_examples)
    results: dict[str, Any] = {"architecture": config.finetune_architecture, "tasks": {}}
    for task in config.finetune_tasks:
        spec = arch.model_copy(update={"num_classes": tasks[task]})
        fmt = {"image_size": spec.img_size, "in_chans": spec.in_chans}
        train = load_task(task, "train", limit=config.finetune_examples, **fmt)
        test = load_task(task, "test", limit=limit, **fmt)
        results["tasks"][task] = {
            method: _finetuned(scale, spec, task, method, train, test, config.recipe())
            for method in config.finetune_methods
        }
    if config.few_shot_task is not None:
        task = config.few_shot_task
        spec = arch.model_copy(update={"num_classes": tasks[task]})
        support = scale.support(task, spec)
        test = load_task(
            task, "test", limit=limit, image_size=spec.img_size, in_chans=spec.in_chans
        )
        results["few_shot"] = {
            "task": task,
            "examples": len(support.labels),
            "methods": {
                method: _finetuned(
                    scale, spec, task, method, support, test, config.few_shot_recipe()
                )
                for method in config.methods
            },
        }
    return results


def run_user_scale(config: UserScaleConfig, partial: Path | None = None) -> dict[str, Any]:
    """Every measurement of the user-scale evaluation, as the JSON that the report renders;
    what is measured so far is written to ``partial`` after each stage (an interrupted run
    keeps its figures)."""
    _check(config)
    tasks = _tasks(config)
    for task in (*config.finetune_tasks, *([config.few_shot_task] if config.few_shot_task else [])):
        if task not in tasks:
            raise ValueError(f"fine-tuning task {task!r} is not among the evaluated tasks")
    name, _, version = config.checkpoint.partition(":")
    learngene = Learngene.load(name, version or store.LATEST, device="cpu")
    scale = UserScale(learngene, config)
    started = time.perf_counter()
    ancestry_limit = max(config.test_examples.values(), default=config.default_test_examples)
    results: dict[str, Any] = {
        "checkpoint": learngene.model_version,
        "config": config.model_dump(mode="json"),
        "environment": describe_environment(),
        "ancestry_spec": scale.ancestry.spec.model_dump(mode="json"),
        "ancestry": scale.ancestry_accuracy(tasks, ancestry_limit),
        "proxies": {
            arch: _proxy_json(learngene, ARCHITECTURES[arch]) for arch in config.architectures
        },
    }
    # the fine-tuning architecture first, then its fine-tuning, then the wide ones (slowest)
    order = sorted(config.architectures, key=lambda a: a != config.finetune_architecture)
    results["untrained"] = measure_untrained(scale, tasks, tuple(order[:1]))
    _save(results, partial)
    results["finetuned"] = measure_finetuned(scale, tasks)
    for arch in order[1:]:
        _save(results, partial)
        results["untrained"] |= measure_untrained(scale, tasks, (arch,))
    results["seconds"] = time.perf_counter() - started
    return results


def remeasure(
    results: dict[str, Any],
    architectures: tuple[str, ...],
    methods: tuple[str, ...] | None = None,
    finetuned: bool = False,
) -> dict[str, Any]:
    """An earlier run's ``results`` with some figures measured again (its config and
    checkpoint; this code): what a change that moves only those figures needs, at a fraction of
    a whole run's time.

    Args:
        architectures: whose untrained figures to measure again.
        methods: which methods (None: the run's own); the others keep their figures.
        finetuned: also run the fine-tuned table and the few-shot fine-tune again for
            ``methods`` (every seed).

    Each method's largest change, in points (untrained; fine-tuned, final accuracy), is kept
    under ``remeasured`` with the time and machine, so a figure that should not have moved
    (timm's init, the transfers) shows that it did not.
    """
    unknown = [arch for arch in architectures if arch not in results["untrained"]]
    if unknown:
        raise ValueError(
            f"{unknown} not in the earlier run; it measured {list(results['untrained'])}"
        )
    config = UserScaleConfig.model_validate(results["config"])
    chosen = config.methods if methods is None else methods
    strangers = sorted(set(chosen) - set(config.methods))
    if strangers:
        raise ValueError(f"methods {strangers} not in the earlier run; it ran {config.methods}")
    config = config.model_copy(
        update={
            "methods": chosen,
            "finetune_methods": tuple(m for m in config.finetune_methods if m in chosen),
        }
    )
    name, _, version = results["checkpoint"].partition("/")
    learngene = Learngene.load(name, version, device="cpu")
    scale = UserScale(learngene, config)
    started = time.perf_counter()
    moved: dict[str, float] = {}
    for arch, rows in measure_untrained(scale, _tasks(config), architectures).items():
        for task, row in rows.items():
            earlier = results["untrained"][arch].setdefault(task, {})
            for method, value in row.items():
                if method in earlier:
                    change = 100 * abs(value - earlier[method])
                    moved[method] = max(moved.get(method, 0.0), change)
            earlier.update(row)
        results["proxies"][arch] = _proxy_json(learngene, ARCHITECTURES[arch])
    entry = {"architectures": list(architectures), "methods": list(chosen)}
    if finetuned:
        entry["finetuned_largest_change_points"] = _merge_finetuned(
            results["finetuned"], measure_finetuned(scale, _tasks(config))
        )
    results.setdefault("remeasured", []).append(
        entry
        | {
            "seconds": time.perf_counter() - started,
            "environment": describe_environment(),
            "largest_change_points": moved,
        }
    )
    return results


def _merge_finetuned(earlier: dict[str, Any], measured: dict[str, Any]) -> dict[str, float]:
    """``measured``'s fine-tuned runs written over ``earlier``'s; the largest change of a
    method's final accuracy (mean over seeds), in points."""
    moved: dict[str, float] = {}

    def merge(old: dict[str, Any], new: dict[str, Any]) -> None:
        for method, runs in new.items():
            if method in old:
                before, after = (
                    sum(run["test_accuracy"][-1] for run in r["runs"]) / len(r["runs"])
                    for r in (old[method], runs)
                )
                moved[method] = max(moved.get(method, 0.0), 100 * abs(after - before))
            old[method] = runs

    for task, methods in measured["tasks"].items():
        merge(earlier["tasks"].setdefault(task, {}), methods)
    if "few_shot" in measured:
        merge(earlier["few_shot"]["methods"], measured["few_shot"]["methods"])
    return moved


def _save(results: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))


def _proxy_json(learngene: Learngene, spec: ViTSpec) -> dict[str, Any] | None:
    """The proxy ``spec`` is predicted at (None: in range), and ``adapter_blocks``, the blocks
    that rebuild the proxy's patch grid from a finer one (``tal.transfer.regrid``; 0: none)."""
    proxy = learngene.proxy(spec)
    if proxy is None:
        return None
    plan = plan_regrid(proxy, spec)
    return {**proxy.model_dump(mode="json"), "adapter_blocks": plan.depth if plan else 0}
