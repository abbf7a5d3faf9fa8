"""Reach: ViTs outside a learngene's trained range are predicted at a proxy and lifted."""

from __future__ import annotations

import pytest
import torch

from tal.arch.libraries import PRESETS, build_library
from tal.arch.parse import parse_arch
from tal.arch.specs import GPT2Spec, ViTSpec
from tal.arch.target_models import build_model
from tal.blobs.reader import read_state_dict
from tal.checkpoints.learngene import Learngene
from tal.predict import PROXY_METADATA_KEY, predict_blob
from tal.transfer.lift import (
    STREAM_INPUTS,
    WRITER_RMS,
    TrainedRange,
    lift,
    scale_residual_stream,
    stream_gain,
    writes_residual_stream,
)

CPU_RANGE = TrainedRange.of_library(PRESETS["cpu"])
OUTPUT_WEIGHTS = ("attn.proj.weight", "mlp.fc2.weight")
VIT_S_64_RGB = ViTSpec(
    depth=12,
    embed_dim=384,
    num_heads=6,
    patch_size=16,
    img_size=64,
    in_chans=3,
    num_classes=10,
)
USER_SHAPES = {
    "vit_s_width_64_rgb": VIT_S_64_RGB,
    "vit_tiny_224": ViTSpec(depth=12, embed_dim=192, num_heads=3, num_classes=10),
    "vit_base_224": ViTSpec(depth=12, embed_dim=768, num_heads=12, num_classes=10),
    "narrow_deep_patch_4": ViTSpec(
        depth=9, embed_dim=24, num_heads=1, patch_size=4, img_size=32, in_chans=1, num_classes=3
    ),
    "avg_pool_no_qkv_bias": ViTSpec(
        depth=3,
        embed_dim=96,
        num_heads=2,
        patch_size=8,
        img_size=32,
        in_chans=1,
        num_classes=10,
        class_token=False,
        qkv_bias=False,
    ),
}


@pytest.fixture(scope="module")
def ranged_learngene() -> Learngene:
    """A fresh learngene whose manifest says it trained on the ``cpu`` library."""
    learngene = Learngene.fresh()
    learngene.manifest = {"library": {"name": "cpu"}}
    return learngene


def test_vit_s_width_at_64_px_rgb_is_predicted_at_the_widest_deepest_cpu_shape() -> None:
    proxy = CPU_RANGE.proxy(VIT_S_64_RGB)
    assert (proxy.depth, proxy.embed_dim, proxy.num_heads) == (6, 192, 3)
    assert (proxy.img_size, proxy.patch_size, proxy.in_chans) == (32, 8, 1)
    assert proxy.num_classes == VIT_S_64_RGB.num_classes
    assert not CPU_RANGE.contains(VIT_S_64_RGB)


def test_every_library_shape_is_its_own_proxy() -> None:
    library = build_library("cpu")
    for spec in library.train + library.held_out:
        assert CPU_RANGE.contains(spec), spec


@pytest.mark.parametrize("name", sorted(USER_SHAPES))
def test_proxies_lie_in_the_range(name: str) -> None:
    proxy = CPU_RANGE.proxy(USER_SHAPES[name])
    band = next(b for b in CPU_RANGE.widths if b.min_depth <= proxy.depth <= b.max_depth)
    assert band.low <= proxy.embed_dim <= band.high
    low, high = CPU_RANGE.head_dims
    assert low <= proxy.embed_dim // proxy.num_heads <= high
    assert CPU_RANGE.contains(proxy)
    assert CPU_RANGE.proxy(proxy) == proxy


