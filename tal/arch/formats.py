"""Output layouts: which tensor names and shapes a predicted state dict uses.

* ``timm``: timm ``VisionTransformer`` names (the canonical ViT slot names).
* ``hf``: Hugging Face ``ViTForImageClassification`` / ``GPT2LMHeadModel`` names. A ViT's fused
  ``qkv`` matrix is split by rows into ``q_proj`` / ``k_proj`` / ``v_proj`` (no copy: the
  decoder writes each row block into its own tensor); a tied GPT-2 ``lm_head.weight`` is an alias
  of ``transformer.wte.weight``.
* ``hf-sequence-classification``: Hugging Face ``GPT2ForSequenceClassification`` names (GPT-2
  only): the transformer and ``score.weight`` ``(spec.num_classes, n_embd)``, no LM head.

Names follow transformers 5.x.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

import torch

from tal.arch.graph import LM_HEAD, SEQUENCE_HEAD, ComputationalGraph, ParamSlot, build_graph
from tal.arch.specs import GPT2Spec, SpecError, ViTSpec

HF_SEQUENCE_CLASSIFICATION = "hf-sequence-classification"
OutputFormat = Literal["timm", "hf", "hf-sequence-classification"]
FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
OutputDType = Literal["float32", "float16", "bfloat16"]
DTYPES: dict[OutputDType, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class ExportPiece:
    """Rows ``[row_start, row_stop)`` of a slot's logical tensor, saved under ``name``."""

    name: str
    row_start: int
    row_stop: int
    stored_shape: tuple[int, ...]


@dataclass(frozen=True)
class ExportPlan:
    """For each slot, the pieces it is written to; plus names that alias another tensor."""

    pieces: tuple[tuple[ParamSlot, tuple[ExportPiece, ...]], ...]
    aliases: tuple[tuple[str, str], ...]  # (alias name, name of the tensor it shares)

    @property
    def names(self) -> list[str]:
        names = [piece.name for _, pieces in self.pieces for piece in pieces]
        return names + [alias for alias, _ in self.aliases]


_VIT_TO_HF = [
    (r"^cls_token$", "vit.embeddings.cls_token"),
    (r"^pos_embed$", "vit.embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "vit.embeddings.patch_embeddings.projection."),
    (r"^blocks\.(\d+)\.norm1\.", r"vit.layers.\1.layernorm_before."),
    (r"^blocks\.(\d+)\.norm2\.", r"vit.layers.\1.layernorm_after."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"vit.layers.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"vit.layers.\1.attention.{}_proj."),
    (r"^blocks\.(\d+)\.mlp\.", r"vit.layers.\1.mlp."),
    (r"^norm\.", "vit.layernorm."),
    (r"^head\.", "classifier."),
]
_QKV = ("q", "k", "v")


def _whole(slot: ParamSlot, name: str) -> tuple[ExportPiece, ...]:
    return (ExportPiece(name, 0, slot.rows, slot.stored_shape),)


def _vit_hf_pieces(slot: ParamSlot) -> tuple[ExportPiece, ...]:
    for pattern, replacement in _VIT_TO_HF:
        if re.search(pattern, slot.name):
            name = re.sub(pattern, replacement, slot.name)
            break
    else:  # pragma: no cover - every ViT slot matches a rule
        raise KeyError(slot.name)
    if "{}" not in name:
        return _whole(slot, name)
    width = slot.rows // len(_QKV)
    return tuple(
        ExportPiece(name.format(part), i * width, (i + 1) * width, (width, *slot.stored_shape[1:]))
        for i, part in enumerate(_QKV)
    )


def check_format(spec: ViTSpec | GPT2Spec, format: str) -> OutputFormat:
    """Validates that ``format`` exists and the spec can be written in it."""
    if format not in FORMATS:
        raise SpecError(f"format must be one of {list(FORMATS)}, not {format!r}")
    if isinstance(spec, GPT2Spec) and format == "timm":
        raise SpecError(
            "GPT-2 weights are available in format 'hf' (GPT2LMHeadModel) or "
            f"'{HF_SEQUENCE_CLASSIFICATION}' (GPT2ForSequenceClassification), not 'timm'"
        )
    if isinstance(spec, GPT2Spec) and format == HF_SEQUENCE_CLASSIFICATION and not spec.num_classes:
        raise SpecError(
            f"format '{HF_SEQUENCE_CLASSIFICATION}' needs the spec's num_classes (the width of "
            "GPT2ForSequenceClassification's score head, its config's num_labels) >= 1"
        )
    if isinstance(spec, ViTSpec) and format == HF_SEQUENCE_CLASSIFICATION:
        raise SpecError(
            f"format '{HF_SEQUENCE_CLASSIFICATION}' is for GPT-2; a ViT takes 'timm' or 'hf'"
        )
    if isinstance(spec, ViTSpec) and format == "hf" and not spec.class_token:
        raise SpecError("format 'hf' needs class_token=true: Hugging Face ViT always has one")
    return format  # type: ignore[return-value]


@lru_cache(maxsize=256)
def export_plan(spec: ViTSpec | GPT2Spec, format: OutputFormat) -> ExportPlan:
    """Names, row ranges and stored shapes for every output tensor of ``spec`` in ``format``."""
    check_format(spec, format)
    graph: ComputationalGraph = build_graph(spec)
    if isinstance(spec, ViTSpec) and format == "hf":
        pieces = tuple((slot, _vit_hf_pieces(slot)) for slot in graph.params)
    else:
        left_out = f"{LM_HEAD}." if format == HF_SEQUENCE_CLASSIFICATION else f"{SEQUENCE_HEAD}."
        pieces = tuple(
            (slot, _whole(slot, slot.name))
            for slot in graph.params
            if not (isinstance(spec, GPT2Spec) and slot.name.startswith(left_out))
        )
    aliases: tuple[tuple[str, str], ...] = ()
    if isinstance(spec, GPT2Spec) and spec.tie_word_embeddings and format == "hf":
        aliases = ((f"{LM_HEAD}.weight", "transformer.wte.weight"),)
    return ExportPlan(pieces, aliases)


def format_num_params(spec: ViTSpec | GPT2Spec, format: OutputFormat) -> int:
    """Trainable parameters of the model ``format`` loads (tied tensors counted once)."""
    return sum(
        math.prod(piece.stored_shape) for _, ps in export_plan(spec, format).pieces for piece in ps
    )


def parse_dtype(name: str) -> torch.dtype:
    """The torch dtype of an output dtype name; ValueError naming the choices otherwise."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, not {name!r}")
    return DTYPES[name]  # type: ignore[index]
