"""``tal eval --add``: later methods join an earlier run only when random init reproduces."""

import copy

import pytest

from tal.evaluation.config import EvalConfig
from tal.evaluation.merge import REFERENCE_TOLERANCE, add_methods, config_for_addition
from tal.evaluation.report import analyse
from tal.evaluation.schema import EvalResults

TASKS = ("fashion_mnist", "glyphs_greek")
ARCHS = ("small", "medium")
SEEDS = ("0", "1")
ACCURACY = {"random": 0.1, "ghn3": 0.2, "weight_selection": 0.3, "dct": 0.4, "tal": 0.5}


def _run(methods: tuple[str, ...], offset: float = 0.0) -> dict:
    """A results dict as ``tal eval`` writes it, measuring ``methods`` (random always): each
    method's accuracies differ, random's shifted by ``offset``."""
    measured = ("random", *methods)

    def accuracy(method: str) -> float:
        return ACCURACY[method] + (offset if method == "random" else 0.0)

    config = EvalConfig(methods=methods, test_examples=64, seeds=(0, 1)).model_dump(mode="json")
    results = {
        "config": config,
        "architectures": {a: {"depth": 2, "embed_dim": 48, "num_params": 1} for a in ARCHS},
        "unseen_task": "glyphs_greek",
        "ancestry_val_accuracy": {"val_acc/fashion_mnist": 0.8},
        "environment": {"cpu_model": "test CPU", "torch_threads": 1},
        "training_seconds": {m: 0.0 for m in measured},
        "prediction_ms": {m: {a: 1.0 for a in ARCHS} for m in methods if m == "tal"},
        "untrained_accuracy": {
            m: {t: {a: accuracy(m) for a in ARCHS} for t in TASKS} for m in measured
        },
        "unseen_predicted_head_accuracy": {m: {a: accuracy(m) for a in ARCHS} for m in measured},
        "finetune": {
            "architecture": "medium",
            "recipe": {"lr": 5e-4},
            "curves": {
                m: {
                    t: {
                        s: {
                            "train_loss": [1.0, 0.5],
                            "test_accuracy": [accuracy(m), accuracy(m) + 0.1],
                        }
                        for s in SEEDS
                    }
                    for t in TASKS
                }
                for m in measured
            },
        },
    }
    return EvalResults.model_validate(results).model_dump(exclude_unset=True)


def test_added_methods_join_in_the_evaluations_order_and_the_addition_is_recorded():
    earlier = _run(("ghn3", "tal"))
    added = _run(("weight_selection", "dct"))
    merged = add_methods(earlier, added)
    order = ["random", "weight_selection", "dct", "ghn3", "tal"]
    assert merged["config"]["methods"] == order[1:]
    assert list(merged["untrained_accuracy"]) == order
    assert list(merged["finetune"]["curves"]) == order
    assert merged["untrained_accuracy"]["dct"] == added["untrained_accuracy"]["dct"]
    assert merged["untrained_accuracy"]["tal"] == earlier["untrained_accuracy"]["tal"]
    assert merged["untrained_accuracy"]["random"] == earlier["untrained_accuracy"]["random"]
    assert merged["prediction_ms"] == earlier["prediction_ms"]  # nothing predicted by transfers
    assert merged["additions"] == [
        {
            "methods": ["weight_selection", "dct"],
            "environment": added["environment"],
            "reference_difference": 0.0,
        }
    ]
    assert "derived" not in merged and earlier["config"]["methods"] == ["ghn3", "tal"]
    EvalResults.model_validate(merged)  # reads back as results
    verdicts = analyse(merged)["verdicts"]  # the report now weighs TAL against the transfers
    assert verdicts["untrained TAL above dct"] == (True, "+10.0 points")
    above, detail = verdicts["fine-tuned TAL above weight_selection"]
    assert above and detail.startswith("+20.0 points (mean over tasks; paired t-test p = ")


def test_a_method_added_again_replaces_its_earlier_figures():
    earlier = add_methods(_run(("tal",)), _run(("dct",)))
    again = _run(("weight_selection", "dct"))
    merged = add_methods(earlier, again)
    assert merged["untrained_accuracy"]["dct"] == again["untrained_accuracy"]["dct"]
    assert [a["methods"] for a in merged["additions"]] == [["dct"], ["weight_selection", "dct"]]


def test_a_method_added_again_keeps_none_of_its_earlier_figures():
    earlier = _run(("ghn3", "tal"))
    # the same method names measured again by a run that times no prediction (as transfers)
    again = _run(("tal",))
    again["prediction_ms"] = {}
    merged = add_methods(earlier, again)
    assert "tal" not in merged["prediction_ms"]
    assert merged["training_seconds"]["tal"] == again["training_seconds"]["tal"]
    assert merged["untrained_accuracy"]["ghn3"] == earlier["untrained_accuracy"]["ghn3"]
    EvalResults.model_validate(merged)


def test_random_init_that_does_not_reproduce_refuses_the_merge():
    earlier = _run(("tal",))
    within = add_methods(earlier, _run(("dct",), offset=REFERENCE_TOLERANCE / 2))
    assert within["additions"][0]["reference_difference"] == pytest.approx(REFERENCE_TOLERANCE / 2)
    drifted = _run(("dct",))
    drifted["finetune"]["curves"]["random"]["glyphs_greek"]["1"]["test_accuracy"][1] += 0.02
    with pytest.raises(ValueError, match=r"2\.00 points at finetune\.glyphs_greek\.1\[1\]"):
        add_methods(earlier, drifted)


def test_a_different_budget_or_ancestry_refuses_the_merge():
    earlier = _run(("tal",))
    other_budget = _run(("dct",))
    other_budget["config"]["epochs"] = 7
    with pytest.raises(ValueError, match=r"configs differ in \['epochs'\]"):
        add_methods(earlier, other_budget)
    other_ancestry = _run(("dct",))
    other_ancestry["ancestry_val_accuracy"] = {"val_acc/fashion_mnist": 0.5}
    with pytest.raises(ValueError, match="--ancestry-run"):
        add_methods(earlier, other_ancestry)
    missing_seed = _run(("dct",))
    del missing_seed["finetune"]["curves"]["random"]["fashion_mnist"]["1"]
    with pytest.raises(ValueError, match=r"finetune\.fashion_mnist: the stored run has"):
        add_methods(earlier, missing_seed)


def test_the_added_run_keeps_the_earlier_budget_and_names_what_to_fix():
    earlier = _run(("tal",))
    config = config_for_addition(earlier, ("dct",), {"run_dir": None, "ancestry_run": "elsewhere"})
    assert config.methods == ("dct",) and str(config.ancestry_run) == "elsewhere"
    assert config.test_examples == 64 and config.seeds == (0, 1)
    with pytest.raises(ValueError, match="needs --methods"):
        config_for_addition(earlier, (), {})
    with pytest.raises(ValueError, match="reference every run measures"):
        config_for_addition(earlier, ("random", "dct"), {})
    broken = copy.deepcopy(earlier)
    broken["config"]["methods"] = ["tal"]
    with pytest.raises(ValueError, match="unknown methods"):
        config_for_addition(broken, ("not_a_method",), {})
