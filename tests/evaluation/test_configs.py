"""The committed ``tal eval`` configs load, and the long one differs from the small one only in
its stage-2 budget (and where it keeps its training state), so their results compare budgets."""

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


def test_the_long_config_only_lengthens_stage2():
    small = load_config(EvalConfig, CONFIGS / "eval-cpu-small.json", {}).model_dump()
    long = load_config(EvalConfig, CONFIGS / "eval-cpu-long.json", {}).model_dump()
    assert {k for k in small if small[k] != long[k]} == BUDGET_FIELDS
    assert long["stage2_steps"] == 2 * small["stage2_steps"]
    assert long["run_dir"] != small["run_dir"]  # the two runs' training states stay apart
