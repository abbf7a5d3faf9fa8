"""Predicted weights load strictly into real timm / transformers models and run."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tal.arch.specs import GPT2Spec, ViTSpec
from tal.arch.target_models import build_model

PROPERTY_SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def vit_specs(draw):
    heads = draw(st.integers(1, 4))
    head_dim = draw(st.integers(1, 24))
    patch = draw(st.sampled_from([2, 4, 7, 14]))
    return ViTSpec(
        depth=draw(st.integers(1, 3)),
        embed_dim=heads * head_dim,
        num_heads=heads,
        mlp_ratio=draw(st.sampled_from([1.0, 2.5, 4.0])),
        patch_size=patch,
        img_size=patch * draw(st.integers(1, 4)),
        in_chans=draw(st.sampled_from([1, 3])),
        num_classes=draw(st.sampled_from([0, 1, 7, 1000])),
        qkv_bias=draw(st.booleans()),
        class_token=draw(st.booleans()),
    )


@st.composite
def gpt2_specs(draw):
    heads = draw(st.integers(1, 4))
    return GPT2Spec(
        n_layer=draw(st.integers(1, 3)),
        n_embd=heads * draw(st.integers(1, 16)),
        n_head=heads,
        n_inner=draw(st.none() | st.integers(1, 96)),
        vocab_size=draw(st.integers(1, 300)),
        n_positions=draw(st.integers(1, 40)),
        tie_word_embeddings=draw(st.booleans()),
    )


def load_and_run(spec, format, state):
    model = build_model(spec, format).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        if isinstance(spec, ViTSpec):
            images = torch.randn(2, spec.in_chans, spec.img_size, spec.img_size)
            out = model(images) if format == "timm" else model(pixel_values=images).logits
        else:
            tokens = torch.randint(0, spec.vocab_size, (2, min(5, spec.n_positions)))
            out = model(input_ids=tokens).logits
    assert torch.isfinite(out).all()
    return out


@PROPERTY_SETTINGS
@given(spec=vit_specs())
def test_any_vit_loads_into_timm_and_hf(fresh_learngene, spec):
    load_and_run(spec, "timm", fresh_learngene.predict(spec, format="timm"))
    if spec.class_token:
        load_and_run(spec, "hf", fresh_learngene.predict(spec, format="hf"))


@PROPERTY_SETTINGS
@given(spec=gpt2_specs())
def test_any_gpt2_loads_into_transformers(fresh_learngene, spec):
    load_and_run(spec, "hf", fresh_learngene.predict(spec, format="hf"))


SPEC = ViTSpec(depth=2, embed_dim=48, num_heads=3, img_size=16, patch_size=4, num_classes=10)


def test_deterministic(fresh_learngene):
    first = fresh_learngene.predict(SPEC)
    again = fresh_learngene.predict(SPEC)
    assert list(first) == list(again)
    for name in first:
        assert torch.equal(first[name], again[name])


def test_timm_and_hf_layouts_hold_the_same_values(fresh_learngene):
    timm_state = fresh_learngene.predict(SPEC, format="timm")
    hf_state = fresh_learngene.predict(SPEC, format="hf")
    qkv = torch.cat([hf_state[f"vit.layers.1.attention.{p}_proj.weight"] for p in "qkv"])
    assert torch.equal(qkv, timm_state["blocks.1.attn.qkv.weight"])
    assert torch.equal(hf_state["classifier.weight"], timm_state["head.weight"])


@pytest.mark.parametrize("dtype, tolerance", [("float16", 1e-3), ("bfloat16", 1e-2)])
def test_dtypes(fresh_learngene, dtype, tolerance):
    reference = fresh_learngene.predict(SPEC)
    state = fresh_learngene.predict(SPEC, dtype=dtype)
    for name, tensor in state.items():
        assert tensor.dtype == getattr(torch, dtype)
        assert torch.allclose(tensor.float(), reference[name], rtol=tolerance, atol=tolerance)
    with pytest.raises(ValueError, match="dtype must be one of"):
        fresh_learngene.predict(SPEC, dtype="int8")


def test_gpt2_tied_head_aliases_the_embedding(fresh_learngene):
    spec = GPT2Spec(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=8)
    state = fresh_learngene.predict(spec, format="hf")
    assert state["lm_head.weight"] is state["transformer.wte.weight"]
    with pytest.raises(ValueError, match="available in format 'hf'"):
        fresh_learngene.predict(spec, format="timm")
