"""The shape of ``docs/results.json``: what ``tal eval`` measures, checked when a file is read
back (``--report-only``, ``--compare``) so a malformed or foreign file fails with the field to
fix instead of a KeyError deep in the report."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# method -> task -> architecture (or seed) -> value
PerMethodTaskArch = dict[str, dict[str, dict[str, float]]]


class Curve(BaseModel):
    """One fine-tuning run: one entry per epoch."""

    model_config = ConfigDict(extra="forbid")

    train_loss: list[float]
    test_accuracy: list[float]
    head_calibration: dict[str, float] | None = Field(
        None, description="scale, loss_before, loss_after (tal.heads.calibration); None: not run"
    )
    discriminant_head: dict[str, float] | None = Field(
        None,
        description="examples, classes, support_accuracy of the head fitted before calibration "
        "(tal.heads.discriminant); None: the head was not replaced",
    )


class FinetuneResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    architecture: str
    recipe: dict[str, Any]
    curves: dict[str, dict[str, dict[str, Curve]]]  # method -> task -> seed -> curve


class Addition(BaseModel):
    """Methods a later run measured and added to these results (``tal eval --add``)."""

    model_config = ConfigDict(extra="forbid")

    methods: list[str]
    environment: dict[str, Any] = Field(default_factory=dict)
    reference_difference: float = Field(
        description="largest difference between random init's stored and re-measured "
        "accuracies (fraction), the check that the added figures compare with the stored ones"
    )


class EvalResults(BaseModel):
    """Measured figures of one ``tal eval`` run (accuracies are fractions in [0, 1])."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any]
    architectures: dict[str, dict[str, Any]]
    unseen_task: str
    ancestry_val_accuracy: dict[str, float]
    ancestry_test_accuracy: dict[str, float] = Field(
        default_factory=dict,
        description="task -> the ancestry's accuracy on the test images the methods are scored "
        "on, for the tasks it learned (absent from older runs)",
    )
    environment: dict[str, Any] = Field(
        default_factory=dict,
        description="the machine of the measuring run "
        "(tal.checkpoints.provenance.describe_environment; absent from older runs)",
    )
    training_seconds: dict[str, float]
    prediction_ms: dict[str, dict[str, float]]
    untrained_accuracy: PerMethodTaskArch
    unseen_predicted_head_accuracy: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="method -> architecture -> the unseen task's untrained accuracy with the "
        "head as predicted (timm's for random); filled when untrained_accuracy holds the "
        "discriminant head's (config unseen_head; absent from older runs)",
    )
    finetune: FinetuneResults
    additions: list[Addition] = Field(
        default_factory=list,
        description="methods measured by later runs and added (tal eval --add, "
        "tal.evaluation.merge); empty when one run measured everything",
    )
