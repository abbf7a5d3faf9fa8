"""results.json is read back through one schema (the runner writes through it too): the committed
run's file passes, and a damaged copy fails with the field to fix."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tal.evaluation.report import read_results

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "results.json"


@pytest.fixture
def committed() -> dict:
    return json.loads(COMMITTED.read_text())


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    return path


def test_committed_results_round_trip(committed, tmp_path):
    results = read_results(COMMITTED)
    assert "derived" not in results
    committed.pop("derived")
    assert results == committed
    assert read_results(_write(tmp_path, results)) == results


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda d: d.pop("untrained_accuracy"), "untrained_accuracy: Field required"),
        (
            lambda d: d["untrained_accuracy"]["tal"]["fashion_mnist"].update(small="high"),
            "untrained_accuracy.tal.fashion_mnist.small",
        ),
        (
            lambda d: d["finetune"]["curves"]["random"]["fashion_mnist"]["0"].pop("train_loss"),
            "finetune.curves.random.fashion_mnist.0.train_loss",
        ),
        (lambda d: d.update(extra_key=1), "extra_key: Extra inputs are not permitted"),
    ],
)
def test_a_damaged_file_names_the_field(committed, tmp_path, damage, field):
    damaged = copy.deepcopy(committed)
    damage(damaged)
    with pytest.raises(ValueError, match="is not `tal eval` results") as error:
        read_results(_write(tmp_path, damaged))
    assert field in str(error.value)


def test_a_json_list_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds a JSON list"):
        read_results(_write(tmp_path, [1, 2]))


def test_cli_reports_a_damaged_file_and_exits_2(committed, tmp_path):
    del committed["prediction_ms"]
    path = _write(tmp_path, committed)
    command = [sys.executable, "-m", "tal.cli", "eval", "--output-dir", str(tmp_path)]
    result = subprocess.run([*command, "--report-only"], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"error: {path} is not `tal eval` results (prediction_ms: Field required)" in (
        result.stderr
    )
