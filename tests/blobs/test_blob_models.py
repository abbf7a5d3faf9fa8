"""Blobs load strictly into real timm and transformers models, tied GPT-2 heads included."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
import transformers
from timm.models.vision_transformer import VisionTransformer

from tal.arch.specs import GPT2Spec
from tal.blobs import io
from tal.blobs.layout import ALIASES_KEY

GPT2_CONFIG = {"n_layer": 2, "n_embd": 16, "n_head": 2, "vocab_size": 40, "n_positions": 8}
TIED = ("lm_head.weight", "transformer.wte.weight")


def tiny_gpt2() -> transformers.GPT2LMHeadModel:
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_CONFIG)).eval()


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                             num_classes=3).eval()  # fmt: skip


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


def test_tied_gpt2_is_stored_once_and_loads_strictly_every_way(tmp_path):
    source = tiny_gpt2()
    expected = {k: v.clone() for k, v in source.state_dict().items()}
    assert source.state_dict()[TIED[0]].data_ptr() == source.state_dict()[TIED[1]].data_ptr()
    data = io.to_bytes(source.state_dict(), {"tal.format": "hf"})
    raw = safetensors.torch.load(data)
    assert TIED[0] not in raw and TIED[1] in raw  # written once, as Hugging Face does
    assert ALIASES_KEY in io.read_metadata(data)

    tensors, _ = io.load_state_dict(data)
    assert tensors[TIED[0]] is tensors[TIED[1]]
    target = tiny_gpt2()
    target.load_state_dict(tensors, strict=True)
    assert_same_weights(target, expected)

    path = tmp_path / "model.safetensors"
    io.save_file(source.state_dict(), path)
    target = tiny_gpt2()
    missing, unexpected = safetensors.torch.load_model(target, path, strict=True)
    assert not missing and not unexpected
    assert_same_weights(target, expected)


def test_tied_gpt2_loads_with_from_pretrained(tmp_path):
    source = tiny_gpt2()
    source.config.save_pretrained(tmp_path)
    io.save_file(source.state_dict(), tmp_path / "model.safetensors")
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert_same_weights(loaded, source.state_dict())
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_a_timm_vit_loads_strictly_in_every_served_dtype(dtype):
    source = tiny_vit()
    blob = io.pack(source.state_dict(), {"tal.dtype": str(dtype)}, dtype=dtype)
    tensors, _ = io.load_state_dict(bytearray(blob.memoryview()))
    target = tiny_vit().to(dtype)
    target.load_state_dict(tensors, strict=True)
    assert_same_weights(target, {k: v.to(dtype) for k, v in source.state_dict().items()})
    images = torch.randn(2, 3, 16, 16, dtype=dtype)
    assert torch.equal(target(images), source.to(dtype)(images))


def test_a_predicted_gpt2_packs_and_loads_strictly(fresh_learngene):
    spec = GPT2Spec(**GPT2_CONFIG)
    predicted = fresh_learngene.predict(spec, format="hf")
    assert predicted[TIED[0]] is predicted[TIED[1]]
    tensors, metadata = io.load_state_dict(bytearray(io.pack(predicted).memoryview()))
    assert tensors[TIED[0]] is tensors[TIED[1]] and ALIASES_KEY in metadata
    tiny_gpt2().load_state_dict(tensors, strict=True)
