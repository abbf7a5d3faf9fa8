"""Decoder scaling, rank, task conditioning, gradients and the baseline switches."""

import json
import math
from dataclasses import replace

import pytest
import torch

from tal.arch.functional import forward_with
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.checkpoints.learngene import Learngene
from tal.hypernet import HypernetConfig, TALHypernet, preset
from tal.hypernet.decoder import RelativeBasis

SPEC = ViTSpec(depth=2, embed_dim=256, num_heads=4, img_size=32, patch_size=4, num_classes=10)


def test_head_counts_are_told_apart_only_with_head_features():
    more_heads = SPEC.model_copy(update={"num_heads": 16})
    blind = Learngene.fresh()
    first, second = blind.predict(SPEC), blind.predict(more_heads)
    assert all(torch.equal(first[name], second[name]) for name in first)
    stored = json.loads(blind.hypernet.config.to_json())
    del stored["encoder"]["head_features"]  # as every checkpoint before the field records it
    assert HypernetConfig.from_dict(stored) == blind.hypernet.config
    reading = Learngene(TALHypernet(preset("tal", head_features=True)).eval())
    first, second = reading.predict(SPEC), reading.predict(more_heads)
    assert any(not torch.equal(first[name], second[name]) for name in first)


@torch.no_grad()
def test_weights_have_the_fan_in_variance_on_the_span_they_read(fresh_learngene):
    state = fresh_learngene.predict(SPEC)
    rank = fresh_learngene.hypernet.config.decoder.basis_size
    for name, rows, fan_in, gain in [
        ("blocks.0.attn.qkv.weight", 768, 256, 1.0),
        ("blocks.1.mlp.fc1.weight", 1024, 256, 2.0),
        ("blocks.1.mlp.fc2.weight", 256, 1024, 1 / 4),  # residual gain
        ("patch_embed.proj.weight", 256, 48, 1.0),
    ]:
        in_span = min(rank, rows, fan_in) / fan_in  # span scaling: rank-k part, k = 64
        expected = math.sqrt(gain / fan_in * in_span)
        assert state[name].std().item() == pytest.approx(expected, rel=0.05)
    assert state["pos_embed"].std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(state["norm.weight"], torch.ones(256))  # zero-initialised heads
    assert torch.equal(state["blocks.0.attn.qkv.bias"], torch.zeros(768))


@torch.no_grad()
def test_relative_basis_samples_the_same_profiles_at_every_width():
    basis = RelativeBasis(64)
    narrow, wide = basis.features(96, torch.float64), basis.features(192, torch.float64)
    # rows 2i and 2i + 1 of width 2n straddle row i of width n: their mean is that row, damped
    # by cos(pi f / 4n) for frequency f (cos(a - e) + cos(a + e) = 2 cos(a) cos(e))
    damping = torch.cos(basis.frequency / (4 * 96))
    assert torch.allclose((wide[0::2] + wide[1::2]) / 2, narrow * damping, atol=1e-12)
    gram = basis.gram(192, torch.float64)  # orthogonal columns once n > d
    assert torch.allclose(gram, torch.diag(torch.diag(gram)), atol=1e-9)
    assert torch.allclose(narrow.sum(0), torch.zeros(64, dtype=torch.float64), atol=1e-9)
    distances = torch.cdist(basis.features(768, torch.float64), basis.features(768, torch.float64))
    assert distances.fill_diagonal_(1.0).min() > 1e-3  # no two rows equal at ViT-B width


@torch.no_grad()
def test_ours_is_untiled_while_ghn3_tiles_and_logah_is_low_rank():
    ours = Learngene.fresh().predict(SPEC)["blocks.0.mlp.fc1.weight"]  # (1024, 256)
    assert torch.cdist(ours, ours).fill_diagonal_(1.0).min() > 0  # no repeated rows
    assert not torch.allclose(ours[:64], ours[64:128])
    tiled = Learngene.fresh(preset("ghn3")).predict(SPEC)["blocks.0.mlp.fc1.weight"]
    assert torch.equal(tiled[:64], tiled[64:128])  # GHN-3's repeated blocks
    assert torch.linalg.matrix_rank(tiled).item() <= 64
    low_rank = Learngene.fresh(preset("logah")).predict(SPEC)["blocks.0.mlp.fc1.weight"]
    assert torch.linalg.matrix_rank(low_rank).item() <= 16


def test_task_conditioning_is_zero_initialised_then_effective():
    hypernet = TALHypernet().eval()
    task = torch.randn(hypernet.config.encoder.task_dim)
    with torch.no_grad():
        plain = hypernet(SPEC)["head.weight"]
        assert torch.equal(hypernet(SPEC, task)["head.weight"], plain)
        for layer in hypernet.encoder.layers:
            torch.nn.init.normal_(layer.modulate1.scale.weight, std=0.1)
        assert not torch.allclose(hypernet(SPEC, task)["head.weight"], plain)
        with pytest.raises(ValueError, match="task embedding must have shape"):
            hypernet(SPEC, torch.randn(3))


def test_gradients_reach_the_hypernetwork_through_a_real_model():
    hypernet = TALHypernet()
    model = build_model(SPEC, "timm")
    task = torch.randn(hypernet.config.encoder.task_dim)
    params = hypernet(SPEC, task)
    logits = forward_with(model, params, torch.randn(4, 3, 32, 32))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for module in (
        hypernet.encoder.op_embedding,
        hypernet.decoder.core_head,
        hypernet.decoder.scalar_head,
        hypernet.decoder.vector_head,
    ):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    assert hypernet.encoder.layers[0].modulate1.scale.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


ACTIVATION_SPEC = ViTSpec(
    depth=6, embed_dim=192, num_heads=3, img_size=32, patch_size=4, num_classes=10
)


def _block_stds(state: dict[str, torch.Tensor] | None) -> list[float]:
    """Output std of every block and of the logits for 8 fixed random images; timm's own
    init when ``state`` is None."""
    model = build_model(ACTIVATION_SPEC, "timm").eval()
    if state is not None:
        model.load_state_dict(state)
    torch.manual_seed(0)
    images = torch.randn(8, 3, 32, 32)
    stds = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: stds.append(o.std().item())) for b in model.blocks
    ]
    logits = model(images)
    for hook in hooks:
        hook.remove()
    return [*stds, logits.std().item()]


@torch.no_grad()
def test_activations_stay_within_an_order_of_magnitude_of_timm_init(fresh_learngene):
    reference = _block_stds(None)
    ours = _block_stds(fresh_learngene.predict(ACTIVATION_SPEC))
    for theirs, mine in zip(reference, ours, strict=True):
        assert 0.1 < mine / theirs < 10, (reference, ours)


@torch.no_grad()
def test_without_span_scaling_a_fresh_low_rank_prediction_grows_block_after_block():
    config = preset("tal")
    unscaled = replace(config, decoder=replace(config.decoder, span_scaling=False))
    reference = _block_stds(None)
    scaled = _block_stds(Learngene.fresh(config).predict(ACTIVATION_SPEC))
    grown = _block_stds(Learngene.fresh(unscaled).predict(ACTIVATION_SPEC))
    last_block = len(reference) - 2
    assert grown[last_block] / reference[last_block] > 10  # the failure span scaling removes
    assert scaled[last_block] / reference[last_block] < 5
