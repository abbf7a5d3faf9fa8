"""The committed ``tal eval`` configs load, and each longer one differs from the one before only
in its stage-2 budget (and where it keeps its training state and, for the 4800-step ablation,
its report), so their results compare budgets."""

from pathlib import Path

import pytest

from tal.evaluation.config import EvalConfig
from tal.training.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BUDGET_FIELDS = {"stage2_steps", "check_every", "run_dir"}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("eval-*.json")), ids=lambda p: p.name)
def test_every_eval_config_loads(path):
    config = load_config(EvalConfig, path, {})
    assert config.stage1_steps > 0 and config.stage2_steps > 0 and config.seeds


@pytest.mark.parametrize(
    ("shorter", "longer", "also_differs"),
    [
        ("eval-cpu-small.json", "eval-cpu-long.json", set()),
        ("eval-cpu-long.json", "eval-cpu-4800.json", {"output_dir"}),  # keeps docs/ as it is
    ],
)
def test_each_longer_config_only_lengthens_stage2(shorter, longer, also_differs):
    short = load_config(EvalConfig, CONFIGS / shorter, {}).model_dump()
    long = load_config(EvalConfig, CONFIGS / longer, {}).model_dump()
    differs = {k for k in short if short[k] != long[k]}
    assert {"stage2_steps", "run_dir"} | also_differs <= differs <= BUDGET_FIELDS | also_differs
    assert long["stage2_steps"] == 2 * short["stage2_steps"]
    assert long["run_dir"] != short["run_dir"]  # the two runs' training states stay apart
