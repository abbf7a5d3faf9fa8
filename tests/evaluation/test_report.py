"""docs/results.md from a results.json: the unseen-task section shows the figures of that file
(the committed run's file is the input)."""

from pathlib import Path

import pytest

from tal.evaluation.report import (
    PERCENT,
    analyse,
    ancestry_reference,
    read_results,
    write_report,
)

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "results.json"


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _with_and_without_predicted_heads(results: dict) -> tuple[dict, dict]:
    """The results with the unseen task's predicted-head figures (made up from the committed
    ones where the run has none: half the fitted head's accuracy), and without them."""
    task = results["unseen_task"]
    predicted = results.get("unseen_predicted_head_accuracy") or {
        method: {arch: acc / 2 for arch, acc in per_task[task].items()}
        for method, per_task in results["untrained_accuracy"].items()
    }
    without = {k: v for k, v in results.items() if k != "unseen_predicted_head_accuracy"}
    return {**without, "unseen_predicted_head_accuracy": predicted}, without


@pytest.mark.parametrize("fitted_head", [True, False])
def test_unseen_task_section_reports_untrained_and_first_epoch_accuracy(tmp_path, fitted_head):
    fitted, predicted_only = _with_and_without_predicted_heads(read_results(COMMITTED))
    results = fitted if fitted_head else predicted_only
    markdown, json_path = tmp_path / "results.md", tmp_path / "results.json"
    write_report(results, markdown, json_path)
    text = markdown.read_text()
    task = results["unseen_task"]
    assert f"## 4. The unseen task (`{task}`)" in text
    assert ("untrained, head as predicted" in text) is fitted_head
    for method, per_task in results["untrained_accuracy"].items():
        cells = [f"{PERCENT * _mean(per_task[task].values()):.1f}"]
        if fitted_head:
            as_predicted = results["unseen_predicted_head_accuracy"][method].values()
            cells.append(f"{PERCENT * _mean(as_predicted):.1f}")
        runs = results["finetune"]["curves"][method][task].values()
        cells.append(f"{PERCENT * _mean(run['test_accuracy'][0] for run in runs):.1f} ± ")
        assert f"| {method} | " + " | ".join(cells) in text
    assert read_results(json_path) == results  # what it wrote reads back unchanged


def test_the_margin_also_names_its_value_with_the_unseen_tasks_heads_as_predicted():
    fitted, predicted_only = _with_and_without_predicted_heads(read_results(COMMITTED))
    task = fitted["unseen_task"]
    key = "untrained margin over GHN-3 >= 24 points"
    assert "as predicted" not in analyse(predicted_only)["verdicts"][key][1]
    detail = analyse(fitted)["verdicts"][key][1]
    # the margin with the predicted heads: the same mean over tasks, the unseen task's cell
    # replaced by the predicted heads' accuracy
    by_method = {}
    for method in ("tal", "ghn3"):
        per_task = {t: _mean(a.values()) for t, a in fitted["untrained_accuracy"][method].items()}
        per_task[task] = _mean(fitted["unseen_predicted_head_accuracy"][method].values())
        by_method[method] = _mean(per_task.values())
    as_predicted = PERCENT * (by_method["tal"] - by_method["ghn3"])
    assert detail.endswith(f" ({as_predicted:.1f} with the unseen task's heads as predicted)")


def test_ancestry_fraction_compares_the_tasks_the_ancestry_learned():
    results = read_results(COMMITTED)
    ancestry, _ = ancestry_reference(results)
    learned = [t for t in results["untrained_accuracy"]["tal"] if t in ancestry]
    assert results["unseen_task"] not in learned and len(learned) == 4
    tal = [sum(v.values()) / len(v) for t, v in results["untrained_accuracy"]["tal"].items()]
    tal_learned = [
        sum(v.values()) / len(v)
        for t, v in results["untrained_accuracy"]["tal"].items()
        if t in learned
    ]
    ratio = sum(tal_learned) / sum(ancestry[t] for t in learned)
    (verdict,) = [v for k, v in analyse(results)["verdicts"].items() if "ancestry" in k]
    assert verdict[1].startswith(f"{PERCENT * ratio:.0f}% (")
    assert verdict[0] == (ratio >= 0.85)
    assert sum(tal_learned) / len(tal_learned) != sum(tal) / len(tal)  # the unseen task is out


def test_ancestry_reference_prefers_the_methods_test_images_over_its_validation_split(tmp_path):
    results = read_results(COMMITTED)
    validation = {
        key.removeprefix("val_acc/"): value
        for key, value in results["ancestry_val_accuracy"].items()
        if key.startswith("val_acc/")
    }
    older = {**results, "ancestry_test_accuracy": {}}
    assert ancestry_reference(older) == (validation, "validation")
    measured = {task: acc / 2 for task, acc in validation.items()}
    newer = {**results, "ancestry_test_accuracy": measured}
    assert ancestry_reference(newer) == (measured, "test")
    (verdict,) = [v for k, v in analyse(newer)["verdicts"].items() if "ancestry" in k]
    assert verdict[1].endswith("the ancestry on its test split)")

    markdown = tmp_path / "results.md"
    write_report(newer, markdown, tmp_path / "results.json")
    section = markdown.read_text().split("## 6. Ancestry")[1]
    test_row = next(line for line in section.splitlines() if line.startswith("| test"))
    validation_row = next(line for line in section.splitlines() if line.startswith("| validation"))
    assert [f"{PERCENT * measured[t]:.1f}" for t in validation] == test_row.split(" | ")[1:-1]
    assert f"{PERCENT * validation['glyphs_latin']:.1f}" in validation_row


def test_the_cost_section_names_the_machine_when_recorded(tmp_path):
    results = read_results(COMMITTED)
    machine = {
        "python": "3.12.3",
        "torch": "2.14.1",
        "cpu_model": "AMD EPYC",
        "cpu_kernels": "AVX2",
        "torch_threads": 1,
        "cuda_device": None,
    }
    markdown, json_path = tmp_path / "results.md", tmp_path / "results.json"
    write_report({**results, "environment": machine}, markdown, json_path)
    assert "Measured on: AMD EPYC, CPU kernels AVX2, 1 torch thread(s), torch 2.14.1." in (
        markdown.read_text()
    )
    write_report({k: v for k, v in results.items() if k != "environment"}, markdown, json_path)
    assert "Measured on:" not in markdown.read_text()
