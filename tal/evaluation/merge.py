"""``tal eval --add``: methods measured later, added to an earlier run's results.

A full ``tal eval`` trains every hypernetwork (hours on a CPU). A method that needs no training,
or one trained since, can join an earlier run instead: the new run uses the earlier run's config
(budgets, tasks, seeds, recipe) and measures random init again beside it. Random init is the
reference: its figures depend only on the code, the data and the machine, so the merge is
refused unless they reproduce the stored ones, which is what makes the added figures comparable
with the stored ones.
"""

from __future__ import annotations

import copy
from typing import Any

from tal.evaluation.config import METHODS, RANDOM_INIT, EvalConfig

REFERENCE_TOLERANCE = 0.005
"""Largest difference (accuracy as a fraction) allowed between the reference's stored and
re-measured figures: half a point, well below the seed spread of any fine-tuned figure."""

# Where the runs may differ: the folders each ran in, and which methods it measured.
PER_RUN_FIELDS = ("methods", "run_dir", "ancestry_run", "output_dir")
# results fields keyed by method first
PER_METHOD_FIELDS = (
    "untrained_accuracy",
    "unseen_predicted_head_accuracy",
    "training_seconds",
    "prediction_ms",
)


def config_for_addition(
    earlier: dict[str, Any], methods: tuple[str, ...], paths: dict[str, Any]
) -> EvalConfig:
    """The earlier run's config measuring ``methods`` only (random init, the reference, is
    measured by every run), with the folders in ``paths`` (``None`` keeps the earlier's)."""
    if not methods:
        raise ValueError("--add needs --methods: the methods to measure and add")
    if RANDOM_INIT in methods:
        raise ValueError(f"{RANDOM_INIT!r} is the reference every run measures; leave it out")
    folders = {k: v for k, v in paths.items() if v is not None}
    return EvalConfig(**{**earlier["config"], **folders, "methods": tuple(methods)})


def _largest_difference(stored: Any, measured: Any, where: str) -> tuple[float, str]:
    """The largest difference between two nested dicts / lists of numbers with the same keys,
    and where it is; a missing or extra key is a ValueError."""
    if isinstance(stored, dict):
        if set(stored) != set(measured):
            raise ValueError(
                f"{where}: the stored run has {sorted(stored)}, the new one {sorted(measured)}"
            )
        found = [_largest_difference(stored[k], measured[k], f"{where}.{k}") for k in stored]
        return max(found, default=(0.0, where))
    if isinstance(stored, list):
        if len(stored) != len(measured):
            raise ValueError(f"{where}: {len(stored)} values stored, {len(measured)} measured")
        found = [
            _largest_difference(a, b, f"{where}[{i}]")
            for i, (a, b) in enumerate(zip(stored, measured, strict=True))
        ]
        return max(found, default=(0.0, where))
    return abs(float(stored) - float(measured)), where


def reference_difference(earlier: dict[str, Any], added: dict[str, Any]) -> tuple[float, str]:
    """How far the new run's random init is from the stored one: the largest difference over
    its untrained accuracies and its fine-tuning test accuracies, and where it is."""
    untrained = _largest_difference(
        earlier["untrained_accuracy"][RANDOM_INIT],
        added["untrained_accuracy"][RANDOM_INIT],
        "untrained_accuracy",
    )
    stored, measured = (
        {
            task: {seed: curve["test_accuracy"] for seed, curve in seeds.items()}
            for task, seeds in results["finetune"]["curves"][RANDOM_INIT].items()
        }
        for results in (earlier, added)
    )
    finetuned = _largest_difference(stored, measured, "finetune")
    return max(untrained, finetuned)


def add_methods(
    earlier: dict[str, Any], added: dict[str, Any], tolerance: float = REFERENCE_TOLERANCE
) -> dict[str, Any]:
    """``earlier``'s results with the methods ``added`` measured (replacing any it had).

    Raises:
        ValueError: the runs' configs differ beyond the methods and folders, their ancestries
            differ, or random init does not reproduce within ``tolerance``.
    """
    mismatched = sorted(
        key
        for key in set(earlier["config"]) | set(added["config"])
        if key not in PER_RUN_FIELDS and earlier["config"].get(key) != added["config"].get(key)
    )
    if mismatched:
        raise ValueError(f"the runs' configs differ in {mismatched}: add only to the same budget")
    if earlier["ancestry_val_accuracy"] != added["ancestry_val_accuracy"]:
        raise ValueError(
            "the new run's ancestry is not the earlier run's (their validation accuracies "
            "differ): point --ancestry-run at the ancestry the earlier run used"
        )
    difference, where = reference_difference(earlier, added)
    if difference > tolerance:
        raise ValueError(
            f"random init did not reproduce the stored run ({100 * difference:.2f} points at "
            f"{where}; at most {100 * tolerance:.2f} allowed): the code, data or machine changed "
            "since, so the figures would not compare; run the whole evaluation instead"
        )
    new = [m for m in added["config"]["methods"] if m != RANDOM_INIT]
    merged = copy.deepcopy(earlier)
    merged.pop("derived", None)
    methods = [m for m in METHODS if m in {*earlier["config"]["methods"], *new}]
    merged["config"]["methods"] = methods
    order = [RANDOM_INIT, *methods]
    for field in PER_METHOD_FIELDS:
        # a method measured again keeps nothing of its earlier figures, also where the new run
        # records none (a stale timing or accuracy beside new ones would read as one run's)
        kept = {m: v for m, v in merged.get(field, {}).items() if m not in new}
        both = {**kept, **{m: added[field][m] for m in new if m in added[field]}}
        merged[field] = {m: both[m] for m in order if m in both}
    curves = {**merged["finetune"]["curves"], **{m: added["finetune"]["curves"][m] for m in new}}
    merged["finetune"]["curves"] = {m: curves[m] for m in order if m in curves}
    merged["additions"] = [
        *earlier.get("additions", []),
        {
            "methods": new,
            "environment": added.get("environment", {}),
            "reference_difference": difference,
        },
    ]
    return merged
