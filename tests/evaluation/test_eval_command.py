"""``tal eval --quick`` end to end on a tiny budget, with the real CLI."""

import json
import subprocess
import sys

import pytest

from tal.checkpoints.ancestry import TASK_EMBEDDING_EXAMPLES
from tal.evaluation.config import RANDOM_INIT
from tal.tasks import held_out_task
from tal.training.ancestry_trainer import AncestryTrainer
from tal.training.config import AncestryTrainConfig, OptimConfig
from tal.training.distributed import DistInfo
from tal.training.recipe import CPU_RECIPE

QUICK_TIMEOUT_S = 1200


@pytest.mark.slow
def test_eval_quick_writes_a_well_formed_report(tmp_path):
    import torch

    ancestry_run = tmp_path / "ancestry_run"
    config = AncestryTrainConfig(
        run_dir=ancestry_run,
        depth=1,
        embed_dim=32,
        num_heads=2,
        steps=3,
        batch_size=16,
        task_examples=16,
        optim=OptimConfig(warmup_steps=1),
    )
    AncestryTrainer(config, DistInfo(0, 1, torch.device("cpu")), data_limit=32).run_and_export()
    docs = tmp_path / "docs"
    quick = [
        sys.executable,
        "-m",
        "tal.cli",
        "eval",
        "--quick",
        "--run-dir",
        str(tmp_path / "eval"),
        "--ancestry-run",
        str(ancestry_run),
        "--output-dir",
        str(docs),
    ]
    # --train-only trains the named methods and measures nothing; the full run resumes them
    trained = subprocess.run(
        [*quick, "--train-only", "--methods", "tal"],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "trained tal in" in trained.stdout
    tal_stage2 = tmp_path / "eval" / "tal" / "stage2" / "last.safetensors"
    assert tal_stage2.is_file() and not (tmp_path / "eval" / "ghn3").exists()
    assert not docs.exists()
    stage2_state = tal_stage2.read_bytes()

    result = subprocess.run(quick, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert tal_stage2.read_bytes() == stage2_state  # resumed, not retrained
    results = json.loads((docs / "results.json").read_text())
    ancestry_tasks = set(
        json.loads((ancestry_run / "ancestry" / "summary.json").read_text())["task_offsets"]
    )
    assert set(results["ancestry_test_accuracy"]) == ancestry_tasks
    assert all(0.0 <= acc <= 1.0 for acc in results["ancestry_test_accuracy"].values())
    methods = {"random", "weight_selection", "dct", "ghn3", "logah", "tal", "tal+"}
    assert set(results["untrained_accuracy"]) == methods
    assert results["training_seconds"]["dct"] == results["training_seconds"]["random"] == 0.0
    verdicts = results["derived"]["verdicts"]
    for transfer in ("weight_selection", "dct"):
        assert f"untrained TAL above {transfer}" in verdicts
        assert f"fine-tuned TAL above {transfer}" in verdicts
    assert set(results["architectures"]) == {"small", "medium", "largest", "deeper"}
    assert results["config"]["stage2_task_temperature"] == CPU_RECIPE.stage2_task_temperature
    assert results["config"]["stage2_distillation"] == CPU_RECIPE.stage2_distillation
    deeper, largest = results["architectures"]["deeper"], results["architectures"]["largest"]
    assert deeper["depth"] > largest["depth"]
    for per_task in results["untrained_accuracy"].values():
        assert len(per_task) == 5
        for per_arch in per_task.values():
            assert all(0.0 <= acc <= 1.0 for acc in per_arch.values())
    # the unseen task's untrained figures use the discriminant head; the predicted head's stay
    predicted_head = results["unseen_predicted_head_accuracy"]
    assert set(predicted_head) == methods
    for per_arch in predicted_head.values():
        assert set(per_arch) == set(results["architectures"])
    unseen_task = held_out_task()
    curves = results["finetune"]["curves"]
    assert set(curves) == methods
    for method, per_task in curves.items():
        for task, per_seed in per_task.items():
            assert len(per_seed) == 2
            assert all(len(run["test_accuracy"]) == 2 for run in per_seed.values())
            for run in per_seed.values():
                fit = run["head_calibration"]
                if method == RANDOM_INIT:  # the baseline keeps timm's default head
                    assert fit is None and run["discriminant_head"] is None
                else:  # a predicted head was calibrated before epoch 1
                    assert 0.0 <= fit["scale"] <= 1.0 and fit["loss_after"] <= fit["loss_before"]
                    fitted = run["discriminant_head"]
                    if task == unseen_task.name:  # replaced first, from its embedding's images
                        assert (fitted["examples"], fitted["classes"]) == (
                            TASK_EMBEDDING_EXAMPLES,
                            unseen_task.num_classes,
                        )
                        assert 0.0 <= fitted["support_accuracy"] <= 1.0
                    else:
                        assert fitted is None
    assert set(results["derived"]["paired_tests"]) == methods - {"tal"}
    assert results["finetune"]["recipe"]["warmup_epochs"] == 1
    unseen = results["derived"]["unseen_task"]
    assert set(unseen) == methods and all("first_epoch" in row for row in unseen.values())
    markdown = (docs / "results.md").read_text()
    for heading in (
        "## Targets",
        "## 1. Untrained",
        "## 2-3. Fine-tuning",
        "Head calibration before epoch 1",
        "## 4. The unseen task (`glyphs_greek`)",
        "untrained, head as predicted",
        "linear warm-up over the first 1 epoch, then cosine",  # quick: 2 epochs, 1 warming up
        "## 5. Cost",
        "## 6. Ancestry",
    ):
        assert heading in markdown
    assert (docs / "untrained_accuracy.png").stat().st_size > 0
    assert (docs / "convergence_glyphs_greek.png").stat().st_size > 0

    # --report-only re-renders the same report from results.json, with no training
    first = markdown
    (docs / "results.md").unlink()
    rerender = subprocess.run(
        [sys.executable, "-m", "tal.cli", "eval", "--report-only", "--output-dir", str(docs)],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
    )
    assert rerender.returncode == 0, rerender.stderr[-3000:]
    assert (docs / "results.md").read_text() == first
    assert json.loads((docs / "results.json").read_text())["derived"] == results["derived"]
    missing = subprocess.run(
        [sys.executable, "-m", "tal.cli", "eval", "--report-only", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
    )
    assert missing.returncode == 2 and "run `tal eval` first" in missing.stderr

    # --add measures methods again (or anew) with the stored run's budget; random init, measured
    # again beside them, must reproduce the stored figures for the merge to be taken
    add = [*quick[:4], "--add", *quick[5:], "--methods", "dct"]
    added = subprocess.run(add, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert added.returncode == 0, added.stderr[-3000:]
    merged = json.loads((docs / "results.json").read_text())
    assert merged["additions"] == [
        {"methods": ["dct"], "environment": merged["environment"], "reference_difference": 0.0}
    ]
    for field in ("untrained_accuracy", "unseen_predicted_head_accuracy"):
        assert merged[field] == results[field]  # dct measured again: the same figures
    assert merged["finetune"] == results["finetune"]
    assert (
        "dct: measured later with this run's config and added" in (docs / "results.md").read_text()
    )
    budget = subprocess.run(
        [*add, "--epochs", "3"], capture_output=True, text=True, timeout=QUICK_TIMEOUT_S
    )
    assert budget.returncode == 2 and "--add keeps the earlier run's budget" in budget.stderr
