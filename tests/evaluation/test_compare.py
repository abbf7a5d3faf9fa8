"""``tal eval --compare``: an earlier results.json against this one (the committed run's file
is the input: it is real ``tal eval`` output, and the expected figures are computed from it)."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tal.evaluation.compare import compare_results, format_comparison
from tal.evaluation.report import PERCENT, read_results

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "results.json"
LIFT = 0.1  # accuracy added to one task in the "after" run


@pytest.fixture
def before():
    return read_results(COMMITTED)


def _change(comparison, section, method, key):
    (change,) = [
        c for c in comparison.changes if (c.section, c.method, c.key) == (section, method, key)
    ]
    return change


def test_a_run_against_itself_changes_nothing(before):
    comparison = compare_results(before, copy.deepcopy(before))
    assert comparison.changes and all(c.delta == 0 for c in comparison.changes)
    assert all(b == a for b, a in comparison.verdicts.values())
    assert comparison.only_before == comparison.only_after == []
    methods = set(before["untrained_accuracy"])
    assert {c.method for c in comparison.changes} == methods


def test_changes_are_measured_per_task_and_in_the_mean(before):
    after = copy.deepcopy(before)
    latin = after["untrained_accuracy"]["tal"]["glyphs_latin"]
    after["untrained_accuracy"]["tal"]["glyphs_latin"] = {a: v + LIFT for a, v in latin.items()}
    del after["untrained_accuracy"]["logah"]
    comparison = compare_results(before, after)

    task_count = len(before["untrained_accuracy"]["tal"])
    latin_change = _change(comparison, "untrained accuracy", "tal", "glyphs_latin")
    assert latin_change.delta == pytest.approx(PERCENT * LIFT)
    mean_change = _change(comparison, "untrained accuracy", "tal", "mean")
    assert mean_change.delta == pytest.approx(PERCENT * LIFT / task_count)
    assert _change(comparison, "untrained accuracy", "ghn3", "glyphs_latin").delta == 0
    assert comparison.only_before == ["method logah"] and comparison.only_after == []
    assert not any(
        c.method == "logah" for c in comparison.changes if c.section == "untrained accuracy"
    )
    text = format_comparison(comparison, "old.json", "new.json")
    assert f"| tal | glyphs_latin | {latin_change.before:.1f} % |" in text
    assert f"| {PERCENT * LIFT:+.1f} |" in text and "only before: method logah" in text


def test_a_target_that_flips_is_reported(before):
    after = copy.deepcopy(before)
    for task, archs in after["untrained_accuracy"]["tal"].items():
        after["untrained_accuracy"]["tal"][task] = {a: 1.0 for a in archs}
    (margin,) = [t for t in compare_results(before, after).verdicts if "margin" in t]
    assert compare_results(before, after).verdicts[margin] == (False, True)


def test_cli_compares_against_the_output_dirs_results(before, tmp_path):
    after = copy.deepcopy(before)
    after["training_seconds"]["tal"] = before["training_seconds"]["tal"] * 2
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(json.dumps(after))
    command = [sys.executable, "-m", "tal.cli", "eval", "--output-dir", str(tmp_path / "new")]
    result = subprocess.run([*command, "--compare", str(COMMITTED)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    seconds = before["training_seconds"]["tal"]
    assert f"| tal | wall | {seconds:.1f} s | {2 * seconds:.1f} s | {seconds:+.1f} |" in (
        result.stdout
    )
    missing = subprocess.run(
        [*command, "--compare", str(tmp_path / "nope.json")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "nope.json not found" in missing.stderr


def test_machines_that_differ_are_named(before):
    machine = {"torch": "2.14.1", "cpu_model": "AMD EPYC", "cpu_kernels": "AVX512"}
    before = {**before, "environment": machine}
    same = compare_results(before, copy.deepcopy(before))
    assert same.environment == [] and "## machine" not in format_comparison(same, "a", "b")

    after = {**copy.deepcopy(before), "environment": {**machine, "cpu_kernels": "AVX2"}}
    comparison = compare_results(before, after)
    assert comparison.environment == [("cpu_kernels", "AVX512", "AVX2")]
    assert "| cpu_kernels | AVX512 | AVX2 |" in format_comparison(comparison, "a", "b")

    unrecorded = {k: v for k, v in after.items() if k != "environment"}
    assert compare_results(unrecorded, after).environment == [("recorded", False, True)]
