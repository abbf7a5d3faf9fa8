"""The model folders timm and Hugging Face load from disk: ``config.json`` + ``model.safetensors``.

* Hugging Face: ``transformers.AutoModel*.from_pretrained(DIR)`` (and the concrete classes) read
  the model's config (``ViTConfig`` / ``GPT2Config`` with ``architectures``) and the weights.
* timm: ``timm.create_model("local-dir:DIR", pretrained=True)`` reads timm's hub config
  (``architecture``: a registered plain ViT; ``model_args``: what makes it this spec;
  ``pretrained_cfg``: input size and, when the weights carry a fitted head, the input
  normalisation it expects) and the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tal.arch.formats import OutputFormat, check_format
from tal.arch.specs import GPT2Spec, SpecError, ViTSpec
from tal.arch.target_models import hf_config
from tal.blobs.io import write_atomic

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TIMM_ARCHITECTURE = "vit_base_patch16_224"  # a registered plain ViT; model_args make it the spec
TIMM_NORM_EPS = 1e-6  # timm's ViT LayerNorm epsilon, the only one its model_args can express
IMAGENET_DEFAULT_NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # timm's ViT default
HF_ARCHITECTURES = {"vit": "ViTForImageClassification", "gpt2": "GPT2LMHeadModel"}


def timm_config(spec: ViTSpec, input_norm: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """timm's hub ``config.json`` for ``spec``; ``input_norm`` (``{"mean": [...], "std":
    [...]}`` per channel) becomes the pretrained config's normalisation.

    Raises:
        SpecError: timm's config cannot express the spec (a LayerNorm epsilon other than 1e-6).
    """
    if spec.norm_eps != TIMM_NORM_EPS:
        raise SpecError(
            f"a timm model folder needs norm_eps={TIMM_NORM_EPS} (timm's ViT), not "
            f"{spec.norm_eps}; use format 'hf' or write the weights file alone"
        )
    norm = input_norm or {k: list(v[: spec.in_chans]) for k, v in IMAGENET_DEFAULT_NORM.items()}
    if len(norm["mean"]) != spec.in_chans:
        norm = {k: [v[0]] * spec.in_chans for k, v in norm.items()}
    return {
        "architecture": TIMM_ARCHITECTURE,
        "num_classes": spec.num_classes,
        "num_features": spec.embed_dim,
        "global_pool": "token" if spec.class_token else "avg",
        "model_args": {
            "img_size": spec.img_size,
            "patch_size": spec.patch_size,
            "in_chans": spec.in_chans,
            "embed_dim": spec.embed_dim,
            "depth": spec.depth,
            "num_heads": spec.num_heads,
            "mlp_ratio": spec.mlp_ratio,
            "qkv_bias": spec.qkv_bias,
            "class_token": spec.class_token,
            "global_pool": "token" if spec.class_token else "avg",
        },
        "pretrained_cfg": {
            "input_size": [spec.in_chans, spec.img_size, spec.img_size],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "mean": norm["mean"],
            "std": norm["std"],
            "num_classes": spec.num_classes,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }


def model_config(
    spec: ViTSpec | GPT2Spec, format: OutputFormat, input_norm: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """The ``config.json`` that loads weights of ``spec`` in ``format`` from a folder."""
    check_format(spec, format)
    if format == "timm":
        assert isinstance(spec, ViTSpec)  # check_format: timm holds ViTs only
        return timm_config(spec, input_norm)
    config = hf_config(spec).to_dict()
    config["architectures"] = [HF_ARCHITECTURES[spec.family]]
    return config


def config_json(
    spec: ViTSpec | GPT2Spec,
    format: OutputFormat,
    input_norm: dict[str, list[float]] | None = None,
) -> bytes:
    """``config.json`` bytes for weights of ``spec`` in ``format`` (a fitted head's input
    normalisation, the blob's ``tal.input_norm``, goes into timm's pretrained config)."""
    config = model_config(spec, format, input_norm)
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def write_model_folder(
    folder: str | Path,
    spec: ViTSpec | GPT2Spec,
    format: OutputFormat,
    blob: bytes | memoryview,
    input_norm: dict[str, list[float]] | None = None,
) -> Path:
    """Writes ``config.json`` and the safetensors ``blob`` as ``model.safetensors`` into
    ``folder`` (created if missing; each file written atomically); returns the weights' path."""
    folder = Path(folder)
    write_atomic(folder / CONFIG_FILE, config_json(spec, format, input_norm))
    write_atomic(folder / WEIGHTS_FILE, blob)
    return folder / WEIGHTS_FILE
