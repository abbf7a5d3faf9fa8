"""Two ``tal eval`` runs side by side: what changed between an earlier results.json and this one.

Only measured and derived figures that both runs have are compared (a method or task that
only one run has is listed, not compared); every figure is recomputed from the measurements
with :func:`tal.evaluation.report.analyse`, so runs written by older code compare the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tal.evaluation.report import PERCENT, analyse, untrained_by_task


@dataclass(frozen=True)
class Change:
    """One figure in both runs. ``before`` / ``after`` in the figure's unit (``unit``)."""

    section: str
    method: str
    key: str
    before: float
    after: float
    unit: str

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class Comparison:
    changes: list[Change]
    verdicts: dict[str, tuple[bool | None, bool | None]]  # target -> (met before, met after)
    only_before: list[str]
    only_after: list[str]
    environment: list[tuple[str, Any, Any]]  # (field, before, after) where the machines differ


def _percent_changes(
    section: str, before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> list[Change]:
    return [
        Change(section, method, key, PERCENT * before[method][key], PERCENT * value, "%")
        for method, values in after.items()
        if method in before
        for key, value in values.items()
        if key in before[method]
    ]


def _labels(results: dict[str, Any]) -> set[str]:
    untrained = results["untrained_accuracy"]
    return {f"method {m}" for m in untrained} | {
        f"task {t}" for tasks in untrained.values() for t in tasks
    }


def compare_results(before: dict[str, Any], after: dict[str, Any]) -> Comparison:
    """Per method: untrained accuracy (per task and the mean), mean fine-tuned final accuracy
    per task, training seconds; and which targets each run met."""
    derived_before, derived_after = analyse(before), analyse(after)
    untrained_before, untrained_after = untrained_by_task(before), untrained_by_task(after)
    for table, derived in ((untrained_before, derived_before), (untrained_after, derived_after)):
        for method, mean in derived["mean_untrained"].items():
            table[method]["mean"] = mean
    final_before, final_after = (
        {m: {t: s["mean"] for t, s in tasks.items()} for m, tasks in derived["final"].items()}
        for derived in (derived_before, derived_after)
    )
    seconds_before, seconds_after = before["training_seconds"], after["training_seconds"]
    changes = (
        _percent_changes("untrained accuracy", untrained_before, untrained_after)
        + _percent_changes("fine-tuned final accuracy", final_before, final_after)
        + [
            Change("training time", m, "wall", seconds_before[m], seconds, "s")
            for m, seconds in seconds_after.items()
            if m in seconds_before
        ]
    )
    targets = list(derived_before["verdicts"]) + [
        t for t in derived_after["verdicts"] if t not in derived_before["verdicts"]
    ]
    verdicts = {
        target: tuple(
            derived["verdicts"][target][0] if target in derived["verdicts"] else None
            for derived in (derived_before, derived_after)
        )
        for target in targets
    }
    labels_before, labels_after = _labels(before), _labels(after)
    return Comparison(
        changes,
        verdicts,
        sorted(labels_before - labels_after),
        sorted(labels_after - labels_before),
        _environment_differences(before.get("environment"), after.get("environment")),
    )


def _environment_differences(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> list[tuple[str, Any, Any]]:
    """Fields of the recorded machines (``tal.checkpoints.provenance``) that differ; one
    ``("recorded", ...)`` row when only one run (or neither) recorded its machine, since then
    nothing says the two are comparable."""
    if not before or not after:
        return [("recorded", bool(before), bool(after))]
    return [
        (key, before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


def _met(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def format_comparison(comparison: Comparison, before_name: str, after_name: str) -> str:
    """Markdown: a targets table, then one table of changes per section."""
    lines = [
        f"# `tal eval` results: {after_name} against {before_name}",
        "",
        "| target | before | after |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t} | {_met(b)} | {_met(a)} |" for t, (b, a) in comparison.verdicts.items()]
    sections = dict.fromkeys(change.section for change in comparison.changes)
    for section in sections:
        lines += [
            "",
            f"## {section}",
            "",
            "| method | figure | before | after | change |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {c.method} | {c.key} | {c.before:.1f} {c.unit} | {c.after:.1f} {c.unit} "
            f"| {c.delta:+.1f} |"
            for c in comparison.changes
            if c.section == section
        ]
    if comparison.environment:
        lines += [
            "",
            "## machine",
            "",
            "The runs' machines differ (or were not recorded). A different CPU kernel path "
            "changes trained weights: read about a point in an untrained mean, and a few on one "
            "task, as run-to-run spread (docs/lab/ablations.md).",
            "",
            "| field | before | after |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {key} | {b} | {a} |" for key, b, a in comparison.environment]
    for label, names in (
        ("only before", comparison.only_before),
        ("only after", comparison.only_after),
    ):
        if names:
            lines += ["", f"{label}: {', '.join(names)}"]
    return "\n".join(lines) + "\n"