def test_a_multi_format_range_serves_its_formats_and_lifts_to_the_nearest() -> None:
    """The scales library trains ViT-S-width models at 64 px RGB: served as they are. timm's
    ViT-S at 224 px takes the trained format of the nearest patch grid, in RGB."""
    scales = TrainedRange.of_library(PRESETS["cpu-scales"])
    assert scales.contains(VIT_S_64_RGB)
    library = build_library("cpu-scales")
    assert all(scales.contains(spec) for spec in library.train)
    proxy = scales.proxy(parse_arch("vit_small_patch16_224"))
    assert (proxy.depth, proxy.embed_dim, proxy.num_heads) == (12, 384, 6)
    assert (proxy.img_size, proxy.patch_size, proxy.in_chans) == (64, 8, 3)
    grey = scales.proxy(VIT_S_64_RGB.model_copy(update={"in_chans": 1, "img_size": 80}))
    assert (grey.img_size, grey.patch_size, grey.in_chans) == (96, 16, 1)


def test_gpt2_library_has_no_vit_range() -> None:
    with pytest.raises(ValueError, match="ViT library"):
        TrainedRange.of_library(PRESETS["gpt2-cpu"])
    assert TrainedRange.of_manifest({"library": {"name": "gpt2-cpu"}}) is None
    assert TrainedRange.of_manifest({}) is None


def test_lift_to_the_proxys_own_shape_keeps_every_tensor(ranged_learngene: Learngene) -> None:
    """Up to the stream gain, which only what writes the stream takes."""
    proxy = CPU_RANGE.proxy(VIT_S_64_RGB)
    state = ranged_learngene.predict(proxy, None)
    lifted = lift(proxy, state, proxy, state)
    gain = stream_gain(proxy, state, proxy, exact=True)
    assert lifted.keys() == state.keys()
    for name, tensor in state.items():
        expected = tensor * gain if writes_residual_stream(name) else tensor
        torch.testing.assert_close(lifted[name], expected, atol=1e-5, rtol=1e-4, msg=name)


def test_lift_refuses_a_proxy_with_other_classes(ranged_learngene: Learngene) -> None:
    proxy = CPU_RANGE.proxy(VIT_S_64_RGB)
    state = ranged_learngene.predict(proxy, None)
    other = VIT_S_64_RGB.model_copy(update={"num_classes": 5})
    with pytest.raises(ValueError, match="classes"):
        lift(proxy, state, other, ranged_learngene.predict(other, None))


