"""Tile: a target whose widths are whole multiples of its proxy's computes the proxy exactly."""

from __future__ import annotations

import pytest
import torch

from tal.arch.libraries import PRESETS
from tal.arch.parse import parse_arch
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.transfer.layout import role_of, target_initial_state
from tal.transfer.lift import TrainedRange, lift
from tal.transfer.tile import noise_seed, tile_factors, tiles

CPU_RANGE = TrainedRange.of_library(PRESETS["cpu"])
PROXY = ViTSpec(
    depth=2, embed_dim=64, num_heads=2, patch_size=8, img_size=32, in_chans=1, num_classes=5
)
WIDE = PROXY.model_copy(update={"depth": 4, "embed_dim": 192, "num_heads": 6})
"""Three times the proxy's width and heads (head width 32 on both), two identity blocks more."""


def _perturbed(spec: ViTSpec, seed: int) -> dict[str, torch.Tensor]:
    """A timm state with every tensor random (norm gains and biases too, which a tiled
    LayerNorm must carry exactly)."""
    generator = torch.Generator().manual_seed(seed)
    state = target_initial_state(spec, seed)
    return {
        name: tensor + 0.2 * torch.randn(tensor.shape, generator=generator)
        for name, tensor in state.items()
    }


@pytest.mark.parametrize(
    "target",
    [
        "vit_small_patch16_224",  # width 384 = 2 x 192, heads of 64
        "vit_base_patch16_224",  # 768 = 4 x 192
        "vit_tiny_patch16_224",  # the proxy's own width: tiling is the identity
    ],
)
def test_user_shapes_tile_from_the_cpu_proxy(target: str) -> None:
    spec = parse_arch(target)
    assert tiles(CPU_RANGE.proxy(spec), spec)


def test_other_widths_and_head_widths_do_not_tile() -> None:
    assert not tiles(PROXY, PROXY.model_copy(update={"embed_dim": 96, "num_heads": 3}))
    assert not tiles(PROXY, WIDE.model_copy(update={"num_heads": 3}))  # heads of 64, not 32
    assert not tiles(PROXY, WIDE.model_copy(update={"mlp_ratio": 3.5}))  # hidden 672 of 256


def test_a_tiled_lift_computes_the_proxys_logits() -> None:
    proxy_state = _perturbed(PROXY, seed=1)
    lifted = lift(PROXY, proxy_state, WIDE, target_initial_state(WIDE, seed=2))
    proxy_model, wide_model = build_model(PROXY).eval(), build_model(WIDE).eval()
    proxy_model.load_state_dict(proxy_state, strict=True)
    wide_model.load_state_dict(lifted, strict=True)
    images = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = proxy_model(images), wide_model(images)
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=1e-4 * scale, rtol=1e-4)


def test_symmetry_breaking_cancels_on_copies_and_parts_them() -> None:
    """fc1 reads the stream: on a tiled input it gives the tiled output, yet the copies of an
    input are read by different columns (so training moves them apart)."""
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(256, 64, generator=generator)
    role = role_of("blocks.0.mlp.fc1.weight")
    left, right = tile_factors(matrix, torch.eye(64), (768, 192), role, seed=7)
    tiled = left @ right
    x = torch.randn(64, generator=generator)
    torch.testing.assert_close(tiled @ x.repeat(3), (matrix @ x).repeat(3), atol=1e-4, rtol=1e-4)
    copies = tiled.reshape(768, 3, 64)
    assert not torch.allclose(copies[:, 0], copies[:, 1], atol=1e-3)
    torch.testing.assert_close(copies.sum(dim=1), matrix.repeat(3, 1), atol=1e-4, rtol=1e-4)
    again = tile_factors(matrix, torch.eye(64), (768, 192), role, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(again, (left, right), strict=True))
    assert noise_seed("blocks.0.mlp.fc1.weight") != noise_seed("blocks.1.mlp.fc1.weight")


def test_a_matrix_is_refused_where_the_width_is_no_whole_multiple() -> None:
    role = role_of("blocks.0.mlp.fc1.weight")
    with pytest.raises(ValueError, match="not a whole multiple"):
        tile_factors(torch.ones(256, 64), torch.eye(64), (256, 96), role, seed=0)
