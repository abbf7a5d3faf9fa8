"""``tal eval`` configuration: budgets shared by every method, and the ``--quick`` preset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.evaluation.finetune import FinetuneRecipe
from tal.training.recipe import CPU_RECIPE, DistillTarget

RANDOM_INIT = "random"  # the baseline: timm's default initialisation, fine-tuned as it is
UnseenHead = Literal["predicted", "discriminant"]
# Training-free starts carried from the ancestry's trained weights (tal.transfer)
TRANSFERS = ("weight_selection", "dct")
METHODS = (RANDOM_INIT, *TRANSFERS, "ghn3", "logah", "tal", "tal+")


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: Path = Path("runs/eval")
    ancestry_run: Path = Field(Path("runs/default"), description="where `tal train ancestry` ran")
    output_dir: Path = Path("docs")
    methods: tuple[str, ...] = METHODS
    library: str = CPU_RECIPE.library
    plus_library: str = CPU_RECIPE.plus_library
    stage1_steps: int = Field(CPU_RECIPE.stage1_steps, ge=1)
    stage2_steps: int = Field(CPU_RECIPE.stage2_steps, ge=1)
    check_every: int | None = Field(
        None,
        ge=1,
        description="steps between the held-out checks during training (default: each stage's end)",
    )
    meta_batch: int = Field(CPU_RECIPE.meta_batch, ge=1)
    batch_size: int = Field(CPU_RECIPE.batch_size, ge=1)
    data_limit: int | None = Field(None, description="examples per task and split for training")
    test_examples: int = Field(2000, ge=1, description="test images per task (untrained acc)")
    finetune_examples: int = Field(5000, ge=1, description="training images per task (finetune)")
    finetune_tasks: tuple[str, ...] | None = None  # None: every task
    epochs: int = Field(10, ge=1)
    stage2_task_temperature: float = Field(
        CPU_RECIPE.stage2_task_temperature,
        gt=0,
        le=1,
        description="stage 2 samples tasks ~ (n_i/N)^T, for every method alike",
    )
    stage2_distillation: DistillTarget = Field(
        CPU_RECIPE.stage2_distillation,
        description="what stage 2 of TAL and TAL+ distils from the ancestry (DISTILLATIONS); "
        "stage 1 distils features; the GHN-3 and LoGAH styles train on labels only",
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe_lr: float = 5e-4
    recipe_warmup_epochs: int = Field(
        1,
        ge=0,
        description="fine-tuning's learning rate rises linearly over these first epochs, then "
        "follows the cosine (tal.evaluation.finetune.warmup_cosine_schedule); 0: cosine from "
        "the first step",
    )
    calibrate_head: bool = Field(
        True,
        description="before fine-tuning, scale each predicted classifier head by the factor in "
        "[0, 1] that fits the first calibration_examples training images (tal.heads.calibration); "
        "random init keeps timm's default head (see recipe_for)",
    )
    calibration_examples: int = Field(
        TASK_EMBEDDING_EXAMPLES, ge=1, description="as many as a task embedding uses"
    )
    unseen_head: UnseenHead = Field(
        "discriminant",
        description="the unseen task's classifier head: as predicted, or the discriminant head "
        "fitted on the features of its first calibration_examples training images, the images "
        "behind its task embedding (tal.heads.discriminant; no gradient step). Untrained, every "
        "method gets it (the predicted head's accuracy is kept beside it); fine-tuned, every "
        "method but random init, which starts from timm's default as it is",
    )

    @model_validator(mode="after")
    def _known_methods(self) -> EvalConfig:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        return self

    @model_validator(mode="after")
    def _warmup_leaves_epochs(self) -> EvalConfig:
        if self.recipe_warmup_epochs >= self.epochs:
            raise ValueError(
                f"recipe_warmup_epochs ({self.recipe_warmup_epochs}) must be below epochs "
                f"({self.epochs}): lower it or fine-tune for more epochs"
            )
        return self

    @property
    def recipe(self) -> FinetuneRecipe:
        return FinetuneRecipe(
            epochs=self.epochs,
            lr=self.recipe_lr,
            warmup_epochs=self.recipe_warmup_epochs,
            calibrate_head=self.calibrate_head,
            calibration_examples=self.calibration_examples,
        )

    def recipe_for(self, method: str) -> FinetuneRecipe:
        """The recipe one method is fine-tuned with: ``recipe``, except that random init, the
        baseline, starts from timm's default initialisation as it is. Calibrating its head
        fitted a zero head on most tasks, which lowered its fine-tuned accuracy (Fashion-MNIST
        56.0% -> 47.7% at 4 epochs; docs/lab/ablations.md)."""
        if method == RANDOM_INIT:
            return replace(self.recipe, calibrate_head=False)
        return self.recipe


QUICK = dict(
    stage1_steps=2,
    stage2_steps=2,
    meta_batch=1,
    batch_size=16,
    data_limit=64,
    test_examples=64,
    finetune_examples=64,
    epochs=2,
    seeds=(0, 1),
    finetune_tasks=("glyphs_digits", "glyphs_greek"),
)
