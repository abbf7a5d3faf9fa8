"""Architecture specs: strict, hashable descriptions of the transformers we predict weights for.

Two families share one interface, told apart by the ``family`` field:

* :class:`ViTSpec` — a timm ``VisionTransformer`` / Hugging Face ``ViTForImageClassification``.
* :class:`GPT2Spec` — a Hugging Face ``GPT2LMHeadModel``.

:func:`parse_arch` also accepts a timm model name (``"vit_small_patch16_224"``) or a Hugging
Face config dict (``{"model_type": "vit", ...}``). Every spec has a canonical JSON form, a
stable hash (the cache key) and an exact parameter count computed without allocating tensors.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

MAX_DEPTH = 128
MAX_WIDTH = 16_384
MAX_HEADS = 256
MAX_IMG_SIZE = 4_096
MAX_CHANNELS = 64
MAX_TOKENS = 16_384
MAX_CLASSES = 100_000
MAX_VOCAB = 1_000_000
MAX_POSITIONS = 131_072
MAX_MLP_RATIO = 16.0
HASH_HEX_CHARS = 32


class SpecError(ValueError):
    """An architecture description that cannot be turned into a valid spec."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    def canonical_json(self) -> str:
        """Sorted-key compact JSON with every default resolved: equal specs give equal strings."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        """Stable hex digest of :meth:`canonical_json` (cache key)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:HASH_HEX_CHARS]

    def num_params(self) -> int:
        """Exact number of trainable parameters of the real model (tied weights counted once)."""
        from tal.graph import build_graph  # local import: graph depends on specs

        return build_graph(self).num_params


class ViTSpec(_Spec):
    """A Vision Transformer (timm ``VisionTransformer`` layout, pre-norm, GELU MLP).

    ``mlp_hidden_dim`` is ``int(embed_dim * mlp_ratio)`` exactly as timm computes it. Without a
    class token the model average-pools the patch tokens (timm ``global_pool="avg"``).
    """

    family: Literal["vit"] = "vit"
    depth: int = Field(12, ge=1, le=MAX_DEPTH, description="number of transformer blocks")
    embed_dim: int = Field(768, ge=1, le=MAX_WIDTH, description="token width")
    num_heads: int = Field(12, ge=1, le=MAX_HEADS, description="attention heads; divide embed_dim")
    mlp_ratio: float = Field(4.0, gt=0, le=MAX_MLP_RATIO, description="MLP hidden / embed_dim")
    patch_size: int = Field(16, ge=1, le=MAX_IMG_SIZE)
    img_size: int = Field(224, ge=1, le=MAX_IMG_SIZE, description="divisible by patch_size")
    in_chans: int = Field(3, ge=1, le=MAX_CHANNELS)
    num_classes: int = Field(1000, ge=0, le=MAX_CLASSES, description="0 = no classifier head")
    qkv_bias: bool = True
    class_token: bool = True
    norm_eps: float = Field(1e-6, gt=0, le=1e-1)

    @model_validator(mode="after")
    def _check_consistency(self) -> ViTSpec:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must divide embed_dim ({self.embed_dim}); "
                f"try num_heads in {_divisors(self.embed_dim, MAX_HEADS)[-6:]}"
            )
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size ({self.img_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.mlp_hidden_dim < 1:
            raise ValueError(f"embed_dim * mlp_ratio = {self.embed_dim * self.mlp_ratio} < 1")
        if self.num_tokens > MAX_TOKENS:
            raise ValueError(
                f"(img_size / patch_size)^2 = {self.num_patches} patches exceeds the limit of "
                f"{MAX_TOKENS} tokens; use a larger patch_size or a smaller img_size"
            )
        return self

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + int(self.class_token)


class GPT2Spec(_Spec):
    """A GPT-2 language model (Hugging Face ``GPT2LMHeadModel`` layout).

    ``n_inner`` defaults to ``4 * n_embd`` and is stored resolved, so both spellings hash alike.
    """

    family: Literal["gpt2"] = "gpt2"
    n_layer: int = Field(12, ge=1, le=MAX_DEPTH, description="number of transformer blocks")
    n_embd: int = Field(768, ge=1, le=MAX_WIDTH, description="token width")
    n_head: int = Field(12, ge=1, le=MAX_HEADS, description="attention heads; divide n_embd")
    n_inner: int | None = Field(None, ge=1, le=MAX_WIDTH * int(MAX_MLP_RATIO))
    vocab_size: int = Field(50_257, ge=1, le=MAX_VOCAB)
    n_positions: int = Field(1_024, ge=1, le=MAX_POSITIONS)
    tie_word_embeddings: bool = True
    layer_norm_epsilon: float = Field(1e-5, gt=0, le=1e-1)

    @model_validator(mode="before")
    @classmethod
    def _resolve_inner(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("n_inner") is None:
            width = data.get("n_embd", cls.model_fields["n_embd"].default)
            if isinstance(width, int):
                data = {**data, "n_inner": 4 * width}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> GPT2Spec:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_head ({self.n_head}) must divide n_embd ({self.n_embd}); "
                f"try n_head in {_divisors(self.n_embd, MAX_HEADS)[-6:]}"
            )
        return self


ArchSpec = Annotated[ViTSpec | GPT2Spec, Field(discriminator="family")]
_ARCH_ADAPTER: TypeAdapter[ViTSpec | GPT2Spec] = TypeAdapter(ArchSpec)
SpecLike = ViTSpec | GPT2Spec | dict[str, Any] | str


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


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
        return _ARCH_ADAPTER.validate_python(arch)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from exc


def _validated(cls: type[_Spec], fields: dict[str, Any], source: str) -> ViTSpec | GPT2Spec:
    try:
        return cls(**fields)  # type: ignore[return-value]
    except ValidationError as exc:
        raise SpecError(f"{source}: {format_validation_error(exc)}") from exc


_HF_EXTRA_KEYS = frozenset({"model_type", "architectures", "transformers_version", "num_labels"})


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
    from tal.graph import build_graph

    ours = {p.name: p.stored_shape for p in build_graph(spec).params}
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if ours != theirs:
        extra = sorted(set(theirs) - set(ours))[:5]
        raise SpecError(
            f"timm model {name!r} has parameters a plain ViT spec does not describe "
            f"(e.g. {extra or 'differently shaped tensors'}); it is not supported"
        )
    return spec  # type: ignore[return-value]
