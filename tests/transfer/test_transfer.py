"""The training-free transfers (weight selection, DCT) on tiny real timm ViTs."""

from __future__ import annotations

import math

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from tal.arch.specs import GPT2Spec, ViTSpec
from tal.arch.target_models import build_model
from tal.evaluation.finetune import accuracy
from tal.tasks import load_task
from tal.transfer import TRANSFER_METHODS, dct_transfer, weight_selection
from tal.transfer.dct_transfer import (
    BAND_FREQUENCIES,
    band_limited_resize,
    dct_matrix,
    dct_resize,
    dct_width,
    dct_width_factors,
)
from tal.transfer.layout import IDENTITY_BLOCK_OUTPUTS, role_of, target_initial_state
from tal.transfer.weight_selection import evenly_spaced

SOURCE = ViTSpec(
    depth=2,
    embed_dim=48,
    num_heads=3,
    mlp_ratio=2.0,
    patch_size=8,
    img_size=32,
    in_chans=1,
    num_classes=10,
)
TARGETS = {
    "identical": SOURCE,
    "narrower": SOURCE.model_copy(update={"embed_dim": 32, "num_heads": 2}),
    "wider": SOURCE.model_copy(update={"embed_dim": 72, "num_heads": 6, "mlp_ratio": 4.0}),
    "deeper": SOURCE.model_copy(update={"depth": 4}),
    "shallower": SOURCE.model_copy(update={"depth": 1}),
    "patch_16_at_64_rgb": SOURCE.model_copy(
        update={"patch_size": 16, "img_size": 64, "in_chans": 3}
    ),
    "patch_4": SOURCE.model_copy(update={"patch_size": 4}),
    "image_48": SOURCE.model_copy(update={"img_size": 48}),
    "avg_pool_no_qkv_bias": SOURCE.model_copy(update={"class_token": False, "qkv_bias": False}),
    "larger_5_classes": ViTSpec(
        depth=3,
        embed_dim=64,
        num_heads=4,
        patch_size=16,
        img_size=64,
        in_chans=3,
        num_classes=5,
    ),
    "no_head": SOURCE.model_copy(update={"num_classes": 0}),
}
ALL_ROWS = (0, SOURCE.num_classes)
DCT_TOLERANCE = 1e-5
CHANCE_MARGIN = 2.0
"""An untrained transfer must reach this multiple of chance accuracy."""
ANCESTRY_STEPS = 150
ANCESTRY_BATCH = 64
ANCESTRY_LR = 3e-3


def _random_source(seed: int = 1) -> dict[str, torch.Tensor]:
    """A source whose tensors are all non-trivial (random, not timm's zeros and ones)."""
    generator = torch.Generator().manual_seed(seed)
    state = target_initial_state(SOURCE, seed)
    return {k: torch.randn(v.shape, generator=generator) * 0.1 for k, v in state.items()}


def _head_rows(target: ViTSpec) -> tuple[int, int] | None:
    return (0, target.num_classes) if target.num_classes else None


@pytest.mark.parametrize("method", list(TRANSFER_METHODS))
@pytest.mark.parametrize("target_name", list(TARGETS))
def test_transfer_loads_strictly_into_timm(method: str, target_name: str) -> None:
    target = TARGETS[target_name]
    state = TRANSFER_METHODS[method](SOURCE, _random_source(), target, 0, _head_rows(target))
    model = build_model(target, "timm")
    model.load_state_dict(state, strict=True)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in state.items()} == expected
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())
    images = torch.randn(2, target.in_chans, target.img_size, target.img_size)
    with torch.no_grad():
        out = model(images)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", list(TRANSFER_METHODS))
def test_same_seed_same_bytes(method: str) -> None:
    target = TARGETS["larger_5_classes"]
    source = _random_source()
    first = TRANSFER_METHODS[method](SOURCE, source, target, 3, None)
    second = TRANSFER_METHODS[method](SOURCE, source, target, 3, None)
    assert safetensors.torch.save(first) == safetensors.torch.save(second)
    other = TRANSFER_METHODS[method](SOURCE, source, target, 4, None)
    assert not torch.equal(first["head.weight"], other["head.weight"]), "the seed fills the rest"
    assert torch.equal(first["blocks.0.norm1.weight"], other["blocks.0.norm1.weight"])


def test_weight_selection_to_the_identical_spec_is_the_source() -> None:
    source = _random_source()
    state = weight_selection(SOURCE, source, SOURCE, seed=5, head_rows=ALL_ROWS)
    assert state.keys() == source.keys()
    for name, tensor in source.items():
        assert torch.equal(state[name], tensor), name


