"""A new task's images: every class gets its share of the first ones used; they travel as a
safetensors blob and a head fitted to them replaces only the classifier."""

import json

import pytest
import torch

from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.blobs import io
from tal.checkpoints.learngene import Learngene
from tal.heads.support import (
    balanced_support,
    fit_head_to_support,
    missing_classes,
    norm_metadata,
    support_for_spec,
    support_from_bytes,
    support_to_bytes,
    task_support,
)
from tal.predict import predict_for_task_data
from tal.tasks import NormStats, TaskData

SEPARATED = 0.9  # support accuracy of a head fitted to images any backbone tells apart


def test_balanced_support_takes_the_classes_in_turn():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # sorted by class, as an image folder loads
    assert balanced_support(labels, 4).tolist() == [0, 3, 5, 1]
    assert balanced_support(labels, 100).tolist() == [0, 3, 5, 1, 4, 2]
    assert balanced_support(torch.tensor([2, 0, 2, 0]), 3).tolist() == [1, 0, 3]


def test_a_spec_that_does_not_fit_the_data_is_refused():
    data = TaskData(torch.zeros(4, 1, 32, 32), torch.tensor([0, 1, 2, 0]), num_classes=3)
    spec = {"family": "vit", "depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 32,
            "patch_size": 8, "in_chans": 1, "num_classes": 4}  # fmt: skip
    learngene = Learngene.fresh()
    with pytest.raises(ValueError, match="set num_classes to 3"):
        predict_for_task_data(learngene, spec, data)
    gpt2 = {"family": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 64}
    with pytest.raises(ValueError, match="images fit a vit arch's head"):
        predict_for_task_data(learngene, gpt2, data)
    with pytest.raises(ValueError, match="examples must be at least 1"):
        predict_for_task_data(learngene, {**spec, "num_classes": 3}, data, examples=0)


def _separable_task(per_class: int = 6, classes: int = 3) -> TaskData:
    """Images whose class is the row band that is lit, so any backbone separates them."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(per_class * classes, 1, 32, 32, generator=generator) * 0.1
    labels = torch.arange(classes).repeat(per_class)
    band = 32 // classes
    for index, label in enumerate(labels.tolist()):
        images[index, :, label * band : (label + 1) * band] += 3.0
    return TaskData(images, labels, num_classes=classes, norm=NormStats((0.25,), (0.5,)))


def test_support_round_trips_through_bytes():
    support = task_support(_separable_task(), examples=9)
    assert torch.bincount(support.labels).tolist() == [3, 3, 3]
    back = support_from_bytes(support_to_bytes(support))
    assert torch.equal(back.images, support.images)
    assert torch.equal(back.labels, support.labels)
    assert back.num_classes == 3
    assert back.norm == support.norm
    assert json.loads(norm_metadata(back.norm)) == {"mean": [0.25], "std": [0.5]}
    with pytest.raises(ValueError, match="not a task support blob"):
        support_from_bytes(b"junk")
    with pytest.raises(ValueError, match="not a task support blob"):
        support_from_bytes(io.to_bytes({"images": torch.zeros(1)}))


def test_missing_classes_are_named_in_order():
    data = TaskData(torch.zeros(3, 1, 8, 8), torch.tensor([0, 2, 0]), num_classes=5)
    assert missing_classes(data) == [1, 3, 4]
    assert missing_classes(_separable_task()) == []


def test_fitted_head_replaces_only_the_head_and_separates_the_support():
    spec = ViTSpec(depth=1, embed_dim=32, num_heads=2, img_size=32, patch_size=8, in_chans=1,
                   num_classes=3)  # fmt: skip
    learngene = Learngene.fresh()
    predicted = learngene.predict(spec, None, "timm", "float32")
    support = _separable_task()
    fitted, fit, norm = fit_head_to_support(spec, predicted, support, "timm")
    assert norm == support.norm  # the images already had the spec's size
    changed = {name for name in predicted if not torch.equal(predicted[name], fitted[name])}
    assert changed == {"head.weight", "head.bias"}
    model = build_model(spec, "timm")
    model.load_state_dict(fitted)
    with torch.no_grad():
        accuracy = (model(support.images).argmax(1) == support.labels).float().mean()
    assert accuracy >= SEPARATED and fit.support_accuracy >= SEPARATED  # chance is 1/3
    with pytest.raises(ValueError, match="set num_classes to 3"):
        fit_head_to_support(spec.model_copy(update={"num_classes": 4}), predicted, support, "timm")


def test_support_is_brought_to_the_spec_size_and_channels():
    support = _separable_task()
    spec = ViTSpec(depth=1, embed_dim=32, num_heads=2, img_size=48, patch_size=8, in_chans=3,
                   num_classes=3)  # fmt: skip
    moved = support_for_spec(support, spec)
    assert moved.images.shape == (18, 3, 48, 48)
    assert moved.norm.channels == 3
    per_channel = moved.images.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-4)  # its own statistics
    assert torch.equal(moved.labels, support.labels)
    predicted = Learngene.fresh().predict(spec, None, "timm", "float32")
    _, fit, norm = fit_head_to_support(spec, predicted, support, "timm")
    assert norm == moved.norm
    assert fit.support_accuracy >= SEPARATED  # chance is 1/3
