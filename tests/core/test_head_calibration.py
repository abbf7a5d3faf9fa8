"""Head calibration: the fitted scale, and applying it to real timm and transformers models."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.heads.calibration import calibrate_head, classifier_head, fit_scale

CLASSES = 6
SPEC = ViTSpec(
    depth=2, embed_dim=48, num_heads=3, img_size=32, patch_size=8, in_chans=1, num_classes=CLASSES
)


def _examples(count: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, 1, 32, 32, generator=generator)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    return images, labels


def test_a_right_head_keeps_its_scale():
    labels = torch.arange(CLASSES).repeat(5)
    logits = 4.0 * F.one_hot(labels, CLASSES).float()
    fit = fit_scale(logits, labels)
    assert fit.scale == 1.0
    assert fit.loss_after == pytest.approx(fit.loss_before)


def test_a_confidently_wrong_head_is_switched_off():
    labels = torch.arange(CLASSES).repeat(5)
    logits = 8.0 * F.one_hot((labels + 1) % CLASSES, CLASSES).float()
    fit = fit_scale(logits, labels)
    assert fit.scale == 0.0
    assert fit.loss_after == pytest.approx(math.log(CLASSES))
    assert fit.loss_before > 5.0


def test_the_fitted_scale_is_the_minimum_on_0_1():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, CLASSES, (200,), generator=generator)
    signal = 3.0 * F.one_hot(labels, CLASSES).float()
    logits = 4.0 * (signal + 3.0 * torch.randn(200, CLASSES, generator=generator))
    fit = fit_scale(logits, labels)
    dense = [F.cross_entropy(t * logits, labels).item() for t in torch.linspace(0, 1, 2001)]
    assert 0.0 < fit.scale < 1.0  # over-confident but informative: shrunk, not switched off
    assert fit.loss_after <= min(dense) + 1e-3
    assert fit.loss_after < fit.loss_before and fit.loss_after < math.log(CLASSES)
    # a positive scale keeps every argmax
    assert torch.equal((fit.scale * logits).argmax(1), logits.argmax(1))


@pytest.mark.parametrize("format", ["timm", "hf"])
def test_calibrate_head_scales_the_real_models_head_in_place(format):
    torch.manual_seed(0)
    model = build_model(SPEC, format).train()
    head = classifier_head(model)
    with torch.no_grad():
        head.weight.mul_(50.0)  # an over-confident head
        head.bias.normal_(0.0, 5.0)
    weight, bias = head.weight.clone(), head.bias.clone()
    images, labels = _examples()

    fit = calibrate_head(model, images, labels)

    assert model.training  # mode restored
    assert 0.0 <= fit.scale < 1.0 and fit.loss_after < fit.loss_before
    assert fit.loss_after <= math.log(CLASSES) + 1e-6
    assert torch.allclose(head.weight, fit.scale * weight)
    assert torch.allclose(head.bias, fit.scale * bias)
    model.eval()
    with torch.no_grad():
        output = model(images)
        logits = output if isinstance(output, torch.Tensor) else output.logits
    assert F.cross_entropy(logits, labels).item() == pytest.approx(fit.loss_after, abs=1e-4)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(TypeError, match="no linear classifier head"):
        classifier_head(nn.Sequential(nn.Flatten(), nn.ReLU()))
    model = build_model(SPEC, "timm")
    with pytest.raises(ValueError, match="at least one labelled example"):
        calibrate_head(model, torch.zeros(0, 1, 32, 32), torch.zeros(0, dtype=torch.long))
