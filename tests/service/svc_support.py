"""Constants and helpers shared by the service tests (imported by name: unique module)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import torch

MODEL = "tal-test"
TASK = "t"
USER_KEY = "user-key-123"
ADMIN_KEY = "admin-key-456"
MAX_PARAMS_A = 40_000_000
MAX_PARAMS_C = 200_000
MAX_HEAD_FIT_GFLOP_C = 0.1  # fits heads for TINY_VIT over a few dozen images, not much more
ANCESTRY_SPEC = dict(
    depth=1, embed_dim=192, num_heads=3, img_size=32, patch_size=4, in_chans=1, num_classes=10
)
TINY_VIT = {
    "family": "vit",
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
    "img_size": 32,
    "patch_size": 8,
    "num_classes": 10,
}
STORE_SEED = 0
TEXT_ANCESTRY_SPEC = dict(
    n_layer=1, n_embd=32, n_head=2, vocab_size=50257, n_positions=64, num_classes=4
)
TINY_GPT2 = {
    "family": "gpt2",
    "n_layer": 2,
    "n_embd": 32,
    "n_head": 2,
    "vocab_size": 100,
    "n_positions": 64,
}


def make_store(root: Path) -> Path:
    """``tal-test/1`` (task ``t``, ancestry and text ancestry), ``tal-test/2`` (no ancestry),
    and a corrupt ``tal-test/0-corrupt`` (sorted before 1, so ``latest`` is 2)."""
    from tal.arch.specs import GPT2Spec, ViTSpec
    from tal.checkpoints.ancestry import Ancestry
    from tal.checkpoints.learngene import Learngene
    from tal.checkpoints.text_ancestry import TextAncestry

    torch.manual_seed(STORE_SEED)  # the ancestries' random weights: the same store every run
    learngene = Learngene.fresh()
    learngene.add_task(TASK, torch.linspace(-1, 1, learngene.hypernet.config.encoder.task_dim))
    learngene.save(MODEL, "2", root=root)
    learngene.ancestry = Ancestry.create(ViTSpec(**ANCESTRY_SPEC), {TASK: (0, 10)})
    text_ancestry = TextAncestry.create(GPT2Spec(**TEXT_ANCESTRY_SPEC), {})
    text_ancestry.freeze(learngene.hypernet.config.decoder.basis_size)
    learngene.text_ancestry = text_ancestry
    good = learngene.save(MODEL, "1", root=root)
    corrupt = root / MODEL / "0-corrupt"
    shutil.copytree(good, corrupt)
    weights = corrupt / "hypernet.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return root


def metric_value(client: httpx.Client, name: str, /, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