def test_dct_to_the_identical_spec_is_the_source() -> None:
    source = _random_source()
    state = dct_transfer(SOURCE, source, SOURCE, seed=5, head_rows=ALL_ROWS)
    for name, tensor in source.items():
        assert torch.allclose(state[name], tensor, rtol=DCT_TOLERANCE, atol=DCT_TOLERANCE), name


def test_dct_matrix_is_orthonormal_and_pad_then_cut_round_trips() -> None:
    for size in (1, 5, 48):
        matrix = dct_matrix(size)
        assert torch.allclose(matrix @ matrix.T, torch.eye(size, dtype=torch.float64), atol=1e-12)
        assert torch.equal(dct_matrix(size, rows=3), matrix[:3])
    signal = torch.randn(7, 30, dtype=torch.float64)
    padded = dct_resize(signal, 1, 75)
    assert torch.allclose(dct_resize(padded, 1, 30), signal, atol=1e-12)
    assert math.isclose(float(padded.norm()), float(signal.norm()), rel_tol=1e-12)


@pytest.mark.parametrize(
    ("name", "source_shape", "target_shape"),
    [
        ("blocks.0.attn.qkv.weight", (96, 32), (384, 128)),
        ("blocks.0.mlp.fc1.weight", (128, 32), (256, 64)),
        ("blocks.0.mlp.fc2.weight", (32, 128), (24, 96)),
        ("head.weight", (10, 32), (10, 128)),
    ],
)
def test_factored_dct_width_is_the_dense_one(name, source_shape, target_shape) -> None:
    """Resizing a rank-r matrix factor by factor gives the dense resize of its product."""
    generator = torch.Generator().manual_seed(3)
    rank = 8
    left = torch.randn(source_shape[0], rank, generator=generator)
    right = torch.randn(rank, source_shape[1], generator=generator)
    role = role_of(name)
    dense_source, fill = left @ right, torch.empty(target_shape)
    if role.qkv:
        dense_source, fill = (
            dense_source.view(3, -1, source_shape[1]),
            fill.view(3, -1, target_shape[1]),
        )
    dense = dct_width(dense_source, fill, role).reshape(target_shape)
    new_left, new_right = dct_width_factors(left, right, target_shape, role)
    torch.testing.assert_close(new_left @ new_right, dense, atol=1e-5, rtol=1e-4)


