"""Statistics for the report: mean / standard deviation and a paired t-test."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (0 for a single value)
    n: int


def summarize(values: list[float]) -> Summary:
    if not values:
        raise ValueError("cannot summarise an empty list")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return Summary(mean, 0.0, 1)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return Summary(mean, math.sqrt(variance), len(values))


@dataclass(frozen=True)
class PairedTest:
    mean_difference: float  # mean of a - b
    t_statistic: float
    p_value: float
    n: int


def paired_t_test(a: list[float], b: list[float]) -> PairedTest:
    """Two-sided paired t-test of ``a`` against ``b`` (same seeds / tasks, in the same order).

    With fewer than two pairs, or identical differences, the p-value is NaN (no test possible).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    mean_difference = sum(differences) / len(differences) if differences else math.nan
    if len(differences) < 2 or len(set(differences)) == 1:
        return PairedTest(mean_difference, math.nan, math.nan, len(differences))
    result = stats.ttest_rel(a, b)
    return PairedTest(
        mean_difference, float(result.statistic), float(result.pvalue), len(differences)
    )


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    """First epoch (1-based) whose value is at least ``target``; None if never."""
    for epoch, value in enumerate(curve, start=1):
        if value >= target:
            return epoch
    return None
