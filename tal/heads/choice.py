"""Which classifier head predicted weights carry, and when a fitted one can be had.

The vocabulary is one ``Literal``: ``"auto"`` (a request's default: fit a head where the task's
labelled images allow it), ``"predicted"`` (the hypernetwork's own) and ``"discriminant"`` (fitted
in closed form to the task's images, ``tal.heads.discriminant``). A blob records the head it
carries under ``HEAD_METADATA_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from tal.arch.specs import GPT2Spec, ViTSpec
from tal.heads.support import head_fit_gflop

HeadChoice = Literal["auto", "predicted", "discriminant"]
HEAD_CHOICES: tuple[HeadChoice, ...] = get_args(HeadChoice)
HEAD_AUTO, HEAD_PREDICTED, HEAD_DISCRIMINANT = HEAD_CHOICES
ServedHead = Literal["predicted", "discriminant"]  # what a blob carries
HEAD_METADATA_KEY = "tal.head"


class SupportShape(Protocol):
    """What the choice needs to know of a task's labelled images."""

    @property
    def classes(self) -> int: ...

    @property
    def examples(self) -> int: ...


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
) -> ServedHead:
    """The head a request gets. ``"auto"`` fits one when the task has labelled images, the
    arch is a ViT with the task's ``num_classes`` and the forward pass over the images is at
    most ``max_gflop`` (:func:`tal.heads.support.head_fit_gflop`), else keeps the predicted one;
    ``"discriminant"`` asks for one and raises :class:`HeadUnavailable` saying why it cannot
    be had."""
    if requested == HEAD_PREDICTED:
        return HEAD_PREDICTED
    reason = _cannot_fit(task, spec, support)
    if reason is not None:
        if requested == HEAD_AUTO:
            return HEAD_PREDICTED
        raise HeadUnavailable(reason)
    assert support is not None and isinstance(spec, ViTSpec)  # _cannot_fit checked both
    cost = head_fit_gflop(spec, support.examples)
    if cost <= max_gflop:
        return HEAD_DISCRIMINANT
    if requested == HEAD_AUTO:
        return HEAD_PREDICTED
    raise HeadUnavailable(
        f"head: fitting it runs this arch over the task's {support.examples} images, about "
        f"{cost:,.0f} GFLOP, above the limit of {max_gflop:,.0f} (TAL_MAX_HEAD_FIT_GFLOP on a "
        "server); ask for head 'predicted' and fit it with "
        "tal.heads.discriminant.fit_discriminant_head, or use a smaller arch",
        too_costly=True,
    )


def _cannot_fit(
    task: str | None, spec: ViTSpec | GPT2Spec, support: SupportShape | None
) -> str | None:
    """Why no head can be fitted for this task and arch, or None."""
    if support is None:
        return (
            f"head: 'discriminant' needs a task registered from labelled images (POST "
            f"/v1/tasks with an .npz upload); task {task!r} has none. Use head 'predicted'"
        )
    if not isinstance(spec, ViTSpec):
        return "head: 'discriminant' needs a ViT arch (family 'vit')"
    if spec.num_classes != support.classes:
        return (
            f"arch: num_classes is {spec.num_classes} but task {task!r} has {support.classes} "
            f"classes; set num_classes to {support.classes} or ask for head 'predicted'"
        )
    return None
