"""What each method's hypernetwork learns from in ``tal eval``: the baselines train on labels
only in both stages; TAL and TAL+ distil the ancestry's features in stage 1 and what the config
names in stage 2; and which methods have their head calibrated before fine-tuning."""

import pytest

from tal.evaluation.config import RANDOM_INIT, TRANSFERS, EvalConfig
from tal.evaluation.runner import RECIPES
from tal.training.config import HypernetTrainConfig
from tal.training.recipe import CPU_RECIPE


@pytest.mark.parametrize("method", ["ghn3", "logah"])
@pytest.mark.parametrize("distillation", ["features", "logits"])
def test_baselines_never_distil(method, distillation):
    config = HypernetTrainConfig(**RECIPES[method].loss_fields(distillation))
    assert config.distill_weight == 0


@pytest.mark.parametrize("method", ["tal", "tal+"])
def test_tal_distils_features_then_the_configured_target(method):
    recipe = RECIPES[method]
    stage1 = HypernetTrainConfig(stage=1, **recipe.loss_fields(CPU_RECIPE.stage1_distillation))
    assert (stage1.distill_target, stage1.ce_weight, stage1.distill_weight) == (
        "features",
        0.8,
        0.2,
    )
    default = EvalConfig()
    assert default.stage2_distillation == CPU_RECIPE.stage2_distillation == "logits"
    stage2 = HypernetTrainConfig(stage=2, **recipe.loss_fields(default.stage2_distillation))
    assert (stage2.distill_target, stage2.ce_weight, stage2.distill_weight) == ("logits", 0.5, 0.5)
    assert HypernetTrainConfig(stage=2) == stage2  # `tal train stage2` runs the recipe too
    paper = EvalConfig(stage2_distillation="features")
    stage2 = HypernetTrainConfig(stage=2, **recipe.loss_fields(paper.stage2_distillation))
    assert stage2.distill_target == "features"


def test_an_unknown_stage2_distillation_is_refused():
    with pytest.raises(ValueError, match="stage2_distillation"):
        EvalConfig(stage2_distillation="labels")


@pytest.mark.parametrize("calibrate", [True, False])
def test_only_predicted_heads_are_calibrated_before_fine_tuning(calibrate):
    config = EvalConfig(calibrate_head=calibrate)
    assert config.recipe_for(RANDOM_INIT).calibrate_head is False  # timm's default head, as it is
    for method in RECIPES:  # every learned method
        assert config.recipe_for(method) == config.recipe
        assert config.recipe_for(method).calibrate_head is calibrate
    assert config.recipe_for(RANDOM_INIT).epochs == config.recipe.epochs


def test_an_unknown_method_is_refused_and_transfers_need_no_training():
    with pytest.raises(ValueError, match="unknown methods"):
        EvalConfig(methods=("random", "ws"))
    assert set(TRANSFERS) <= set(EvalConfig().methods) and not set(TRANSFERS) & set(RECIPES)
