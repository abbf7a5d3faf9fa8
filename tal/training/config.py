"""Training configurations (pydantic: unknown or invalid fields are refused with the reason).

A config comes from a JSON file (``--config``) and/or flags; flags win. Defaults are the CPU
recipe of the shipped checkpoint; GHN-3's optimiser recipe otherwise (AdamW lr 4e-4, weight
decay 1e-2, clip 5, cosine with warm-up, label smoothing 0.1, 3e-5 predicted-norm penalty).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tal.hypernet.config import check_decoder_overrides
from tal.specs import format_validation_error

PAPER_TASK_TEMPERATURE = 0.5  # tasks sampled ~ (n_i / N)^T (DESIGN.md, stage 2)
CPU_STAGE2_TASK_TEMPERATURE = 0.1  # near-uniform: the small glyph tasks get their share of
# stage-2 steps (docs/ablations.md, round 5); `tal train default` and `tal eval` use it


@dataclass(frozen=True)
class Distillation:
    """What the hypernetwork's predicted models learn from the ancestry, and how much of the
    loss that is against the labels' cross-entropy (HypernetTrainConfig fields)."""

    distill_target: Literal["features", "logits"]
    ce_weight: float
    distill_weight: float


DISTILLATIONS = {
    "features": Distillation("features", ce_weight=0.8, distill_weight=0.2),  # the authors'
    "logits": Distillation("logits", ce_weight=0.5, distill_weight=0.5),  # Hinton-style
}
AUTHORS_DISTILLATION = DISTILLATIONS["features"]  # HypernetTrainConfig's defaults
CPU_STAGE2_DISTILLATION = "logits"  # stage 2 of `tal train default` and of TAL in `tal eval`
# (docs/ablations.md, round 6); stage 1 keeps the authors' feature distillation
TASK_EMBEDDING_EXAMPLES = 300  # training images behind a task's embedding ("a few hundred")
CPU_STAGE2_STEPS = 2400  # stage 2 of `tal train default` and `tal eval`'s default: the held-out
# check still rose from 1600 to 2400 steps (docs/ablations.md, rounds 7 and 10)


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
    steps: int = Field(1200, ge=1)
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


class HypernetTrainConfig(_Config):
    """``tal train stage1`` / ``stage2`` (one code path; ``stage`` switches the data and task)."""

    stage: Literal[1, 2] = 1
    run_dir: Path = Path("runs/default")
    preset: Literal["tal", "ghn3", "logah"] = "tal"
    library: str = "cpu"
    steps: int = Field(1500, ge=1)
    meta_batch: int = Field(4, ge=1, description="architectures per step (split across ranks)")
    batch_size: int = Field(64, ge=1)
    optim: OptimConfig = OptimConfig()
    guard: GuardConfig = GuardConfig()
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    ce_weight: float = Field(AUTHORS_DISTILLATION.ce_weight, ge=0)
    distill_weight: float = Field(
        AUTHORS_DISTILLATION.distill_weight, ge=0, description="0 = cross-entropy only (baselines)"
    )
    temperature: float = Field(3.0, gt=0)
    distill_target: Literal["features", "logits"] = Field(
        AUTHORS_DISTILLATION.distill_target,
        description="match the ancestry's CLS features through a projection (authors' code) "
        "or its class logits on the step's task (Hinton-style)",
    )
    norm_penalty: float = Field(3e-5, ge=0)
    task_conditioning: bool = True
    decoder: dict[str, Any] = Field(
        default_factory=dict,
        description="DecoderConfig fields that replace the preset's (ablations), "
        'e.g. {"residual_noise": false}',
    )
    task_temperature: float = Field(PAPER_TASK_TEMPERATURE, gt=0, le=1)
    init_from: Path | None = Field(None, description="training state to start stage 2 from")
    eval_every: int = Field(250, ge=1)
    eval_archs: int = Field(3, ge=1)
    eval_examples: int = Field(500, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    data_root: Path | None = None
    overfit_batch: bool = Field(False, description="reuse step 1's batch and archs (smoke)")
    seed: int = 0
    device: str = "auto"

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
