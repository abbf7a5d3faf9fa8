"""Heads fitted to a task registered from labelled images (``head`` of POST /v1/initialize)."""

from __future__ import annotations

import io as pyio
import json
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from svc_support import ANCESTRY_SPEC, MAX_HEAD_FIT_GFLOP_C, MODEL, TASK, TINY_GPT2, TINY_VIT

from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.blobs import io
from tal.checkpoints.learngene import Learngene
from tal.heads.support import head_fit_gflop
from tal.predict import predict_for_task_data
from tal.tasks import NormStats, load_npz
from tal.tasks.preprocess import normalize, resize_square

CLASSES = 3
TASK_DIM = 192
PER_CLASS = 16
GREY_VIT = {**TINY_VIT, "in_chans": 1, "num_classes": CLASSES}  # the ancestry's images
FIVE_CLASS_VIT = {**GREY_VIT, "num_classes": 5}
FITTED_ACCURACY = 0.8  # on new images of the task; chance is 1/3


def banded_npz(per_class: int = PER_CLASS, seed: int = 0) -> bytes:
    """Grey 28x28 images whose class is the lit row band, shuffled: separable by any model."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(per_class * CLASSES) % CLASSES)
    images = rng.integers(0, 40, (len(labels), 28, 28), dtype=np.uint8)
    band = 28 // CLASSES
    for index, label in enumerate(labels):
        images[index, label * band : (label + 1) * band] = 250
    buffer = pyio.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    return buffer.getvalue()


def register(client: httpx.Client, name: str, data: bytes) -> dict:
    files = {"file": ("task.npz", data, "application/octet-stream")}
    response = client.post("/v1/tasks", data={"name": name}, files=files)
    assert response.status_code == 201, response.text
    return response.json()


def initialize(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/initialize", json=body)


def accuracy(blob: bytes, spec: dict, images_unit: torch.Tensor, labels: torch.Tensor) -> float:
    """A real timm model built from ``spec`` with the blob's weights, scored on images in
    [0, 1] normalised as the blob's ``tal.input_norm`` says (or their own statistics)."""
    tensors, metadata = io.load_state_dict(blob)
    model = build_model(ViTSpec.model_validate(spec), "timm")
    model.load_state_dict(tensors, strict=True)
    norm = json.loads(metadata.get("tal.input_norm", "null"))
    stats = NormStats(tuple(norm["mean"]), tuple(norm["std"])) if norm else None
    stats = stats or NormStats((float(images_unit.mean()),), (float(images_unit.std()),))
    with torch.no_grad():
        logits = model.eval()(normalize(images_unit, stats))
    return float((logits.argmax(1) == labels).float().mean())