def test_band_limited_resize_is_the_full_resize_for_any_factor() -> None:
    """Low-frequency factors (as the decoder's) take the band; others fall back to the full
    resize: either way the result is the full resize's."""
    generator = torch.Generator().manual_seed(5)
    size, target = 4 * BAND_FREQUENCIES, 12 * BAND_FREQUENCIES
    low = dct_matrix(size, BAND_FREQUENCIES // 2).T.float()  # (size, band / 2)
    smooth = low @ torch.randn(BAND_FREQUENCIES // 2, 16, generator=generator)
    rough = torch.randn(size, 16, generator=generator)
    for factor in (smooth, rough, smooth.T.contiguous()):
        dim = 0 if factor.shape[0] == size else 1
        torch.testing.assert_close(
            band_limited_resize(factor, dim, target), dct_resize(factor, dim, target),
            atol=1e-5, rtol=1e-4,
        )  # fmt: skip


def test_dct_keeps_smooth_signals_and_rescales_to_fan_in() -> None:
    positions = (torch.arange(64, dtype=torch.float64) + 0.5) / 64
    smooth = torch.cos(math.pi * positions)[None]  # the first DCT frequency only
    halved = dct_resize(smooth, 1, 32)
    grid = (torch.arange(32, dtype=torch.float64) + 0.5) / 32
    # Norm is kept, so the values grow by sqrt(64 / 32).
    assert torch.allclose(halved / math.sqrt(2), torch.cos(math.pi * grid)[None], atol=1e-9)
    source = _random_source()
    target = TARGETS["wider"]
    state = dct_transfer(SOURCE, source, target, head_rows=ALL_ROWS)
    name = "blocks.0.attn.proj.weight"  # fan-in: the attention width, 48 -> 72

    def rms(tensor: torch.Tensor) -> float:
        return float(tensor.square().mean().sqrt())

    expected = rms(source[name]) * math.sqrt(SOURCE.embed_dim / target.embed_dim)
    assert rms(state[name]) == pytest.approx(expected, rel=1e-5)
    bias = "blocks.0.mlp.fc1.bias"  # a vector keeps its RMS
    assert rms(state[bias]) == pytest.approx(rms(source[bias]), rel=1e-5)


def test_evenly_spaced_indices() -> None:
    assert evenly_spaced(12, 4).tolist() == [0, 3, 6, 9]  # a multiple: every third
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9]
    assert evenly_spaced(5, 5).tolist() == [0, 1, 2, 3, 4]
    uneven = evenly_spaced(48, 36)
    assert uneven[0] == 0 and uneven[-1] == 47 and len(set(uneven.tolist())) == 36
    with pytest.raises(ValueError, match="cannot select"):
        evenly_spaced(3, 4)


def test_weight_selection_uses_one_index_set_per_axis() -> None:
    source = _random_source()
    target = TARGETS["narrower"]
    state = weight_selection(SOURCE, source, target, head_rows=ALL_ROWS)
    embed = evenly_spaced(SOURCE.embed_dim, target.embed_dim)
    hidden = evenly_spaced(SOURCE.mlp_hidden_dim, target.mlp_hidden_dim)
    assert torch.equal(state["patch_embed.proj.weight"], source["patch_embed.proj.weight"][embed])
    assert torch.equal(state["blocks.1.norm2.weight"], source["blocks.1.norm2.weight"][embed])
    assert torch.equal(state["head.weight"], source["head.weight"][:, embed])
    fc1 = source["blocks.0.mlp.fc1.weight"][hidden][:, embed]
    assert torch.equal(state["blocks.0.mlp.fc1.weight"], fc1)
    q_rows, k_rows = state["blocks.0.attn.qkv.weight"].chunk(3)[:2]
    source_q, source_k = source["blocks.0.attn.qkv.weight"].chunk(3)[:2]
    assert torch.equal(q_rows, source_q[embed][:, embed])
    assert torch.equal(k_rows, source_k[embed][:, embed]), "keys stay keys"


def test_weight_selection_fills_a_wider_target_from_its_own_init() -> None:
    source = _random_source()
    target = TARGETS["wider"]
    init = target_initial_state(target, 0)
    state = weight_selection(SOURCE, source, target, seed=0, head_rows=ALL_ROWS)
    width = SOURCE.embed_dim
    weight = state["blocks.0.attn.proj.weight"]
    assert torch.equal(weight[:width, :width], source["blocks.0.attn.proj.weight"])
    assert torch.equal(weight[width:], init["blocks.0.attn.proj.weight"][width:])
    assert torch.equal(state["norm.weight"][width:], torch.ones(target.embed_dim - width))


@pytest.mark.parametrize("method", list(TRANSFER_METHODS))
def test_deeper_target_adds_identity_blocks(method: str) -> None:
    """At equal width, extra blocks start as identity maps: the source's function is kept."""
    source = _random_source()
    target = TARGETS["deeper"]
    state = TRANSFER_METHODS[method](SOURCE, source, target, 0, ALL_ROWS)
    for index in range(SOURCE.depth, target.depth):
        for output in IDENTITY_BLOCK_OUTPUTS:
            assert not state[f"blocks.{index}.{output}.weight"].any()
            assert not state[f"blocks.{index}.{output}.bias"].any()
        assert state[f"blocks.{index}.mlp.fc1.weight"].std() > 0, "the rest is trainable"
    source_model, target_model = build_model(SOURCE), build_model(target)
    source_model.load_state_dict(source)
    target_model.load_state_dict(state)
    images = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(target_model(images), source_model(images), atol=1e-4)


def test_grey_to_rgb_keeps_the_response_to_grey_images() -> None:
    source = _random_source()
    target = SOURCE.model_copy(update={"in_chans": 3})
    state = weight_selection(SOURCE, source, target, head_rows=ALL_ROWS)
    kernel = state["patch_embed.proj.weight"]
    assert torch.allclose(kernel.sum(dim=1, keepdim=True), source["patch_embed.proj.weight"])
    source_model, target_model = build_model(SOURCE), build_model(target)
    source_model.load_state_dict(source)
    target_model.load_state_dict(state)
    grey = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            target_model(grey.expand(-1, 3, -1, -1)), source_model(grey), atol=1e-4
        )
    back = weight_selection(target, state, SOURCE, head_rows=ALL_ROWS)
    assert torch.allclose(back["patch_embed.proj.weight"], source["patch_embed.proj.weight"])


def test_head_rows_select_a_task_and_none_keeps_the_init() -> None:
    source = _random_source()
    target = SOURCE.model_copy(update={"num_classes": 4})
    state = weight_selection(SOURCE, source, target, head_rows=(3, 7))
    assert torch.equal(state["head.weight"], source["head.weight"][3:7])
    assert torch.equal(state["head.bias"], source["head.bias"][3:7])
    fresh = weight_selection(SOURCE, source, target, seed=2, head_rows=None)
    assert torch.equal(fresh["head.weight"], target_initial_state(target, 2)["head.weight"])
    with pytest.raises(ValueError, match="num_classes=4"):
        weight_selection(SOURCE, source, target, head_rows=(0, 10))
    with pytest.raises(ValueError, match="within the source head"):
        weight_selection(SOURCE, source, target, head_rows=(8, 12))


