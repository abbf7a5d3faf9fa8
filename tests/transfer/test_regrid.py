"""Regrid: a target with a finer patch grid than its proxy rebuilds the proxy's tokens first."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tal.arch.libraries import PRESETS
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.checkpoints.learngene import Learngene
from tal.predict import ADAPTER_METADATA_KEY, predict_blob
from tal.transfer.layout import target_initial_state
from tal.transfer.lift import TrainedRange, lift, lifted_matrices
from tal.transfer.regrid import axis_map, plan_regrid
from tal.transfer.tile import tiles

CPU_RANGE = TrainedRange.of_library(PRESETS["cpu"])
VIT_SMALL_224 = ViTSpec(depth=12, embed_dim=384, num_heads=6, num_classes=10)
FINE_GRID_64 = ViTSpec(
    depth=12, embed_dim=384, num_heads=6, patch_size=8, img_size=64, in_chans=3, num_classes=10
)
"""An 8 x 8 grid over the ``cpu`` proxy's 4 x 4: a regridded shape that is cheap to run."""


def test_every_proxy_pixel_is_shared_out_once_over_the_sub_cells() -> None:
    axis = axis_map(grid=14, subcells=2, proxy_grid=4, proxy_patch=8)
    assert axis.slots == 4  # 224 px: a 56-px proxy patch meets at most 4 tokens of 16 px
    assert axis.patch_of == (0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3)
    per_pixel = torch.zeros(4, 8, dtype=torch.float64)
    for token, members in enumerate(axis.memberships):
        for patch, slot in members:
            assert slot < axis.slots
            per_pixel[patch] += axis.weights[axis.phase[token], slot].sum(dim=0)
    torch.testing.assert_close(per_pixel, torch.ones_like(per_pixel))
    # the token straddling two proxy patches fills the last slot of one, the first of the next
    assert axis.memberships[3] == ((0, 3), (1, 0))


def test_only_finer_grids_with_room_get_an_adapter() -> None:
    proxy = CPU_RANGE.proxy(VIT_SMALL_224)
    plan = plan_regrid(proxy, VIT_SMALL_224)
    assert plan is not None and plan.subcells == 2 and plan.depth == 5
    assert plan_regrid(proxy, proxy) is None  # same grid: the plain lift
    same_grid = VIT_SMALL_224.model_copy(update={"img_size": 64})
    assert plan_regrid(CPU_RANGE.proxy(same_grid), same_grid) is None
    tiny = VIT_SMALL_224.model_copy(update={"embed_dim": 192, "num_heads": 3})
    assert plan_regrid(CPU_RANGE.proxy(tiny), tiny) is None  # too narrow for its codes
    pooled = VIT_SMALL_224.model_copy(update={"class_token": False})
    assert plan_regrid(CPU_RANGE.proxy(pooled), pooled) is None
    shallow = VIT_SMALL_224.model_copy(update={"depth": 10})
    assert plan_regrid(CPU_RANGE.proxy(shallow), shallow) is None  # 5 + the proxy's 6 blocks


@pytest.mark.parametrize("heads", [6, 12])  # heads of 64 (DCT width map); of 32 (tiled)
def test_the_adapted_target_computes_the_lifted_proxy_on_the_averaged_image(heads: int) -> None:
    """A 32-px target with 4-px patches (an 8 x 8 grid) lifted from a proxy with a 2 x 2 grid
    equals the same lift at the proxy's own grid fed the image averaged down to 8 px: each
    proxy patch is 4 x 4 target tokens (equal counts, so attention is unchanged) and a 1-px
    sub-cell is exact. With heads as wide as the proxy's the lift tiles the widths
    (``tal.transfer.tile``) and the adapter writes the tiled stream."""
    proxy = ViTSpec(
        depth=1, embed_dim=64, num_heads=2, patch_size=4, img_size=8, in_chans=1, num_classes=3
    )
    fine = ViTSpec(
        depth=7,
        embed_dim=384,
        num_heads=heads,
        patch_size=4,
        img_size=32,
        in_chans=3,
        num_classes=3,
    )
    coarse = fine.model_copy(update={"img_size": 8})
    plan = plan_regrid(proxy, fine)
    assert plan is not None and plan.subcells == 4 and plan.depth + proxy.depth <= fine.depth
    assert tiles(proxy, fine) is (heads == 12)
    proxy_state = target_initial_state(proxy, seed=1)
    fine_model, coarse_model = build_model(fine).eval(), build_model(coarse).eval()
    fine_model.load_state_dict(lift(proxy, proxy_state, fine, target_initial_state(fine, 2)))
    coarse_model.load_state_dict(lift(proxy, proxy_state, coarse, target_initial_state(coarse, 2)))
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = coarse_model(F.avg_pool2d(images, 4))
        actual = fine_model(images)
    torch.testing.assert_close(actual, expected, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(expected, fine_model(images.flip(-1)), atol=1e-2)


@pytest.fixture(scope="module")
def ranged_learngene() -> Learngene:
    learngene = Learngene.fresh()
    learngene.manifest = {"library": {"name": "cpu"}}
    return learngene


def test_served_regrid_skips_the_matrices_it_writes(ranged_learngene: Learngene) -> None:
    proxy = ranged_learngene.proxy(FINE_GRID_64)
    plan = plan_regrid(proxy, FINE_GRID_64)
    assert plan is not None
    skipped = lifted_matrices(proxy, FINE_GRID_64)
    assert plan.written() <= skipped
    assert f"blocks.{plan.depth}.attn.qkv.weight" in skipped  # the proxy's first block
    inert = f"blocks.{plan.depth - 1}.mlp.fc1.weight"  # the last block's MLP writes nothing
    assert inert not in skipped  # so its input projection keeps the prediction


def test_regridded_hf_prediction_loads_strictly_and_matches_timm(
    ranged_learngene: Learngene,
) -> None:
    state = ranged_learngene.predict(FINE_GRID_64, None, format="hf")
    hf_model = build_model(FINE_GRID_64, "hf").eval()
    hf_model.load_state_dict(state, strict=True)
    timm_model = build_model(FINE_GRID_64).eval()
    timm_model.load_state_dict(ranged_learngene.predict(FINE_GRID_64, None), strict=True)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            hf_model(pixel_values=images).logits, timm_model(images), atol=1e-3, rtol=1e-3
        )


def test_a_blob_names_its_adapter_blocks(ranged_learngene: Learngene) -> None:
    blob = predict_blob(FINE_GRID_64, learngene=ranged_learngene).blob
    plan = plan_regrid(ranged_learngene.proxy(FINE_GRID_64), FINE_GRID_64)
    assert blob.layout.metadata[ADAPTER_METADATA_KEY] == str(plan.depth)
    same_grid = FINE_GRID_64.model_copy(update={"patch_size": 16})  # the proxy's 4 x 4
    lifted = predict_blob(same_grid, learngene=ranged_learngene).blob
    assert ADAPTER_METADATA_KEY not in lifted.layout.metadata
