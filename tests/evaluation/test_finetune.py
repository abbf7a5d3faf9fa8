"""The fine-tuning recipe's learning-rate schedule (linear warm-up, then cosine) and the
evaluation config's check that the warm-up leaves epochs to anneal."""

import itertools
import math

import pytest
import torch

from tal.evaluation.config import EvalConfig
from tal.evaluation.finetune import warmup_cosine_schedule

BASE_LR = 1.0


def learning_rates(total_steps: int, warmup_steps: int) -> list[float]:
    """The learning rate each of ``total_steps`` optimizer steps runs at."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=BASE_LR)
    schedule = warmup_cosine_schedule(optimizer, total_steps, warmup_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_warmup_rises_linearly_to_the_base_rate_then_anneals():
    rates = learning_rates(total_steps=12, warmup_steps=3)
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    annealing = rates[3:]
    assert all(later < earlier for earlier, later in itertools.pairwise(annealing))
    # cosine over the 9 steps after the warm-up: step k of 9 at (1 + cos(pi k / 9)) / 2
    expected = [(1 + math.cos(math.pi * k / 9)) / 2 for k in range(9)]
    assert annealing == pytest.approx(expected)


def test_no_warmup_is_the_plain_cosine_schedule():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=BASE_LR)
    plain = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    reference = []
    for _ in range(10):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        plain.step()
    assert learning_rates(total_steps=10, warmup_steps=0) == pytest.approx(reference)


@pytest.mark.parametrize("warmup_steps", [-1, 10, 11])
def test_a_warmup_that_leaves_nothing_to_anneal_is_refused(warmup_steps):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    with pytest.raises(ValueError, match="warm-up must leave steps"):
        warmup_cosine_schedule(optimizer, total_steps=10, warmup_steps=warmup_steps)


def test_eval_config_warms_up_one_epoch_and_refuses_a_warmup_as_long_as_training():
    assert EvalConfig().recipe.warmup_epochs == 1
    assert EvalConfig(epochs=4, recipe_warmup_epochs=0).recipe.warmup_epochs == 0
    with pytest.raises(ValueError, match=r"recipe_warmup_epochs \(2\) must be below epochs \(2\)"):
        EvalConfig(epochs=2, recipe_warmup_epochs=2)
