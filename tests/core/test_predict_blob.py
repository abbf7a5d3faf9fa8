"""The one blob path: predictions decoded straight into a safetensors blob that the library's own
readers, timm and transformers load, byte for byte what the tensor API predicts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tal.arch.specs import GPT2Spec, ViTSpec
from tal.arch.target_models import build_model
from tal.blobs.reader import read_state_dict
from tal.predict import predict_blob

DTYPES = ("float32", "float16", "bfloat16")


@st.composite
def specs(draw: st.DrawFn) -> tuple[ViTSpec | GPT2Spec, str]:
    """A small valid spec and a format it can be written in."""
    heads = draw(st.integers(1, 3))
    width = heads * draw(st.sampled_from([4, 8, 12]))
    if draw(st.booleans()):
        spec = GPT2Spec(
            n_layer=draw(st.integers(1, 3)),
            n_embd=width,
            n_head=heads,
            vocab_size=draw(st.integers(2, 90)),
            n_positions=draw(st.integers(1, 24)),
            tie_word_embeddings=draw(st.booleans()),
        )
        return spec, "hf"
    patch = draw(st.sampled_from([2, 4]))
    class_token = draw(st.booleans())
    spec = ViTSpec(
        depth=draw(st.integers(1, 3)),
        embed_dim=width,
        num_heads=heads,
        mlp_ratio=draw(st.sampled_from([1.0, 2.0, 4.0])),
        patch_size=patch,
        img_size=patch * draw(st.integers(1, 4)),
        in_chans=draw(st.integers(1, 3)),
        num_classes=draw(st.integers(0, 7)),
        qkv_bias=draw(st.booleans()),
        class_token=class_token,
    )
    return spec, draw(st.sampled_from(["timm", "hf"] if class_token else ["timm"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.sampled_from(DTYPES))
def test_blob_is_what_the_tensor_api_predicts(fresh_learngene, spec_and_format, dtype):
    spec, format = spec_and_format
    blob = predict_blob(spec, None, format, dtype, learngene=fresh_learngene).blob
    data = bytes(blob.memoryview())
    expected = fresh_learngene.predict(spec, None, format, dtype)
    theirs = safetensors.torch.load(data)  # the library's own reader
    tied = spec.family == "gpt2" and spec.tie_word_embeddings
    assert set(theirs) == set(expected) - ({"lm_head.weight"} if tied else set())
    for name, tensor in theirs.items():
        assert tensor.dtype == getattr(torch, dtype)
        assert torch.equal(tensor, expected[name]), name
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.safetensors"
        path.write_bytes(data)
        model = build_model(spec, format)
        missing, unexpected = safetensors.torch.load_model(model, path, strict=True)
    assert not missing and not unexpected
    assert json.loads(blob.layout.metadata["tal.spec"]) == json.loads(spec.canonical_json())


@pytest.mark.parametrize("format", ["timm", "hf"])
def test_the_decoder_writes_the_payload_itself(fresh_learngene, format):
    spec = ViTSpec(depth=2, embed_dim=32, num_heads=2, img_size=16, patch_size=4, num_classes=3)
    blob = predict_blob(spec, None, format, "bfloat16", learngene=fresh_learngene).blob
    start = blob.buffer.data_ptr()
    end = start + blob.nbytes
    for name, tensor in blob.tensors().items():  # every tensor is a view of the one buffer
        assert start + blob.layout.payload_start <= tensor.data_ptr() < end, name
    again = predict_blob(spec, None, format, "bfloat16", learngene=fresh_learngene).blob
    assert bytes(again.memoryview()) == bytes(blob.memoryview())  # deterministic bytes
    loaded, metadata = read_state_dict(bytearray(blob.memoryview()))
    assert metadata["tal.head"] == "predicted" and metadata["tal.dtype"] == "bfloat16"
    build_model(spec, format).load_state_dict(loaded, strict=True)


def test_a_tied_gpt2_head_is_stored_once_and_restored(fresh_learngene):
    spec = GPT2Spec(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=8)
    blob = predict_blob(spec, None, "hf", learngene=fresh_learngene).blob
    assert "lm_head.weight" not in blob.layout.names
    loaded, _ = read_state_dict(bytearray(blob.memoryview()))
    assert loaded["lm_head.weight"] is loaded["transformer.wte.weight"]
    build_model(spec, "hf").load_state_dict(loaded, strict=True)


def test_bad_requests_are_refused_before_anything_is_allocated(fresh_learngene):
    vit = ViTSpec(depth=1, embed_dim=8, num_heads=1, img_size=8, patch_size=4, num_classes=2)
    with pytest.raises(ValueError, match="dtype must be one of"):
        predict_blob(vit, None, "timm", "int8", learngene=fresh_learngene)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not 'timm'"):
        predict_blob(
            GPT2Spec(n_layer=1, n_embd=8, n_head=1), None, "timm", learngene=fresh_learngene
        )
    with pytest.raises(KeyError, match="unknown task"):
        predict_blob(vit, "nope", learngene=fresh_learngene)
    with pytest.raises(ValueError, match="discriminant head needs"):
        predict_blob(vit, None, head="discriminant", learngene=fresh_learngene)
