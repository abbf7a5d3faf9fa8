"""The real ``tal`` console script, run as a user would."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tal.arch.parse import parse_arch
from tal.arch.target_models import build_model
from tal.blobs import io
from tal.tasks import load_npz


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


SHIPPED_STORE = Path(__file__).resolve().parents[2] / "model_store"
NEW_TASK_CLASSES = 3
NEW_TASK_SPEC = {
    "family": "vit",
    "depth": 2,
    "embed_dim": 48,
    "num_heads": 3,
    "img_size": 32,
    "patch_size": 8,
    "in_chans": 1,
    "num_classes": NEW_TASK_CLASSES,
}


def _template_images(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(classes * per_class, 32, 32)``, sorted by class: a fixed random
    template per class (the same for every seed) plus noise."""
    templates = np.random.default_rng(0).uniform(0, 255, (NEW_TASK_CLASSES, 32, 32))
    labels = np.repeat(np.arange(NEW_TASK_CLASSES), per_class)
    noise = np.random.default_rng(seed).normal(0, 40, (len(labels), 32, 32))
    return np.clip(templates[labels] + noise, 0, 255).astype(np.uint8), labels


def test_predict_for_a_new_tasks_images_fits_a_head_that_classifies_them(tmp_path):
    images, labels = _template_images(per_class=20, seed=1)
    data = tmp_path / "shapes.npz"
    np.savez(data, images=images, labels=labels)
    fitted, kept = tmp_path / "fitted.safetensors", tmp_path / "kept.safetensors"
    arch = json.dumps(NEW_TASK_SPEC)
    common = ["predict", "--arch", arch, "--task-data", str(data), "--task-examples", "30"]
    result = run_tal(*common, "--out", str(fitted), store=SHIPPED_STORE)
    assert result.returncode == 0, result.stderr
    assert "head fitted on 30 images" in result.stdout
    keep = run_tal(*common, "--keep-predicted-head", "--out", str(kept), store=SHIPPED_STORE)
    assert keep.returncode == 0, keep.stderr

    tensors, metadata = io.load_state_dict(fitted)
    predicted, kept_metadata = io.load_state_dict(kept)
    assert (metadata["tal.task"], metadata["tal.head"]) == ('"data:shapes.npz"', "discriminant")
    assert kept_metadata["tal.head"] == "predicted"
    spec = parse_arch(NEW_TASK_SPEC)
    norm = load_npz(data, image_size=spec.img_size, in_chans=spec.in_chans).norm
    # how to feed the head; the last bits of a reduction depend on the process's thread count
    expected_norm = {"mean": pytest.approx(list(norm.mean)), "std": pytest.approx(list(norm.std))}
    assert json.loads(metadata["tal.input_norm"]) == expected_norm
    # the same task embedding and body; only the classifier head differs
    assert {k for k in tensors if not torch.equal(tensors[k], predicted[k])} == {
        "head.weight",
        "head.bias",
    }
    query_images, query_labels = _template_images(per_class=30, seed=2)
    query = load_npz_arrays(tmp_path, query_images, query_labels, spec)
    accuracies = {}
    for name, state in (("fitted", tensors), ("predicted", predicted)):
        model = build_model(spec, "timm").eval()
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            accuracies[name] = float((model(query.images).argmax(1) == query.labels).float().mean())
    assert accuracies["fitted"] > 0.9 > accuracies["predicted"], accuracies


def load_npz_arrays(folder: Path, images: np.ndarray, labels: np.ndarray, spec: object):
    """Query images through the same loader as the CLI's (its own normalisation)."""
    path = folder / "query.npz"
    np.savez(path, images=images, labels=labels)
    return load_npz(path, image_size=spec.img_size, in_chans=spec.in_chans)


def test_predict_for_task_data_reports_bad_input(tmp_path):
    images, labels = _template_images(per_class=4, seed=1)
    data = tmp_path / "shapes.npz"
    np.savez(data, images=images, labels=labels)
    out = tmp_path / "w.safetensors"
    arch = ["--arch", json.dumps(NEW_TASK_SPEC)]
    wrong_classes = ["--arch", json.dumps({**NEW_TASK_SPEC, "num_classes": 5})]
    cases = {
        "set num_classes to 3": [*wrong_classes, "--task-data", str(data)],
        "not both": [*arch, "--task", "x", "--task-data", str(data)],
        "does not exist": [*arch, "--task-data", str(tmp_path / "missing.npz")],
        # two images, balanced over classes: one of class 0, one of class 1
        "none for classes [2]": [*arch, "--task-data", str(data), "--task-examples", "2"],
    }
    for message, args in cases.items():
        result = run_tal("predict", *args, "--out", str(out), store=SHIPPED_STORE)
        assert result.returncode == 2 and message in result.stderr, (message, result.stderr)
    assert not out.exists()


@pytest.mark.parametrize(
    "arch, format",
    [
        ({"family": "vit", "depth": 2, "embed_dim": 24, "num_heads": 2, "img_size": 16,
          "patch_size": 4, "in_chans": 1, "num_classes": 4}, "timm"),
        ({"family": "vit", "depth": 2, "embed_dim": 24, "num_heads": 2, "img_size": 16,
          "patch_size": 4, "num_classes": 4}, "hf"),
        ({"family": "gpt2", "n_layer": 2, "n_embd": 16, "n_head": 2, "vocab_size": 50,
          "n_positions": 8}, "hf"),
    ],
)  # fmt: skip
def test_out_dir_is_a_model_folder_timm_and_transformers_load(tmp_path, arch, format):
    import timm
    import transformers

    folder = tmp_path / "model"
    result = run_tal(
        "predict", "--arch", json.dumps(arch), "--format", format, "--out-dir", str(folder),
        store=tmp_path / "empty",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    expected, _ = io.load_state_dict(folder / "model.safetensors")
    if format == "timm":
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
        assert model.pretrained_cfg["input_size"] == (arch["in_chans"], 16, 16)
    elif arch["family"] == "vit":
        model = transformers.ViTForImageClassification.from_pretrained(folder)
    else:
        model = transformers.GPT2LMHeadModel.from_pretrained(folder)
        assert model.lm_head.weight is model.transformer.wte.weight  # tied, stored once
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
    assert type(model).__name__ == type(build_model(parse_arch(arch), format)).__name__


def test_predict_outside_the_trained_range_says_it_lifted(tmp_path):
    out = tmp_path / "wide.safetensors"
    arch = {**NEW_TASK_SPEC, "embed_dim": 384, "num_heads": 6, "img_size": 64, "in_chans": 3}
    result = run_tal("predict", "--arch", json.dumps(arch), "--out", str(out), store=SHIPPED_STORE)
    assert result.returncode == 0, result.stderr
    tensors, metadata = io.load_state_dict(out)
    proxy = json.loads(metadata["tal.proxy"])
    assert (proxy["embed_dim"], proxy["img_size"], proxy["in_chans"]) == (160, 32, 1)  # depth 2
    assert f"lifted from {metadata['tal.proxy']}" in result.stdout
    build_model(parse_arch(arch)).load_state_dict(tensors, strict=True)
