"""The fine-tuning recipe: its learning-rate schedule (linear warm-up, then cosine), layer-wise
learning-rate decay, linear probing first, and the evaluation config's check that the warm-up
leaves epochs to anneal."""

import itertools
import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from tal.evaluation.config import EvalConfig
from tal.evaluation.finetune import (
    FinetuneRecipe,
    finetune,
    layer_decayed_groups,
    warmup_cosine_schedule,
)
from tal.tasks import TaskData

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


DEPTH = 3
CLASSES = 3


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=8,
        patch_size=4,
        in_chans=1,
        embed_dim=16,
        depth=DEPTH,
        num_heads=2,
        num_classes=CLASSES,
    )


def tiny_task(examples: int) -> TaskData:
    generator = torch.Generator().manual_seed(0)
    return TaskData(
        images=torch.randn(examples, 1, 8, 8, generator=generator),
        labels=torch.randint(0, CLASSES, (examples,), generator=generator),
        num_classes=CLASSES,
    )


def test_layer_decay_gives_the_head_the_base_rate_and_each_layer_below_a_factor_less():
    model = tiny_vit()
    groups = layer_decayed_groups(model, lr=1.0, decay=0.5)
    rate_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    assert len(rate_of) == sum(1 for _ in model.parameters())  # each parameter in one group
    top = DEPTH + 1
    assert rate_of[id(model.head.weight)] == rate_of[id(model.norm.weight)] == 1.0
    for index, block in enumerate(model.blocks):
        assert rate_of[id(block.attn.qkv.weight)] == 0.5 ** (top - (index + 1))
    assert rate_of[id(model.patch_embed.proj.weight)] == rate_of[id(model.pos_embed)] == 0.5**top


def test_no_layer_decay_is_one_group_at_the_base_rate():
    model = tiny_vit()
    (group,) = layer_decayed_groups(model, lr=3e-4, decay=1.0)
    assert group["lr"] == 3e-4
    assert len(group["params"]) == sum(1 for _ in model.parameters())


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5])
def test_a_layer_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match="layer_decay must be in"):
        layer_decayed_groups(tiny_vit(), lr=1.0, decay=decay)


def test_head_only_epochs_leave_the_backbone_as_it_was_then_train_everything():
    model = tiny_vit()
    weight = model.blocks[0].attn.qkv.weight
    initial = weight.detach().clone()
    seen: list[tuple[bool, bool]] = []  # per training forward: (trainable, unchanged)

    def record(_module, _inputs):
        if model.training:
            seen.append((weight.requires_grad, torch.equal(weight, initial)))

    model.blocks[0].register_forward_pre_hook(record)
    train, steps_per_epoch = tiny_task(examples=32), 4
    recipe = FinetuneRecipe(epochs=2, batch_size=8, lr=1e-2, head_only_epochs=1)
    curve = finetune(model, train, tiny_task(examples=16), recipe, seed=0)

    assert len(curve.test_accuracy) == 2
    assert seen[:steps_per_epoch] == [(False, True)] * steps_per_epoch
    assert seen[steps_per_epoch] == (True, True)  # the first step after probing
    assert not torch.equal(weight, initial)
    assert all(p.requires_grad for p in model.parameters())


def test_head_only_epochs_must_leave_epochs_to_fine_tune():
    recipe = FinetuneRecipe(epochs=2, batch_size=8, head_only_epochs=2)
    with pytest.raises(ValueError, match="head_only_epochs must leave epochs"):
        finetune(tiny_vit(), tiny_task(8), tiny_task(8), recipe, seed=0)
