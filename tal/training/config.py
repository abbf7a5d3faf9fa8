"""Training configurations (pydantic: unknown or invalid fields are refused with the reason).

A config comes from a JSON file (``--config``) and/or flags; flags win. Defaults are the CPU
recipe of the shipped checkpoint (``tal.training.recipe.CPU_RECIPE``) and GHN-3's optimiser
recipe (AdamW lr 4e-4, weight
decay 1e-2, clip 5, cosine with warm-up, label smoothing 0.1, 3e-5 predicted-norm penalty).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tal.arch.parse import format_validation_error
from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.hypernet.config import DecoderConfig, check_decoder_overrides
from tal.training.recipe import CPU_RECIPE, DISTILLATIONS, PAPER_TASK_TEMPERATURE, DistillTarget


class ConfigError(ValueError):
    """A training configuration that cannot be used."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimConfig(_Config):
    lr: float = Field(4e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    warmup_steps: int = Field(50, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)


class GuardConfig(_Config):
    """Stops or rolls back when the loss is NaN / infinite or explodes."""

    explode_factor: float = Field(10.0, gt=1, description="loss > factor x running mean = bad")
    max_bad_steps: int = Field(3, ge=1, description="consecutive bad steps before a rollback")
    max_rollbacks: int = Field(3, ge=0, description="rollbacks before the run stops")
    rollback_lr_factor: float = Field(0.5, gt=0, le=1)


class AncestryTrainConfig(_Config):
    """``tal train ancestry``: a ViT on the union of the training tasks."""

    run_dir: Path = Path("runs/default")
    depth: int = Field(4, ge=1)
    embed_dim: int = Field(192, ge=8)
    num_heads: int = Field(3, ge=1)
    patch_size: int = Field(8, ge=1, description="divides the suite's 32 px images")
    steps: int = Field(CPU_RECIPE.ancestry_steps, ge=1)
    batch_size: int = Field(128, ge=1)
    optim: OptimConfig = OptimConfig(lr=1e-3, weight_decay=5e-2)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    task_temperature: float = Field(
        PAPER_TASK_TEMPERATURE, gt=0, le=1, description="sample tasks ~ (n_i/N)^T"
    )
    eval_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    task_examples: int = Field(
        TASK_EMBEDDING_EXAMPLES, ge=1, description="images per task embedding (max)"
    )
    data_root: Path | None = None
    overfit_batch: bool = Field(False, description="reuse step 1's batch (smoke tests)")
    seed: int = 0


class TextAncestryTrainConfig(_Config):
    """``tal train ancestry --modality text``: a GPT-2 on the union of the training text tasks
    (next-token cross-entropy on a subset of positions + the union classifier's)."""

    run_dir: Path = Path("runs/default")
    n_layer: int = Field(4, ge=1)
    n_embd: int = Field(
        64, ge=8, description="at most the hypernetwork's task_dim (the image ancestry's width)"
    )
    n_head: int = Field(2, ge=1)
    steps: int = Field(CPU_RECIPE.text.ancestry_steps, ge=1)
    batch_size: int = Field(32, ge=1)
    max_tokens: int = Field(64, ge=2, description="tokens per row in training (rows are cut)")
    lm_positions: int = Field(256, ge=1, description="next-token targets per step's LM loss")
    lm_weight: float = Field(1.0, ge=0)
    optim: OptimConfig = OptimConfig(lr=2e-3, weight_decay=1e-2)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    task_temperature: float = Field(PAPER_TASK_TEMPERATURE, gt=0, le=1)
    eval_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    task_examples: int = Field(TASK_EMBEDDING_EXAMPLES, ge=1, description="rows per embedding")
    token_basis_size: int = Field(DecoderConfig.basis_size, ge=1)
    overfit_batch: bool = Field(False, description="reuse step 1's batch (smoke tests)")
    seed: int = 0

    @model_validator(mode="after")
    def _fits(self) -> TextAncestryTrainConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        return self


class HypernetTrainConfig(_Config):
    """``tal train stage1`` / ``stage2`` (one code path; ``stage`` switches the data and task).

    With ``text_library`` a share ``text_share`` of the steps (spread evenly, fixed by the step
    number) trains on GPT-2 graphs of that library and the text tasks
    (``tal.training.text_hypernet``); the others on ViTs and images, as without it.
    """

    stage: Literal[1, 2] = 1
    run_dir: Path = Path("runs/default")
    preset: Literal["tal", "ghn3", "logah"] = "tal"
    library: str = CPU_RECIPE.library
    steps: int | None = Field(None, ge=1, description="default: the CPU recipe's for the stage")
    meta_batch: int = Field(
        CPU_RECIPE.meta_batch, ge=1, description="architectures per step (split across ranks)"
    )
    batch_size: int = Field(CPU_RECIPE.batch_size, ge=1)
    optim: OptimConfig = OptimConfig()
    guard: GuardConfig = GuardConfig()
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    ce_weight: float | None = Field(None, ge=0, description="default: the stage's distillation")
    distill_weight: float | None = Field(
        None, ge=0, description="0 = cross-entropy only (baselines); default: as ce_weight"
    )
    temperature: float = Field(3.0, gt=0)
    distill_target: DistillTarget | None = Field(
        None,
        description="match the ancestry's CLS features through a projection (authors' code) "
        "or its class logits on the step's task (Hinton-style); default: the CPU recipe's "
        "for the stage (features in stage 1, logits in stage 2)",
    )
    norm_penalty: float = Field(3e-5, ge=0)
    task_conditioning: bool = True
    head_features: bool = Field(
        False, description="the encoder reads each attention node's head count and head width"
    )
    decoder: dict[str, Any] = Field(
        default_factory=dict,
        description="DecoderConfig fields that replace the preset's (ablations), "
        'e.g. {"span_scaling": false}',
    )
    task_temperature: float | None = Field(
        None, gt=0, le=1, description="default: the CPU recipe's for the stage"
    )
    init_from: Path | None = Field(None, description="training state to start stage 2 from")
    eval_every: int = Field(250, ge=1)
    eval_archs: int = Field(3, ge=1)
    eval_examples: int = Field(500, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    data_root: Path | None = None
    overfit_batch: bool = Field(False, description="reuse step 1's batch and archs (smoke)")
    seed: int = 0
    device: str = "auto"
    text_library: str | None = Field(
        CPU_RECIPE.text.library,
        description="GPT-2 model library of the text steps; null: images only",
    )
    text_share: float | None = Field(
        None, ge=0, le=1, description="fraction of steps on text; default: the CPU recipe's"
    )
    text_meta_batch: int = Field(CPU_RECIPE.text.meta_batch, ge=1)
    text_batch_size: int = Field(CPU_RECIPE.text.batch_size, ge=1)
    text_max_tokens: int = Field(CPU_RECIPE.text.max_tokens, ge=2)
    text_lm_positions: int = Field(CPU_RECIPE.text.lm_positions, ge=1)
    text_eval_examples: int = Field(128, ge=1, description="validation rows per text task")

    @model_validator(mode="after")
    def _recipe_defaults(self) -> HypernetTrainConfig:
        """Fields left out take the CPU recipe's value for this stage; the loss weights follow
        the distillation target when it is given."""
        distillation = (
            DISTILLATIONS[self.distill_target]
            if self.distill_target is not None
            else CPU_RECIPE.distillation(self.stage)
        )
        with_text = self.text_library is not None
        defaults = {
            "steps": (
                CPU_RECIPE.steps(self.stage) if with_text else CPU_RECIPE.image_steps(self.stage)
            ),
            "text_share": CPU_RECIPE.text_share(self.stage) if with_text else 0.0,
            "task_temperature": CPU_RECIPE.task_temperature(self.stage),
            "distill_target": distillation.distill_target,
            "ce_weight": distillation.ce_weight,
            "distill_weight": distillation.distill_weight,
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        return self

    @field_validator("decoder")
    @classmethod
    def _known_decoder_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_decoder_overrides(value)


def load_config(cls: type[_Config], path: Path | None, overrides: dict[str, Any]) -> Any:
    """``cls`` from a JSON file (optional) updated with non-None ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {format_validation_error(exc)}") from exc
