import math

import pytest
from scipy import stats as scipy_stats

from tal.evaluation.stats import epochs_to_reach, paired_t_test, summarize


def test_summarize():
    summary = summarize([1.0, 2.0, 3.0, 4.0])
    assert summary.mean == 2.5 and summary.n == 4
    assert summary.std == pytest.approx(1.2909944, rel=1e-6)
    assert summarize([5.0]).std == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_paired_t_test_matches_the_textbook_formula():
    a, b = [0.61, 0.64, 0.59, 0.66, 0.63], [0.58, 0.60, 0.59, 0.61, 0.60]
    result = paired_t_test(a, b)
    differences = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(differences) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 4)
    t = mean / (sd / math.sqrt(5))
    assert result.t_statistic == pytest.approx(t)
    assert result.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(t), df=4))
    assert result.mean_difference == pytest.approx(mean)
    assert math.isnan(paired_t_test([1.0], [0.5]).p_value)
    assert math.isnan(paired_t_test([1.0, 2.0], [0.0, 1.0]).p_value)  # constant difference
    with pytest.raises(ValueError):
        paired_t_test([1.0], [1.0, 2.0])


def test_epochs_to_reach():
    assert epochs_to_reach([0.1, 0.5, 0.7], 0.5) == 2
    assert epochs_to_reach([0.1, 0.2], 0.5) is None