@pytest.fixture(scope="module")
def fresh_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Images of the same task the fit never saw, in [0, 1] ``(N, 1, 32, 32)``."""
    data = np.load(pyio.BytesIO(banded_npz(per_class=20, seed=7)))
    unit = torch.from_numpy(data["images"]).float().div(255)[:, None]
    return resize_square(unit, ANCESTRY_SPEC["img_size"]), torch.from_numpy(data["labels"]).long()


def test_registering_from_images_keeps_them_for_heads(a: httpx.Client) -> None:
    created = register(a, "banded", banded_npz())
    assert created["support_images"] == PER_CLASS * CLASSES
    assert created["classes"] == CLASSES
    assert created["note"] is None


def test_auto_head_is_fitted_and_classifies_new_images(
    a: httpx.Client, fresh_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    register(a, "banded-fit", banded_npz())
    fitted = initialize(a, arch=GREY_VIT, task="banded-fit")
    predicted = initialize(a, arch=GREY_VIT, task="banded-fit", head="predicted")
    assert fitted.status_code == predicted.status_code == 200, fitted.text
    assert fitted.headers["x-tal-head"] == "discriminant"
    assert predicted.headers["x-tal-head"] == "predicted"
    assert fitted.headers["etag"] != predicted.headers["etag"]
    fitted_tensors, metadata = io.load_state_dict(fitted.content)
    predicted_tensors, predicted_metadata = io.load_state_dict(predicted.content)
    assert metadata["tal.head"] == "discriminant" and predicted_metadata["tal.head"] == "predicted"
    assert "tal.input_norm" not in predicted_metadata
    changed = {k for k, v in fitted_tensors.items() if not torch.equal(v, predicted_tensors[k])}
    assert changed == {"head.weight", "head.bias"}
    images, labels = fresh_images
    assert accuracy(fitted.content, GREY_VIT, images, labels) >= FITTED_ACCURACY
    assert accuracy(predicted.content, GREY_VIT, images, labels) < FITTED_ACCURACY
    again = initialize(a, arch=GREY_VIT, task="banded-fit", head="discriminant")
    assert again.headers["x-cache"] == "hit" and again.content == fitted.content


def test_service_fits_the_head_the_library_fits(a: httpx.Client, cluster: Any) -> None:
    data = banded_npz(seed=3)
    register(a, "banded-lib", data)
    served = initialize(a, arch=GREY_VIT, task="banded-lib", dtype="float16")
    assert served.status_code == 200, served.text
    learngene = Learngene.load(MODEL, "1", root=cluster.store)
    path = cluster.store.parent / "banded-lib.npz"
    path.write_bytes(data)
    task = load_npz(path, image_size=ANCESTRY_SPEC["img_size"], in_chans=1)
    expected = predict_for_task_data(learngene, GREY_VIT, task, dtype="float16")
    tensors, _ = io.load_state_dict(served.content)
    assert tensors.keys() == expected.tensors.keys()
    for name, tensor in expected.tensors.items():
        assert torch.equal(tensors[name], tensor), name


def test_other_replica_fits_from_the_images_in_redis(a: httpx.Client, b: httpx.Client) -> None:
    register(a, "banded-shared", banded_npz(seed=5))
    arch = {**GREY_VIT, "depth": 3}  # a blob no replica has computed yet
    on_b = initialize(b, arch=arch, task="banded-shared")
    assert on_b.status_code == 200, on_b.text
    assert on_b.headers["x-tal-head"] == "discriminant"
    assert on_b.headers["x-cache"] == "miss"
    on_a = initialize(a, arch={**arch, "embed_dim": 48}, task="banded-shared")
    assert on_a.headers["x-tal-head"] == "discriminant"


def test_head_for_another_size_and_channels(
    a: httpx.Client, fresh_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    register(a, "banded-rgb", banded_npz())
    arch = {**TINY_VIT, "img_size": 48, "num_classes": CLASSES}  # 3 channels, 48 px
    response = initialize(a, arch=arch, task="banded-rgb")
    assert response.headers["x-tal-head"] == "discriminant"
    norm = json.loads(io.read_metadata(response.content)["tal.input_norm"])
    assert len(norm["mean"]) == len(norm["std"]) == 3
    images, labels = fresh_images
    rgb = resize_square(images, arch["img_size"]).expand(-1, 3, -1, -1)
    assert accuracy(response.content, arch, rgb, labels) >= FITTED_ACCURACY


def test_re_registering_with_a_vector_drops_the_images(a: httpx.Client) -> None:
    register(a, "banded-drop", banded_npz())
    assert initialize(a, arch=GREY_VIT, task="banded-drop").headers["x-tal-head"] == "discriminant"
    vector = a.post("/v1/tasks", json={"name": "banded-drop", "embedding": [0.1] * TASK_DIM})
    assert vector.status_code == 201 and vector.json()["support_images"] == 0
    assert initialize(a, arch=GREY_VIT, task="banded-drop").headers["x-tal-head"] == "predicted"
    refused = initialize(a, arch=GREY_VIT, task="banded-drop", head="discriminant")
    assert refused.status_code == 422
    assert "registered from labelled examples" in refused.json()["detail"]


def test_heads_that_cannot_be_fitted(a: httpx.Client) -> None:
    register(a, "banded-bad", banded_npz())
    cases = {
        "checkpoint task": dict(arch=GREY_VIT, task=TASK, head="discriminant"),
        "unconditioned": dict(arch=GREY_VIT, task=None, head="discriminant"),
        "class count": dict(arch=FIVE_CLASS_VIT, task="banded-bad", head="discriminant"),
        "gpt-2": dict(arch=TINY_GPT2, task="banded-bad", format="hf", head="discriminant"),
        "unknown head": dict(arch=GREY_VIT, task="banded-bad", head="fitted"),
    }
    details = {}
    for case, body in cases.items():
        response = initialize(a, **body)
        assert response.status_code == 422, (case, response.text)
        details[case] = response.json()["detail"]
    assert "registered from labelled examples" in details["checkpoint task"]
    assert "set num_classes to 3" in details["class count"]
    assert "conditions family 'vit' archs" in details["gpt-2"]
    assert "head" in details["unknown head"]
    auto = initialize(a, arch=FIVE_CLASS_VIT, task="banded-bad")
    assert auto.status_code == 200 and auto.headers["x-tal-head"] == "predicted"
    gpt2 = initialize(a, arch=TINY_GPT2, task="banded-bad", format="hf")
    assert gpt2.status_code == 422 and "registered from images" in gpt2.json()["detail"]


def test_upload_missing_a_class_keeps_no_images(a: httpx.Client) -> None:
    buffer = pyio.BytesIO()
    labels = np.array([0, 2, 0, 2, 0, 2])
    np.savez(buffer, images=np.zeros((6, 8, 8), np.uint8), labels=labels, num_classes=3)
    created = register(a, "gappy", buffer.getvalue())
    assert created["support_images"] == 0
    assert "[1]" in created["note"]
    response = initialize(a, arch=GREY_VIT, task="gappy")
    assert response.status_code == 200 and response.headers["x-tal-head"] == "predicted"


def test_without_redis_the_process_keeps_the_images(c: httpx.Client) -> None:
    register(c, "banded-local", banded_npz())
    response = initialize(c, arch=GREY_VIT, task="banded-local")
    assert response.status_code == 200, response.text
    assert response.headers["x-tal-head"] == "discriminant"


def test_head_fits_above_the_compute_limit(c: httpx.Client) -> None:
    register(c, "banded-costly", banded_npz())
    arch = {**GREY_VIT, "depth": 6, "embed_dim": 48}  # ~0.5 GFLOP over 48 images
    cost = head_fit_gflop(ViTSpec.model_validate(arch), PER_CLASS * CLASSES)
    assert cost > MAX_HEAD_FIT_GFLOP_C
    auto = initialize(c, arch=arch, task="banded-costly")
    assert auto.status_code == 200 and auto.headers["x-tal-head"] == "predicted"
    refused = initialize(c, arch=arch, task="banded-costly", head="discriminant")
    assert refused.status_code == 413
    assert "TAL_MAX_HEAD_FIT_GFLOP" in refused.json()["detail"]
