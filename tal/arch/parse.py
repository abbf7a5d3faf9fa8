"""Architecture descriptions users send, turned into validated specs.

:func:`parse_arch` accepts a spec, a spec dict (with ``family``), a Hugging Face config dict
(with ``model_type``), a timm model name (``"vit_small_patch16_224"``) or a JSON string of any
of these, and refuses anything else with a message that names the field and what to fix.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from tal.arch.graph import build_graph
from tal.arch.specs import ARCH_ADAPTER, GPT2Spec, SpecError, SpecLike, ViTSpec


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: ``field.path: message``."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "spec"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def parse_arch(arch: SpecLike) -> ViTSpec | GPT2Spec:
    """Turn any accepted architecture description into a validated spec.

    Args:
        arch: a spec, a dict with ``family`` (``"vit"`` / ``"gpt2"``), a Hugging Face config
            dict (with ``model_type``), a timm model name, or a JSON string of any dict above.

    Raises:
        SpecError: with a message naming the offending field and what to fix.
    """
    if isinstance(arch, ViTSpec | GPT2Spec):
        return arch
    if isinstance(arch, str):
        text = arch.strip()
        if text.startswith("{"):
            try:
                arch = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SpecError(f"arch is not valid JSON: {exc}") from exc
        else:
            return spec_from_timm_name(text)
    if not isinstance(arch, dict):
        raise SpecError(
            f"arch must be a spec object, a dict or a string, not {type(arch).__name__}"
        )
    if "family" not in arch and "model_type" in arch:
        return spec_from_hf_config(arch)
    if "family" not in arch:
        raise SpecError(
            "arch needs a 'family' field ('vit' or 'gpt2'), a Hugging Face 'model_type', "
            "or must be a timm model name"
        )
    try:
        return ARCH_ADAPTER.validate_python(arch)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from exc


def _validated(
    cls: type[ViTSpec | GPT2Spec], fields: dict[str, Any], source: str
) -> ViTSpec | GPT2Spec:
    try:
        return cls(**fields)  # type: ignore[return-value]
    except ValidationError as exc:
        raise SpecError(f"{source}: {format_validation_error(exc)}") from exc


_HF_EXTRA_KEYS = frozenset({"model_type", "architectures", "transformers_version", "num_labels"})
GPT2_SEQUENCE_CLASSIFIER = "GPT2ForSequenceClassification"


def _gpt2_classes(config: dict[str, Any], num_labels: int) -> int:
    """A GPT-2 config's classifier width: its ``num_labels`` when its ``architectures`` names the
    sequence classifier or the dict gives ``num_labels``; otherwise 0, a language model
    (``id2label`` alone does not count: ``GPT2Config().to_dict()`` always holds two labels)."""
    classifier = GPT2_SEQUENCE_CLASSIFIER in (config.get("architectures") or ())
    return num_labels if classifier or "num_labels" in config else 0


def spec_from_hf_config(config: dict[str, Any]) -> ViTSpec | GPT2Spec:
    """Spec from a Hugging Face ``ViTConfig`` / ``GPT2Config`` dict (defaults as transformers')."""
    model_type = config.get("model_type")
    if model_type not in ("vit", "gpt2"):
        raise SpecError(
            f"Hugging Face model_type {model_type!r} is not supported; use 'vit' or 'gpt2'"
        )
    import transformers

    config_cls = transformers.ViTConfig if model_type == "vit" else transformers.GPT2Config
    known = set(config_cls().to_dict())
    unknown = sorted(set(config) - known - _HF_EXTRA_KEYS)
    if unknown:
        raise SpecError(f"unknown {config_cls.__name__} fields: {unknown}")
    try:
        hf = config_cls(**{k: v for k, v in config.items() if k != "model_type"})
    except (TypeError, ValueError) as exc:
        raise SpecError(f"invalid {config_cls.__name__}: {exc}") from exc
    if model_type == "gpt2":
        return _validated(
            GPT2Spec,
            dict(
                n_layer=hf.n_layer,
                n_embd=hf.n_embd,
                n_head=hf.n_head,
                n_inner=hf.n_inner,
                vocab_size=hf.vocab_size,
                n_positions=hf.n_positions,
                tie_word_embeddings=hf.tie_word_embeddings,
                layer_norm_epsilon=hf.layer_norm_epsilon,
                num_classes=_gpt2_classes(config, hf.num_labels),
            ),
            "GPT2Config",
        )
    if hf.hidden_size < 1:
        raise SpecError("ViTConfig: hidden_size must be positive")
    mlp_ratio = hf.intermediate_size / hf.hidden_size
    spec = _validated(
        ViTSpec,
        dict(
            depth=hf.num_hidden_layers,
            embed_dim=hf.hidden_size,
            num_heads=hf.num_attention_heads,
            mlp_ratio=mlp_ratio,
            patch_size=hf.patch_size,
            img_size=hf.image_size,
            in_chans=hf.num_channels,
            num_classes=hf.num_labels,
            qkv_bias=hf.qkv_bias,
            class_token=True,
            norm_eps=hf.layer_norm_eps,
        ),
        "ViTConfig",
    )
    if spec.mlp_hidden_dim != hf.intermediate_size:  # type: ignore[union-attr]
        raise SpecError(
            f"ViTConfig: intermediate_size {hf.intermediate_size} is not representable as "
            f"int(hidden_size * mlp_ratio); use a multiple-friendly size"
        )
    return spec


PLAIN_VIT_NAMES = ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"]


@lru_cache(maxsize=64)
def spec_from_timm_name(name: str) -> ViTSpec:
    """Spec from a timm model name, read off the model built on the ``meta`` device (no memory).

    Only plain ViTs are accepted: variants with register tokens, layer scale, qk-norm, or other
    extra parameters are refused with the reason.
    """
    import timm
    import torch
    from timm.models.vision_transformer import VisionTransformer

    if name not in timm.list_models():
        close = [m for m in timm.list_models("vit_*") if name.split("_")[0] in m][:5]
        raise SpecError(
            f"unknown timm model {name!r}; plain ViT names look like {close or PLAIN_VIT_NAMES}"
        )
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    if not isinstance(model, VisionTransformer):
        raise SpecError(f"timm model {name!r} is a {type(model).__name__}, not a VisionTransformer")
    block = model.blocks[0]
    img_size, patch_size = model.patch_embed.img_size, model.patch_embed.patch_size
    if img_size[0] != img_size[1] or patch_size[0] != patch_size[1]:
        raise SpecError(f"timm model {name!r} has non-square images or patches")
    spec = _validated(
        ViTSpec,
        dict(
            depth=len(model.blocks),
            embed_dim=model.embed_dim,
            num_heads=block.attn.num_heads,
            mlp_ratio=block.mlp.fc1.out_features / model.embed_dim,
            patch_size=patch_size[0],
            img_size=img_size[0],
            in_chans=model.patch_embed.proj.in_channels,
            num_classes=model.num_classes,
            qkv_bias=block.attn.qkv.bias is not None,
            class_token=model.cls_token is not None,
            norm_eps=block.norm1.eps,
        ),
        f"timm model {name!r}",
    )
    ours = {p.name: p.stored_shape for p in build_graph(spec).params}
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if ours != theirs:
        extra = sorted(set(theirs) - set(ours))[:5]
        raise SpecError(
            f"timm model {name!r} has parameters a plain ViT spec does not describe "
            f"(e.g. {extra or 'differently shaped tensors'}); it is not supported"
        )
    return spec  # type: ignore[return-value]
