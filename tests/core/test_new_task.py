"""Choosing a new task's images: every class gets its share of the first ones used."""

import pytest
import torch

from tal.learngene import Learngene
from tal.new_task import balanced_support, predict_for_task_data
from tal.tasks import TaskData


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
    with pytest.raises(ValueError, match="need a ViT spec"):
        predict_for_task_data(learngene, gpt2, data)
    with pytest.raises(ValueError, match="examples must be at least 1"):
        predict_for_task_data(learngene, {**spec, "num_classes": 3}, data, examples=0)
