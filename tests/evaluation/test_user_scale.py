"""``tal eval --user-scale --quick`` end to end with the real CLI, on the shipped checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tal.evaluation.user_scale import METHODS, VIT_S_WIDTH_64_RGB, UserScaleConfig
from tal.evaluation.user_scale_report import (
    BLOCK_END,
    BLOCK_START,
    kept_block,
    render,
    targets,
    write_user_scale_report,
)

QUICK_TIMEOUT_S = 900


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tal.cli", "eval", "--user-scale", *args],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
    )


@pytest.mark.slow
def test_user_scale_quick_measures_every_method_and_keeps_results_md(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# Results\n\nthe small-scale tables\n")
    result = _run("--quick", "--output-dir", str(docs))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((docs / "user_scale.json").read_text())
    assert not (docs / "user_scale.partial.json").exists()  # only while a run is under way
    assert results["checkpoint"].startswith("tal-default/")
    proxy = results["proxies"][VIT_S_WIDTH_64_RGB]
    assert (proxy["img_size"], proxy["in_chans"]) == (32, 1)  # lifted from the trained format
    untrained = results["untrained"][VIT_S_WIDTH_64_RGB]
    assert set(untrained) == {"glyphs_digits", "emoji_groups"}
    for row in untrained.values():
        assert set(row) == set(METHODS)
        assert all(0.0 <= value <= 1.0 for value in row.values())
    assert set(results["ancestry"]) == {"glyphs_digits"}  # emoji_groups is unseen
    runs = results["finetuned"]["tasks"]["glyphs_digits"]["tal"]["runs"]
    assert [run["seed"] for run in runs] == [0]
    assert len(runs[0]["test_accuracy"]) == 1 and runs[0]["train_loss"][0] > 0
    assert set(results["finetuned"]["few_shot"]["methods"]) == set(METHODS)

    summary = (docs / "results.md").read_text()
    assert summary.startswith("# Results\n\nthe small-scale tables\n")
    assert summary.count(BLOCK_START) == 1 and summary.count(BLOCK_END) == 1
    page = (docs / "user_scale.md").read_text()
    for heading in ("## Targets", "## Summary", f"### {VIT_S_WIDTH_64_RGB}", "## Fine-tuned"):
        assert heading in page
    assert "glyphs_digits | tal |" in page and "emoji_groups (few-shot) | tal |" in page

    # re-rendered from the JSON: the same page, and the block replaced, not appended again
    (docs / "user_scale.md").unlink()
    rerender = _run("--report-only", "--output-dir", str(docs))
    assert rerender.returncode == 0, rerender.stderr[-3000:]
    assert (docs / "user_scale.md").read_text() == page
    assert (docs / "results.md").read_text() == summary

    # one architecture measured again: same code, checkpoint and machine, same figures
    again = _run("--remeasure", VIT_S_WIDTH_64_RGB, "--output-dir", str(docs))
    assert again.returncode == 0, again.stderr[-3000:]
    remeasured = json.loads((docs / "user_scale.json").read_text())
    (entry,) = remeasured["remeasured"]
    assert entry["architectures"] == [VIT_S_WIDTH_64_RGB]
    assert entry["largest_change_points"] == dict.fromkeys(METHODS, 0.0)
    assert remeasured["untrained"] == results["untrained"]
    assert remeasured["finetuned"] == results["finetuned"]
    assert (
        "measured again later with `tal eval --user-scale --remeasure`"
        in (docs / "user_scale.md").read_text()
    )
    refused = _run("--remeasure", "vit_huge", "--output-dir", str(docs))
    assert refused.returncode == 2 and "not in the earlier run" in refused.stderr

    # one method again, fine-tuned too: only its figures are run, and they reproduce
    tal_again = _run(
        "--remeasure",
        VIT_S_WIDTH_64_RGB,
        "--remeasure-methods",
        "tal",
        "--remeasure-finetuned",
        "--output-dir",
        str(docs),
    )
    assert tal_again.returncode == 0, tal_again.stderr[-3000:]
    assert f"{VIT_S_WIDTH_64_RGB} glyphs_digits tal:" in tal_again.stdout
    assert f"{VIT_S_WIDTH_64_RGB} glyphs_digits dct:" not in tal_again.stdout
    remeasured = json.loads((docs / "user_scale.json").read_text())
    entry = remeasured["remeasured"][-1]
    assert entry["methods"] == ["tal"] and entry["largest_change_points"] == {"tal": 0.0}
    assert entry["finetuned_largest_change_points"] == {"tal": 0.0}
    assert remeasured["finetuned"] == results["finetuned"]
    assert "fine-tune of tal run again too" in (docs / "user_scale.md").read_text()
    stranger = _run(
        "--remeasure", VIT_S_WIDTH_64_RGB, "--remeasure-methods", "ghn3", "--output-dir", str(docs)
    )
    assert stranger.returncode == 2 and "methods ['ghn3'] not in the earlier run" in stranger.stderr


def test_unknown_architecture_or_task_is_refused(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"architectures": ["vit_huge"]}))
    result = _run("--config", str(config), "--output-dir", str(tmp_path))
    assert result.returncode == 2 and "unknown architecture 'vit_huge'" in result.stderr
    config.write_text(json.dumps({"tasks": ["imagenet"], "finetune_tasks": []}))
    result = _run("--config", str(config), "--output-dir", str(tmp_path))
    assert result.returncode == 2 and "unknown image tasks ['imagenet']" in result.stderr
    missing = _run("--report-only", "--output-dir", str(tmp_path))
    assert missing.returncode == 2 and "run `tal eval --user-scale`" in missing.stderr


def _results(tal_final: float, random_final: float) -> dict:
    runs = lambda start, end: {  # noqa: E731
        "runs": [{"seed": 0, "untrained": start, "test_accuracy": [end], "train_loss": [1.0]}]
    }
    return {
        "checkpoint": "x/1",
        "seconds": 60.0,
        "config": UserScaleConfig().model_dump(mode="json"),
        "ancestry": {"fashion_mnist": 0.8},
        "proxies": {VIT_S_WIDTH_64_RGB: None},
        "untrained": {
            VIT_S_WIDTH_64_RGB: {
                "fashion_mnist": {"random": 0.1, "dct": 0.4, "weight_selection": 0.3, "tal": 0.5}
            }
        },
        "finetuned": {
            "architecture": VIT_S_WIDTH_64_RGB,
            "tasks": {
                "fashion_mnist": {
                    "random": runs(0.1, random_final),
                    "dct": runs(0.4, 0.6),
                    "weight_selection": runs(0.3, 0.6),
                    "tal": runs(0.5, tal_final),
                }
            },
        },
    }


def test_targets_follow_the_measurements():
    met = targets(_results(tal_final=0.8, random_final=0.6))
    assert all(ok for ok, _ in met.values()), met
    share = met["untrained TAL >= 60% of the ancestry, every arch"]
    assert share == (True, f"{VIT_S_WIDTH_64_RGB} 62%")
    missed = targets(_results(tal_final=0.45, random_final=0.5))
    assert missed["fine-tuned TAL never below random (every task)"][0] is False
    assert missed["fine-tuned TAL never below its untrained accuracy"][0] is False
    assert missed["fine-tuned TAL above dct"] == (False, "fashion_mnist -15.0")


def test_report_block_is_appended_once_then_replaced(tmp_path):
    write_user_scale_report(_results(0.8, 0.6), tmp_path)
    first = (tmp_path / "results.md").read_text()
    assert first.startswith("# Results\n") and kept_block(tmp_path / "results.md")
    write_user_scale_report(_results(0.7, 0.6), tmp_path)
    second = (tmp_path / "results.md").read_text()
    assert second.count(BLOCK_START) == 1 and second != first
    assert "| tal | 50.0 | 70.0 |" in second


def test_report_without_a_learned_task_says_so(tmp_path):
    """A run on tasks the ancestry never learned (a few-shot study, say) has no mean over
    learned tasks and no share of the ancestry: the report says so instead of failing after
    the measurements."""
    results = _results(tal_final=0.8, random_final=0.6)
    results["ancestry"] = {}
    results["untrained"][VIT_S_WIDTH_64_RGB] = {
        "glyphs_greek": {"random": 0.3, "dct": 0.56, "weight_selection": 0.49, "tal": 0.38}
    }
    results["finetuned"]["tasks"] = {}
    assert targets(results) == {}
    write_user_scale_report(results, tmp_path)
    report = (tmp_path / "user_scale.md").read_text()
    assert "No task the ancestry learned was measured" in report
    assert "| glyphs_greek | 30.0 | 56.0 | 49.0 | 38.0 | unseen: fitted heads |" in report


def test_the_fine_tuning_recipe_states_its_layer_decay_and_old_runs_render_without_one():
    results = _results(tal_final=0.8, random_final=0.6)
    results["config"]["finetune_layer_decay"] = 0.75
    assert "cosine, layer-wise learning-rate decay 0.75; seeds" in render(results)
    del results["config"]["finetune_layer_decay"]  # a run from before the option
    assert "then cosine; seeds" in render(results)


def test_the_report_names_an_adapter_and_old_runs_render_without_one():
    results = _results(tal_final=0.8, random_final=0.6)
    proxy = {"depth": 6, "embed_dim": 192, "num_heads": 3, "img_size": 32, "patch_size": 8}
    results["proxies"][VIT_S_WIDTH_64_RGB] = {**proxy, "in_chans": 1, "adapter_blocks": 5}
    assert "its first 5 blocks rebuild the proxy's 4 x 4 patch grid" in render(results)
    del results["proxies"][VIT_S_WIDTH_64_RGB]["adapter_blocks"]  # a run from before them
    assert "1 channel(s), then lifted (`tal.transfer.lift`).\n" in render(results)
