"""docs/results.md from a results.json: the unseen-task section shows the figures of that file
(the committed run's file is the input)."""

from pathlib import Path

from tal.evaluation.report import (
    PERCENT,
    analyse,
    ancestry_reference,
    read_results,
    write_report,
)

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "results.json"


def test_unseen_task_section_reports_untrained_and_first_epoch_accuracy(tmp_path):
    results = read_results(COMMITTED)
    markdown, json_path = tmp_path / "results.md", tmp_path / "results.json"
    write_report(results, markdown, json_path)
    text = markdown.read_text()
    task = results["unseen_task"]
    assert f"## 4. The unseen task (`{task}`)" in text
    for method, per_task in results["untrained_accuracy"].items():
        untrained = PERCENT * sum(per_task[task].values()) / len(per_task[task])
        runs = results["finetune"]["curves"][method][task].values()
        first_epoch = PERCENT * sum(run["test_accuracy"][0] for run in runs) / len(runs)
        assert f"| {method} | {untrained:.1f} | {first_epoch:.1f} ± " in text
    assert read_results(json_path) == results  # what it wrote reads back unchanged


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
