"""``tal eval --modality text`` configuration: the GPT-2 comparison's budgets, shared by every
method, and its ``--quick`` preset."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.evaluation.text_measure import TextFinetuneRecipe
from tal.training.recipe import CPU_RECIPE

HF_INIT = "random"  # the baseline: Hugging Face's default initialisation, fine-tuned as it is
TEXT_METHODS = (HF_INIT, "ghn3", "logah", "tal")
SHIPPED = "tal-shipped"  # the model store's checkpoint, measured beside the methods


class TextEvalConfig(BaseModel):
    """Budgets of the text evaluation. Every learned method trains stage 1 and stage 2 on the
    text tasks only (``text_share`` 1), with the recipe's text steps, library and batches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_dir: Path = Path("runs/eval-text")
    ancestry_run: Path = Field(
        Path("runs/default"), description="where `tal train ancestry` wrote both ancestries"
    )
    output_dir: Path = Path("docs")
    methods: tuple[str, ...] = TEXT_METHODS
    shipped: str | None = Field(
        "tal-default:latest",
        description="NAME:VERSION of a model-store checkpoint measured beside the methods (as "
        f"{SHIPPED!r}, untrained, fine-tuned and on foreign text); null: none",
    )
    library: str = CPU_RECIPE.text.library
    training_seed: int = Field(
        0, ge=0, description="seed of every hypernetwork's training: its init, batches, draws"
    )
    stage1_steps: int = Field(CPU_RECIPE.text.stage1_steps, ge=1)
    stage2_steps: int = Field(CPU_RECIPE.text.stage2_steps, ge=1)
    meta_batch: int = Field(CPU_RECIPE.text.meta_batch, ge=1)
    batch_size: int = Field(CPU_RECIPE.text.batch_size, ge=1)
    lm_positions: int = Field(CPU_RECIPE.text.lm_positions, ge=1)
    max_tokens: int = Field(
        CPU_RECIPE.text.max_tokens, ge=2, description="tokens of each row, in training and here"
    )
    data_limit: int | None = Field(None, description="rows per task and split for training")
    test_examples: int = Field(300, ge=1, description="test rows per task (accuracy)")
    test_lm_positions: int = Field(1024, ge=1, description="next-token targets per task (LM)")
    support_examples: int = Field(
        TASK_EMBEDDING_EXAMPLES, ge=2, description="rows behind the unseen task's fitted head"
    )
    finetune_examples: int = Field(480, ge=1, description="training rows per task (fine-tune)")
    finetune_tasks: tuple[str, ...] | None = None  # None: every text task
    epochs: int = Field(3, ge=2)
    recipe_lr: float = Field(1e-3, gt=0)
    seeds: tuple[int, ...] = (0, 1, 2)
    foreign_steps: int = Field(200, ge=1, description="steps of the foreign-text check")
    # training from Hugging Face's init spreads by about 0.2 nats over seeds at 200 steps
    # (docs/lab/foreign_vocabulary.md): three seeds left the check's verdict to chance
    foreign_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    @property
    def recipe(self) -> TextFinetuneRecipe:
        return TextFinetuneRecipe(
            epochs=self.epochs,
            lr=self.recipe_lr,
            lm_positions=self.lm_positions,
            max_tokens=self.max_tokens,
        )


TEXT_QUICK = dict(
    stage1_steps=2,
    stage2_steps=2,
    meta_batch=1,
    batch_size=4,
    lm_positions=16,
    data_limit=32,
    test_examples=16,
    test_lm_positions=64,
    support_examples=28,
    finetune_examples=16,
    finetune_tasks=("fortune_topic", "wordnet_verb_sense"),
    epochs=2,
    seeds=(0, 1),
    foreign_steps=3,
    foreign_seeds=(0,),
)
