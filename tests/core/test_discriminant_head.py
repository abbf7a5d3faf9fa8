"""The discriminant head: fitted on a real timm or transformers model's features, written into
its linear head so the model itself classifies as the fitted LDA does."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.heads.calibration import classifier_head, head_features
from tal.heads.discriminant import fit_discriminant_head

IMAGE_SHAPE = (1, 32, 32)
NOISE = 0.7  # per-pixel noise around each class's template (templates have unit variance)


def _spec(classes: int) -> ViTSpec:
    return ViTSpec(
        depth=2, embed_dim=48, num_heads=3, img_size=32, patch_size=8, in_chans=1,
        num_classes=classes,
    )  # fmt: skip


def _class_images(
    classes: int, per_class: int, seed: int, templates: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(classes * per_class, 1, 32, 32)``: a fixed random template per class plus
    noise; returns images, labels and the templates."""
    generator = torch.Generator().manual_seed(seed)
    if templates is None:
        templates = torch.randn(classes, *IMAGE_SHAPE, generator=generator)
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = templates[labels] + NOISE * torch.randn(len(labels), *IMAGE_SHAPE, generator=generator)
    return images, labels, templates


def _model_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        output = model(images)
        logits = output if isinstance(output, torch.Tensor) else output.logits
    return float((logits.argmax(1) == labels).float().mean())


@pytest.mark.parametrize("format", ["timm", "hf"])
@pytest.mark.parametrize("classes", [2, 6])
def test_the_written_head_classifies_new_images_of_the_classes(format, classes):
    torch.manual_seed(0)
    model = build_model(_spec(classes), format)
    support, support_labels, templates = _class_images(classes, per_class=12, seed=1)
    query, query_labels, _ = _class_images(classes, per_class=20, seed=2, templates=templates)
    body_before = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if "classifier" not in k and "head" not in k
    }
    chance = 1.0 / classes
    assert _model_accuracy(model, query, query_labels) < chance + 0.25  # the random head
    model.train()

    fit = fit_discriminant_head(model, support, support_labels)

    assert model.training  # mode restored
    assert (fit.examples, fit.classes) == (len(support_labels), classes)
    # the model's own head reproduces the fitted classifier on the support images
    assert _model_accuracy(model, support, support_labels) == pytest.approx(fit.support_accuracy)
    assert _model_accuracy(model, query, query_labels) > 0.9
    for key, value in model.state_dict().items():
        if key in body_before:
            assert torch.equal(value, body_before[key]), key


def test_bad_inputs_say_what_is_wrong():
    model = build_model(_spec(4), "timm")
    images, labels, _ = _class_images(4, per_class=3, seed=0)
    with pytest.raises(ValueError, match="none for classes \\[3\\]"):
        fit_discriminant_head(model, images[labels < 3], labels[labels < 3])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        fit_discriminant_head(model, images, labels + 1)
    with pytest.raises(ValueError, match=r"shrinkage must lie in \[0, 1\]"):
        fit_discriminant_head(model, images, labels, shrinkage=1.5)
    with pytest.raises(ValueError, match="at least 2 labelled examples"):
        fit_discriminant_head(model, images[:1], labels[:1])
    with pytest.raises(TypeError, match="no linear classifier head"):
        fit_discriminant_head(nn.Sequential(nn.Flatten()), images, labels)
    classifier_head(model).bias = None
    with pytest.raises(TypeError, match="has no bias"):
        fit_discriminant_head(model, images, labels)


def test_full_shrinkage_is_the_nearest_class_mean_classifier():
    classes = 5
    torch.manual_seed(0)
    model = build_model(_spec(classes), "timm")
    support, support_labels, templates = _class_images(classes, per_class=8, seed=3)
    # noisier queries than the support, so that some land nearer another class's mean
    query_labels = torch.arange(classes).repeat(30)
    query = templates[query_labels] + 4 * NOISE * torch.randn(
        len(query_labels), *IMAGE_SHAPE, generator=torch.Generator().manual_seed(4)
    )
    head = classifier_head(model)
    features = head_features(model, head, support)
    means = torch.stack([features[support_labels == c].mean(0) for c in range(classes)])

    fit_discriminant_head(model, support, support_labels, shrinkage=1.0)

    nearest = torch.cdist(head_features(model, head, query), means).argmin(1)
    model.eval()
    with torch.no_grad():
        predicted = model(query).argmax(1)
    assert torch.equal(predicted, nearest)
    errors = int((nearest != query_labels).sum())
    assert 0 < errors < len(query_labels) / 2  # mostly right, yet not trivially


def test_a_head_that_cannot_generalise_is_scaled_towards_uniform():
    """Noise images with random labels: LDA separates its own examples, but out of fold it is
    at chance, so the written head is shrunk and new images get about the uniform loss."""
    classes = 6
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(120, *IMAGE_SHAPE, generator=generator)
    labels = torch.arange(classes).repeat(20)
    fresh = torch.randn(300, *IMAGE_SHAPE, generator=generator)
    fresh_labels = torch.randint(0, classes, (300,), generator=generator)
    torch.manual_seed(0)
    model = build_model(_spec(classes), "timm")

    fit = fit_discriminant_head(model, images, labels)

    assert fit.folds == 5
    assert fit.support_accuracy > 0.5 > fit.cross_validated_accuracy
    assert fit.scale < 0.5
    model.eval()
    with torch.no_grad():
        loss = F.cross_entropy(model(fresh), fresh_labels).item()
    assert loss < math.log(classes) + 0.1


def test_one_example_of_a_class_leaves_nothing_to_calibrate_on():
    classes = 3
    images, labels, _ = _class_images(classes, per_class=4, seed=6)
    keep = torch.cat([torch.tensor([0]), (labels > 0).nonzero().squeeze(1)])  # class 0 once
    model = build_model(_spec(classes), "timm")
    fit = fit_discriminant_head(model, images[keep], labels[keep])
    assert (fit.folds, fit.scale) == (0, 1.0) and math.isnan(fit.cross_validated_accuracy)
