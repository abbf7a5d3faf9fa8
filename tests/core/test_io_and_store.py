"""Safetensors blobs, learngene checkpoints and the model store."""

import json

import pytest
import safetensors.torch
import torch

from tal.arch.specs import GPT2Spec, ViTSpec
from tal.arch.target_models import build_model
from tal.blobs import io
from tal.checkpoints import store
from tal.checkpoints.learngene import Learngene
from tal.checkpoints.provenance import describe_environment
from tal.predict import predict_blob


def predict_bytes(spec, **kwargs) -> bytes:
    learngene = kwargs.pop("learngene")
    return bytes(predict_blob(spec, learngene=learngene, **kwargs).blob.memoryview())


SPEC = ViTSpec(depth=1, embed_dim=32, num_heads=2, img_size=16, patch_size=4, num_classes=3)


def test_blob_round_trip_with_metadata(fresh_learngene):
    blob = predict_bytes(SPEC, format="timm", dtype="bfloat16", learngene=fresh_learngene)
    tensors, metadata = io.load_state_dict(blob)
    assert json.loads(metadata["tal.spec"]) == json.loads(SPEC.canonical_json())
    assert metadata["tal.format"] == "timm" and metadata["tal.dtype"] == "bfloat16"
    assert metadata["tal.model_version"] == "untrained/0" and "tal.seed" not in metadata
    model = build_model(SPEC, "timm")
    model.load_state_dict(tensors, strict=True)
    assert predict_bytes(SPEC, format="timm", dtype="bfloat16", learngene=fresh_learngene) == blob


def test_tied_gpt2_blob_loads_strictly(fresh_learngene, tmp_path):
    spec = GPT2Spec(n_layer=1, n_embd=16, n_head=2, vocab_size=40, n_positions=8)
    blob = predict_bytes(spec, format="hf", learngene=fresh_learngene)
    raw = safetensors.torch.load(blob)
    assert "lm_head.weight" not in raw  # written once, as Hugging Face does
    tensors, _ = io.load_state_dict(blob)
    model = build_model(spec, "hf")
    model.load_state_dict(tensors, strict=True)
    path = tmp_path / "gpt2.safetensors"
    path.write_bytes(blob)
    missing, unexpected = safetensors.torch.load_model(build_model(spec, "hf"), path, strict=True)
    assert not missing and not unexpected


def test_learngene_save_load_verify(tmp_path):
    learngene = Learngene.fresh()
    learngene.tasks = {"digits": torch.randn(learngene.hypernet.config.encoder.task_dim)}
    with torch.no_grad():
        learngene.hypernet.decoder.vector_head.bias.normal_()
    learngene.save("demo", "1", root=tmp_path, extra_manifest={"metrics": {"acc": 0.5}})
    learngene.save("demo", "2", root=tmp_path)
    assert store.list_versions("demo", tmp_path) == ["1", "2"]
    loaded = Learngene.load("demo", "1", root=tmp_path, device="cpu")
    assert loaded.model_version == "demo/1" and loaded.manifest["metrics"] == {"acc": 0.5}
    assert loaded.manifest["environment"] == describe_environment()  # the machine that wrote it
    assert Learngene.load("demo", root=tmp_path, device="cpu").version == "2"
    expected = learngene.predict(SPEC, task="digits")
    for name, tensor in loaded.predict(SPEC, task="digits").items():
        assert torch.equal(tensor, expected[name])
    with pytest.raises(KeyError, match="known tasks: digits"):
        loaded.predict(SPEC, task="unknown")


def test_corrupt_and_partial_checkpoints_are_refused(tmp_path):
    path = Learngene.fresh().save("demo", "1", root=tmp_path)
    weights = path / store.HYPERNET_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(store.StoreError, match="corrupt"):
        Learngene.load("demo", "1", root=tmp_path)
    weights.unlink()
    with pytest.raises(store.StoreError, match="missing"):
        Learngene.load("demo", "1", root=tmp_path)
    (tmp_path / "demo" / ".3.abc.partial").mkdir()  # what a killed writer leaves behind
    assert store.list_versions("demo", tmp_path) == ["1"]


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", "x" * 200])
def test_names_cannot_leave_the_store(tmp_path, name):
    with pytest.raises(store.StoreError, match="invalid"):
        store.resolve(name, "1", tmp_path)
    with pytest.raises(store.StoreError, match="invalid"):
        store.resolve("demo", name, tmp_path)
