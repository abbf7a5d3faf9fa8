"""Which head a request gets (tal.heads.choice)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tal.arch.specs import GPT2Spec, ViTSpec
from tal.heads.choice import HEAD_CHOICES, HeadUnavailable, choose_head
from tal.heads.support import head_fit_gflop


@dataclass(frozen=True)
class Support:
    classes: int
    examples: int
    modality: str = "image"


def test_choose_head() -> None:
    vit = ViTSpec(depth=1, embed_dim=32, num_heads=2, num_classes=3)
    gpt2 = GPT2Spec(n_layer=1, n_embd=32, n_head=2, vocab_size=64)
    support = Support(classes=3, examples=30)
    cost = head_fit_gflop(vit, support.examples)
    assert cost == 2 * vit.num_params() * vit.num_tokens * 30 / 1e9

    def choose(requested: str, spec: object = vit, ref: object = support, limit=cost) -> str:
        return choose_head(requested, "t", spec, ref, limit)  # type: ignore[arg-type]

    assert HEAD_CHOICES == ("auto", "predicted", "discriminant")
    assert choose("auto") == choose("discriminant") == "discriminant"
    assert choose("predicted") == "predicted"
    four_classes = vit.model_copy(update={"num_classes": 4})
    for spec, ref in ((vit, None), (gpt2, support), (four_classes, support)):
        assert choose("auto", spec, ref) == "predicted"
        with pytest.raises(HeadUnavailable) as refused:
            choose("discriminant", spec, ref)
        assert not refused.value.too_costly
    below = cost * 0.99  # the server's limit just under this fit's forward pass
    assert choose("auto", limit=below) == "predicted"
    with pytest.raises(HeadUnavailable, match="TAL_MAX_HEAD_FIT_GFLOP") as refused:
        choose("discriminant", limit=below)
    assert refused.value.too_costly
