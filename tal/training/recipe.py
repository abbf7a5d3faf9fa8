"""The training recipe of the shipped checkpoint: one object that ``tal train default`` runs and
that ``tal eval`` gives every method, so the two never drift apart.

Each value carries the measurement behind it in docs/lab/ablations.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DistillTarget = Literal["features", "logits"]
PAPER_TASK_TEMPERATURE = 0.5  # tasks sampled ~ (n_i / N)^T (DESIGN.md, stage 2)


@dataclass(frozen=True)
class Distillation:
    """What the hypernetwork's predicted models learn from the ancestry, and how much of the
    loss that is against the labels' cross-entropy (HypernetTrainConfig fields)."""

    distill_target: DistillTarget
    ce_weight: float
    distill_weight: float


DISTILLATIONS: dict[DistillTarget, Distillation] = {
    "features": Distillation("features", ce_weight=0.8, distill_weight=0.2),  # the authors'
    "logits": Distillation("logits", ce_weight=0.5, distill_weight=0.5),  # Hinton-style
}


@dataclass(frozen=True)
class TextRecipe:
    """The GPT-2 half: the text ancestry and the text steps of each hypernetwork stage.

    Attributes:
        ancestry_steps: optimiser steps of the text ancestry GPT-2.
        stage1_steps, stage2_steps: text steps interleaved with each stage's image steps (one
            checkpoint serves both families).
        library: the GPT-2 model library (``tal.arch.libraries``).
        meta_batch, batch_size, max_tokens, lm_positions: GPT-2 architectures per text step;
            token rows per step, cut to ``max_tokens``; next-token targets the LM loss is
            estimated on (``tal.training.text_data.sample_lm_positions``).
    """

    ancestry_steps: int = 1000
    stage1_steps: int = 400
    stage2_steps: int = 800
    library: str = "gpt2-cpu"
    meta_batch: int = 2
    batch_size: int = 16
    max_tokens: int = 64
    lm_positions: int = 128

    def steps(self, stage: int) -> int:
        return self.stage1_steps if stage == 1 else self.stage2_steps


@dataclass(frozen=True)
class TrainingRecipe:
    """Budgets and choices of the ancestry, stage 1 and stage 2.

    Attributes:
        ancestry_steps, stage1_steps, stage2_steps: optimiser image steps of each stage (stage 2
            still gained from 1,600 to 2,400 steps; 3,200 win back what the text steps took).
        library, plus_library: the model libraries of TAL and TAL+ (``tal.arch.libraries``).
        meta_batch: architectures per step; batch_size: images per step.
        stage1_task_temperature, stage2_task_temperature: batches sample tasks
            ``~ (n_i / N)^T``; stage 2 near-uniform, so the small glyph tasks get their share.
        stage1_distillation, stage2_distillation: what each stage distils from the ancestry
            (``DISTILLATIONS``): stage 1 its features, as the authors do; stage 2 its logits.
        text: the GPT-2 half of the recipe (:class:`TextRecipe`).
    """

    ancestry_steps: int = 1200
    stage1_steps: int = 1200
    stage2_steps: int = 3200
    library: str = "cpu"
    plus_library: str = "cpu-plus"
    meta_batch: int = 4
    batch_size: int = 64
    stage1_task_temperature: float = PAPER_TASK_TEMPERATURE
    stage2_task_temperature: float = 0.1
    stage1_distillation: DistillTarget = "features"
    stage2_distillation: DistillTarget = "logits"
    text: TextRecipe = field(default_factory=lambda: TextRecipe())

    def steps(self, stage: int) -> int:
        """All steps of hypernetwork stage 1 or 2: the image steps plus the text steps."""
        return self.image_steps(stage) + self.text.steps(stage)

    def image_steps(self, stage: int) -> int:
        return self.stage1_steps if stage == 1 else self.stage2_steps

    def text_share(self, stage: int) -> float:
        """The fraction of a stage's steps that train on GPT-2 graphs and text."""
        return self.text.steps(stage) / self.steps(stage)

    def task_temperature(self, stage: int) -> float:
        return self.stage1_task_temperature if stage == 1 else self.stage2_task_temperature

    def distillation(self, stage: int) -> Distillation:
        return DISTILLATIONS[self.stage1_distillation if stage == 1 else self.stage2_distillation]


CPU_RECIPE = TrainingRecipe()
