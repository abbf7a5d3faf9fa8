"""Which classifier head predicted weights carry, and when a fitted one can be had.

The vocabulary is one ``Literal``: ``"auto"`` (a request's default: fit a head where the task's
labelled images allow it), ``"predicted"`` (the hypernetwork's own) and ``"discriminant"`` (fitted
in closed form to the task's images, ``tal.heads.discriminant``). A blob records the head it
carries under ``HEAD_METADATA_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION
from tal.arch.specs import GPT2Spec, ViTSpec
from tal.heads.support import head_fit_gflop
from tal.tasks.text.tokenizer import GPT2_VOCAB_SIZE

HeadChoice = Literal["auto", "predicted", "discriminant"]
HEAD_CHOICES: tuple[HeadChoice, ...] = get_args(HeadChoice)
HEAD_AUTO, HEAD_PREDICTED, HEAD_DISCRIMINANT = HEAD_CHOICES
ServedHead = Literal["predicted", "discriminant"]  # what a blob carries
HEAD_METADATA_KEY = "tal.head"


class SupportShape(Protocol):
    """What the choice needs to know of a task's labelled examples."""

    @property
    def classes(self) -> int: ...

    @property
    def examples(self) -> int: ...

    @property
    def modality(self) -> str: ...


@dataclass(frozen=True)
class HeadUnavailable(Exception):
    """A ``discriminant`` head that cannot be fitted; ``too_costly`` when only the forward pass
    over the images is above the limit (the arch and task would otherwise do)."""

    reason: str
    too_costly: bool = False

    def __str__(self) -> str:
        return self.reason


def choose_head(
    requested: HeadChoice,
    task: str | None,
    spec: ViTSpec | GPT2Spec,
    support: SupportShape | None,
    max_gflop: float,
    format: str = "timm",
) -> ServedHead:
    """The head a request gets. ``"auto"`` fits one when the task has labelled examples, the
    arch can carry their head (a ViT for images; for texts a GPT-2 in format
    ``hf-sequence-classification``) with the task's ``num_classes``, and the forward pass over
    the examples is at most ``max_gflop`` (:func:`tal.heads.support.head_fit_gflop`), else keeps
    the predicted one; ``"discriminant"`` asks for one and raises :class:`HeadUnavailable`
    saying why it cannot be had."""
    if requested == HEAD_PREDICTED:
        return HEAD_PREDICTED
    reason = _cannot_fit(task, spec, support, format)
    if reason is not None:
        if requested == HEAD_AUTO:
            return HEAD_PREDICTED
        raise HeadUnavailable(reason)
    assert support is not None  # _cannot_fit checked it
    cost = head_fit_gflop(spec, support.examples)
    if cost <= max_gflop:
        return HEAD_DISCRIMINANT
    if requested == HEAD_AUTO:
        return HEAD_PREDICTED
    raise HeadUnavailable(
        f"head: fitting it runs this arch over the task's {support.examples} examples, about "
        f"{cost:,.0f} GFLOP, above the limit of {max_gflop:,.0f} (TAL_MAX_HEAD_FIT_GFLOP on a "
        "server); ask for head 'predicted' and fit it with "
        "tal.heads.discriminant.fit_discriminant_head, or use a smaller arch",
        too_costly=True,
    )


def _cannot_fit(
    task: str | None, spec: ViTSpec | GPT2Spec, support: SupportShape | None, format: str
) -> str | None:
    """Why no head can be fitted for this task and arch, or None."""
    if support is None:
        return (
            f"head: 'discriminant' needs a task registered from labelled examples (POST "
            f"/v1/tasks with an .npz of images or a JSONL / CSV of texts); task {task!r} has "
            "none. Use head 'predicted'"
        )
    if support.modality == "image" and not isinstance(spec, ViTSpec):
        return f"head: task {task!r} has images; its head fits a ViT arch (family 'vit')"
    if support.modality == "text" and (
        not isinstance(spec, GPT2Spec) or format != HF_SEQUENCE_CLASSIFICATION
    ):
        return (
            f"head: task {task!r} has texts; its head fits a GPT-2 arch in format "
            f"'{HF_SEQUENCE_CLASSIFICATION}' (GPT2ForSequenceClassification)"
        )
    if support.modality == "text" and spec.vocab_size < GPT2_VOCAB_SIZE:  # type: ignore[union-attr]
        return (
            f"head: task {task!r} has texts in GPT-2's tokens, which need vocab_size >= "
            f"{GPT2_VOCAB_SIZE}; this arch has {spec.vocab_size}"  # type: ignore[union-attr]
        )
    if spec.num_classes != support.classes:
        return (
            f"arch: num_classes is {spec.num_classes} but task {task!r} has {support.classes} "
            f"classes; set num_classes to {support.classes} or ask for head 'predicted'"
        )
    return None