def test_rgb_lift_sees_grey_images_as_the_proxy_does(ranged_learngene: Learngene) -> None:
    """Only the input format differs: a grey image repeated over RGB gives the proxy's logits."""
    proxy = CPU_RANGE.proxy(VIT_S_64_RGB)
    target = proxy.model_copy(update={"in_chans": 3})
    state = ranged_learngene.predict(target, None)
    assert ranged_learngene.proxy(target) == proxy
    source_model = build_model(proxy)
    source_model.load_state_dict(ranged_learngene.predict(proxy, None), strict=True)
    target_model = build_model(target)
    target_model.load_state_dict(state, strict=True)
    grey = torch.randn(
        4, 1, proxy.img_size, proxy.img_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = source_model.eval()(grey)
        actual = target_model.eval()(grey.expand(-1, 3, -1, -1))
    scale = float(expected.abs().max())  # float32 rounding and the norms' epsilon (stream gain)
    torch.testing.assert_close(actual, expected, atol=1e-3 * scale, rtol=1e-3)


@pytest.mark.parametrize("name", sorted(USER_SHAPES))
def test_lifted_prediction_loads_strictly_into_timm(ranged_learngene: Learngene, name: str) -> None:
    spec = USER_SHAPES[name]
    state = ranged_learngene.predict(spec, None)
    model = build_model(spec)
    model.load_state_dict(state, strict=True)
    assert all(torch.isfinite(tensor).all() for tensor in state.values())


def test_lifted_hf_prediction_loads_strictly_and_matches_timm(ranged_learngene: Learngene) -> None:
    transformers = pytest.importorskip("transformers")
    spec = VIT_S_64_RGB.model_copy(update={"depth": 7})
    state = ranged_learngene.predict(spec, None, format="hf")
    config = transformers.ViTConfig(
        hidden_size=spec.embed_dim,
        num_hidden_layers=spec.depth,
        num_attention_heads=spec.num_heads,
        intermediate_size=int(spec.embed_dim * spec.mlp_ratio),
        image_size=spec.img_size,
        patch_size=spec.patch_size,
        num_channels=spec.in_chans,
        num_labels=spec.num_classes,
        layer_norm_eps=spec.norm_eps,
        hidden_act="gelu",
    )
    hf_model = transformers.ViTForImageClassification(config).eval()
    hf_model.load_state_dict(state, strict=True)
    timm_model = build_model(spec).eval()
    timm_model.load_state_dict(ranged_learngene.predict(spec, None), strict=True)
    images = torch.randn(2, 3, spec.img_size, spec.img_size)
    with torch.no_grad():
        torch.testing.assert_close(
            hf_model(pixel_values=images).logits, timm_model(images), atol=1e-4, rtol=1e-4
        )


def test_blob_names_its_proxy_and_in_range_blobs_do_not(ranged_learngene: Learngene) -> None:
    lifted = predict_blob(VIT_S_64_RGB, learngene=ranged_learngene).blob
    tensors, metadata = read_state_dict(bytearray(lifted.memoryview()))
    assert metadata[PROXY_METADATA_KEY] == CPU_RANGE.proxy(VIT_S_64_RGB).canonical_json()
    torch.testing.assert_close(tensors, ranged_learngene.predict(VIT_S_64_RGB, None))

    in_range = CPU_RANGE.proxy(VIT_S_64_RGB)
    direct = predict_blob(in_range, learngene=ranged_learngene).blob
    tensors, metadata = read_state_dict(bytearray(direct.memoryview()))
    assert PROXY_METADATA_KEY not in metadata
    torch.testing.assert_close(
        tensors, ranged_learngene.hypernet(in_range, None, "timm", torch.float32)
    )


def test_learngene_without_a_range_predicts_every_spec_as_it_is(
    fresh_learngene: Learngene,
) -> None:
    assert fresh_learngene.trained_range is None
    assert fresh_learngene.proxy(VIT_S_64_RGB) is None
    gpt2 = GPT2Spec(n_layer=2, n_embd=64, n_head=2, vocab_size=128, n_positions=32)
    learngene = Learngene.fresh()
    learngene.manifest = {"library": {"name": "cpu"}}
    assert learngene.proxy(gpt2) is None


def test_scaling_the_residual_stream_keeps_the_logits(ranged_learngene: Learngene) -> None:
    spec = VIT_S_64_RGB.model_copy(update={"depth": 3, "embed_dim": 96, "num_heads": 2})
    state = ranged_learngene.predict(spec, None)
    scaled = scale_residual_stream(dict(state), 3.0)
    for name in (*STREAM_INPUTS, "blocks.2.attn.proj.bias", "blocks.0.mlp.fc2.weight"):
        torch.testing.assert_close(scaled[name], 3.0 * state[name])
    for name in ("blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.weight", "norm.weight", "head.bias"):
        assert torch.equal(scaled[name], state[name])
    images = torch.randn(3, 3, spec.img_size, spec.img_size)
    logits = []
    for weights in (state, scaled):
        model = build_model(spec).eval()
        model.load_state_dict(weights, strict=True)
        with torch.no_grad():
            logits.append(model(images))
    scale = float(logits[0].abs().max())  # float32 rounding and the norms' epsilon
    torch.testing.assert_close(logits[1], logits[0], atol=1e-3 * scale, rtol=1e-3)


@pytest.mark.parametrize("writer_scale", [1e-3, 10.0])
def test_lift_scales_the_stream_by_the_width_ratio_or_to_timms_writer_scale(
    ranged_learngene: Learngene, writer_scale: float
) -> None:
    """Tiny output projections are brought to timm's scale, large ones keep the width ratio;
    either way everything that writes the stream is scaled alike (the logits do not move)."""
    proxy = CPU_RANGE.proxy(VIT_S_64_RGB)
    target = proxy.model_copy(update={"embed_dim": 2 * proxy.embed_dim})  # heads of 128: DCT
    state = {
        name: tensor * writer_scale if name.endswith(OUTPUT_WEIGHTS) else tensor
        for name, tensor in ranged_learngene.predict(proxy, None).items()
    }
    gain = stream_gain(proxy, state, target, exact=False)
    lifted = lift(proxy, state, target, ranged_learngene.predict(target, None))
    torch.testing.assert_close(lifted["cls_token"], gain * _dct_cls_token(proxy, state, target))
    writers = torch.cat(
        [
            lifted[f"blocks.{i}.{name}"].flatten()
            for i in range(proxy.depth)
            for name in OUTPUT_WEIGHTS
        ]
    )
    if writer_scale < 1:
        assert gain > 2.0
        assert float(writers.pow(2).mean().sqrt()) == pytest.approx(WRITER_RMS, rel=1e-3)
    else:
        assert gain == 2.0 and float(writers.pow(2).mean().sqrt()) > WRITER_RMS


def _dct_cls_token(proxy: ViTSpec, state: dict, target: ViTSpec) -> torch.Tensor:
    from tal.transfer.dct_transfer import dct_transfer

    return dct_transfer(proxy, state, target, head_rows=(0, target.num_classes))["cls_token"]


@pytest.mark.parametrize("name", ["vit_s_width_64_rgb", "vit_base_224", "avg_pool_no_qkv_bias"])
def test_prediction_lifts_factors_as_the_dense_lift_does(
    ranged_learngene: Learngene, name: str
) -> None:
    """The served path (proxy factors lifted into the target's own prediction, lifted blocks
    not composed first) equals the definition: the dense proxy lifted over the full
    prediction."""
    target = USER_SHAPES[name]
    proxy = CPU_RANGE.proxy(target)
    hypernet = ranged_learngene.hypernet
    with torch.no_grad():
        dense_proxy = hypernet(proxy, None, "timm", torch.float32)
        reference = lift(proxy, dense_proxy, target, hypernet(target, None, "timm", torch.float32))
    served = ranged_learngene.predict(target, None)
    assert served.keys() == reference.keys()
    for tensor_name, tensor in reference.items():
        scale = float(tensor.abs().max()) + 1e-12
        torch.testing.assert_close(
            served[tensor_name], tensor, atol=1e-5 * scale, rtol=1e-4, msg=tensor_name
        )


def test_lift_writes_hf_pieces_and_half_precision_in_place(ranged_learngene: Learngene) -> None:
    """Hugging Face's q/k/v pieces and a float16 payload get the timm lift, cast once."""
    target = USER_SHAPES["vit_s_width_64_rgb"]
    timm_state = ranged_learngene.predict(target, None)
    model = build_model(target, "hf")
    half = ranged_learngene.predict(target, None, format="hf", dtype="float16")
    assert {t.dtype for t in half.values()} == {torch.float16}
    model.load_state_dict(half, strict=True)
    width = target.embed_dim
    for part, name in enumerate(("q", "k", "v")):
        torch.testing.assert_close(
            half[f"vit.layers.0.attention.{name}_proj.weight"].float(),
            timm_state["blocks.0.attn.qkv.weight"][part * width : (part + 1) * width],
            atol=2e-3,
            rtol=2e-3,
        )
    assert not half["vit.layers.11.attention.o_proj.weight"].any()


def test_decoder_leaves_skipped_matrices_to_the_caller(ranged_learngene: Learngene) -> None:
    spec = USER_SHAPES["vit_s_width_64_rgb"]
    hypernet = ranged_learngene.hypernet
    with torch.no_grad():
        full = {k: v.clone() for k, v in hypernet(spec, None, "timm", torch.float32).items()}
        total = sum(t.numel() for t in full.values())
        sentinel = torch.full((total,), 7.0)
        skipped = {"blocks.0.mlp.fc1.weight", "blocks.3.attn.qkv.weight"}
        partial = hypernet(spec, None, "timm", torch.float32, sentinel, skipped)
    for name, tensor in full.items():
        if name in skipped:
            assert torch.all(partial[name] == 7.0), name
        else:
            assert torch.equal(partial[name], tensor), name
    with pytest.raises(ValueError, match="only in place"):
        hypernet(spec, None, "timm", torch.float32, None, skipped)
