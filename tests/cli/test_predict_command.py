"""The real ``tal`` console script, run as a user would."""

import json
import subprocess
import sys

import pytest

from tal import io
from tal.models import build_model
from tal.specs import parse_arch


def run_tal(*args, store):
    return subprocess.run(
        [sys.executable, "-m", "tal.cli", *args, "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_predict_writes_a_loadable_file(tmp_path):
    spec = {
        "family": "vit",
        "depth": 2,
        "embed_dim": 24,
        "num_heads": 2,
        "img_size": 16,
        "patch_size": 4,
        "num_classes": 4,
    }
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(spec))
    out = tmp_path / "w.safetensors"
    result = run_tal(
        "predict",
        "--arch",
        str(arch_file),
        "--format",
        "hf",
        "--out",
        str(out),
        store=tmp_path / "empty",
    )
    assert result.returncode == 0, result.stderr
    assert "fresh hypernetwork" in result.stderr
    tensors, metadata = io.load_state_dict(out)
    assert metadata["tal.format"] == "hf"
    build_model(parse_arch(spec), "hf").load_state_dict(tensors, strict=True)


def test_predict_reports_bad_input(tmp_path):
    out = tmp_path / "w.safetensors"
    bad = run_tal(
        "predict",
        "--arch",
        '{"family": "vit", "embed_dim": 10, "num_heads": 3}',
        "--out",
        str(out),
        store=tmp_path,
    )
    assert bad.returncode == 2 and "num_heads (3) must divide embed_dim (10)" in bad.stderr
    unknown = run_tal(
        "predict",
        "--arch",
        "vit_tiny_patch16_224",
        "--task",
        "nope",
        "--out",
        str(out),
        store=tmp_path,
    )
    assert unknown.returncode == 2 and "unknown task 'nope'" in unknown.stderr
    assert not out.exists()


def test_train_default_refuses_unknown_decoder_fields(tmp_path):
    result = run_tal("train", "default", "--decoder", '{"basis_sise": 32}', store=tmp_path)
    assert result.returncode == 2
    assert "--decoder takes a JSON object with keys from" in result.stderr
    assert "basis_size" in result.stderr
    assert not any(tmp_path.iterdir())  # refused before any training or writing


def test_train_default_refuses_an_unknown_distillation(tmp_path):
    result = run_tal("train", "default", "--stage2-distillation", "labels", store=tmp_path)
    assert result.returncode == 2
    assert "expected one of ['features', 'logits'], got 'labels'" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("stage", ["default", "stage1"])
def test_training_refuses_a_missing_ancestry_source(tmp_path, stage):
    result = run_tal(
        "train",
        stage,
        "--run-dir",
        str(tmp_path / "run"),
        "--ancestry-from",
        "tal-default:1999.01.01",
        store=tmp_path / "store",
    )
    assert result.returncode == 2
    assert "model 'tal-default' version '1999.01.01' not found" in result.stderr
    assert not (tmp_path / "run").exists()
