"""Real target models built from specs (timm and Hugging Face transformers).

Used to load predicted weights, to train through them (``torch.func.functional_call``) and in
tests. Imports of timm / transformers are local: they are heavy and optional for prediction.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION, OutputFormat, check_format
from tal.arch.specs import GPT2Spec, ViTSpec


def gpt2_pad_token_id(spec: GPT2Spec) -> int:
    """The id GPT2ForSequenceClassification treats as padding (its score reads the last other
    token): the last id, GPT-2's ``<|endoftext|>`` (50256) for its vocabulary, which the text
    tasks pad with."""
    return spec.vocab_size - 1


def hf_config(spec: ViTSpec | GPT2Spec, format: OutputFormat = "hf"):
    """The transformers config (``ViTConfig`` / ``GPT2Config``) equivalent to ``spec``; for
    ``format="hf-sequence-classification"`` with ``num_labels`` and ``pad_token_id`` set."""
    import transformers

    if isinstance(spec, GPT2Spec):
        classifier = (
            {"num_labels": spec.num_classes, "pad_token_id": gpt2_pad_token_id(spec)}
            if format == HF_SEQUENCE_CLASSIFICATION
            else {}
        )
        return transformers.GPT2Config(
            **classifier,
            n_layer=spec.n_layer,
            n_embd=spec.n_embd,
            n_head=spec.n_head,
            n_inner=spec.n_inner,
            vocab_size=spec.vocab_size,
            n_positions=spec.n_positions,
            tie_word_embeddings=spec.tie_word_embeddings,
            layer_norm_epsilon=spec.layer_norm_epsilon,
            bos_token_id=spec.vocab_size - 1,
            eos_token_id=spec.vocab_size - 1,
        )
    return transformers.ViTConfig(
        hidden_size=spec.embed_dim,
        num_hidden_layers=spec.depth,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.mlp_hidden_dim,
        image_size=spec.img_size,
        patch_size=spec.patch_size,
        num_channels=spec.in_chans,
        qkv_bias=spec.qkv_bias,
        layer_norm_eps=spec.norm_eps,
        num_labels=spec.num_classes,
    )


def build_model(
    spec: ViTSpec | GPT2Spec, format: OutputFormat = "timm", device: str | torch.device = "cpu"
) -> nn.Module:
    """The real model of ``spec``: timm ``VisionTransformer`` (``format="timm"``), Hugging Face
    ``ViTForImageClassification`` / ``GPT2LMHeadModel`` (``format="hf"``) or
    ``GPT2ForSequenceClassification`` (``"hf-sequence-classification"``), with its own random
    init. On ``device="meta"`` nothing is allocated.
    """
    check_format(spec, format)
    context = torch.device(device) if str(device) == "meta" else nullcontext()
    with context:
        if format == "timm":
            from timm.models.vision_transformer import VisionTransformer

            assert isinstance(spec, ViTSpec)
            model: nn.Module = VisionTransformer(
                img_size=spec.img_size,
                patch_size=spec.patch_size,
                in_chans=spec.in_chans,
                num_classes=spec.num_classes,
                embed_dim=spec.embed_dim,
                depth=spec.depth,
                num_heads=spec.num_heads,
                mlp_ratio=spec.mlp_ratio,
                qkv_bias=spec.qkv_bias,
                class_token=spec.class_token,
                global_pool="token" if spec.class_token else "avg",
                norm_layer=_layer_norm(spec.norm_eps),
            )
        else:
            import transformers

            config = hf_config(spec, format)
            if format == HF_SEQUENCE_CLASSIFICATION:
                model_cls = transformers.GPT2ForSequenceClassification
            elif isinstance(spec, GPT2Spec):
                model_cls = transformers.GPT2LMHeadModel
            else:
                model_cls = transformers.ViTForImageClassification
            model = model_cls(config)
    return model if str(device) == "meta" else model.to(device)


def _layer_norm(eps: float) -> type[nn.LayerNorm]:
    class LayerNorm(nn.LayerNorm):
        def __init__(self, normalized_shape: int, **kwargs: object) -> None:
            super().__init__(normalized_shape, eps=eps, **kwargs)  # type: ignore[arg-type]

    return LayerNorm