def test_bad_inputs_are_clear_errors() -> None:
    source = _random_source()
    broken = {k: v for k, v in source.items() if k != "pos_embed"}
    with pytest.raises(ValueError, match="missing \\['pos_embed'\\]"):
        dct_transfer(SOURCE, broken, SOURCE, head_rows=ALL_ROWS)
    with pytest.raises(TypeError, match="ViT"):
        dct_transfer(SOURCE, source, GPT2Spec(n_layer=1, n_embd=8, n_head=2, vocab_size=16))
    rgb = SOURCE.model_copy(update={"in_chans": 3})
    rgb_state = weight_selection(SOURCE, source, rgb, head_rows=ALL_ROWS)
    with pytest.raises(ValueError, match="3-channel patch embedding to 2 channels"):
        weight_selection(rgb, rgb_state, SOURCE.model_copy(update={"in_chans": 2}))


@pytest.fixture(scope="module")
def trained_ancestry(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, torch.Tensor], float]:
    """A tiny ViT trained for a few seconds on glyphs_digits, and its test accuracy."""
    root = tmp_path_factory.getbasetemp() / "tal-task-cache"
    train = load_task("glyphs_digits", "train", root=root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(SOURCE)
        optimizer = torch.optim.AdamW(model.parameters(), lr=ANCESTRY_LR)
        generator = torch.Generator().manual_seed(0)
        for _ in range(ANCESTRY_STEPS):
            index = torch.randint(len(train), (ANCESTRY_BATCH,), generator=generator)
            loss = F.cross_entropy(model(train.images[index]), train.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test = load_task("glyphs_digits", "test", root=root)
    return {k: v.detach() for k, v in model.state_dict().items()}, accuracy(model, test)


@pytest.mark.parametrize("method", list(TRANSFER_METHODS))
@pytest.mark.parametrize(
    "target",
    [
        SOURCE.model_copy(update={"depth": 1, "embed_dim": 32, "num_heads": 2}),
        SOURCE.model_copy(
            update={
                "depth": 3,
                "embed_dim": 64,
                "num_heads": 4,
                "mlp_ratio": 4.0,
                "patch_size": 16,
                "img_size": 64,
                "in_chans": 3,
            }
        ),
    ],
    ids=["smaller", "larger_rgb_64"],
)
def test_untrained_transfer_beats_chance(
    method: str,
    target: ViTSpec,
    trained_ancestry: tuple[dict[str, torch.Tensor], float],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    state, source_accuracy = trained_ancestry
    chance = 1.0 / SOURCE.num_classes
    assert source_accuracy > CHANCE_MARGIN * chance, "the tiny ancestry did not learn"
    model = build_model(target)
    model.load_state_dict(TRANSFER_METHODS[method](SOURCE, state, target, 0, ALL_ROWS))
    root = tmp_path_factory.getbasetemp() / "tal-task-cache"
    test = load_task(
        "glyphs_digits", "test", root=root, image_size=target.img_size, in_chans=target.in_chans
    )
    assert accuracy(model, test) > CHANCE_MARGIN * chance


def test_ancestry_transfer_takes_the_tasks_head_rows(
    trained_ancestry: tuple[dict[str, torch.Tensor], float],
) -> None:
    from tal.checkpoints.ancestry import Ancestry

    state, _ = trained_ancestry
    union = SOURCE.model_copy(update={"num_classes": 15})  # glyphs_digits, then 5 others
    ancestry = Ancestry.create(union, {"glyphs_digits": (0, 10), "other": (10, 15)})
    union_state = dict(state)
    union_state["head.weight"] = torch.cat([state["head.weight"], torch.zeros(5, 48)])
    union_state["head.bias"] = torch.cat([state["head.bias"], torch.ones(5)])
    ancestry.model.load_state_dict(union_state)
    other = SOURCE.model_copy(update={"num_classes": 5})
    for method in TRANSFER_METHODS:
        learned = ancestry.transfer(SOURCE, method, "glyphs_digits")
        torch.testing.assert_close(learned["head.bias"], state["head.bias"])
        assert torch.equal(ancestry.transfer(other, method, "other")["head.bias"], torch.ones(5))
        unknown = ancestry.transfer(SOURCE, method, "unseen", seed=1)
        assert torch.equal(unknown["head.weight"], target_initial_state(SOURCE, 1)["head.weight"])
    with pytest.raises(ValueError, match="unknown transfer method"):
        ancestry.transfer(SOURCE, "nearest", "glyphs_digits")  # type: ignore[arg-type]
