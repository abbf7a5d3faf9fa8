"""Architecture specs: strict, hashable descriptions of the transformers we predict weights for.

Two families share one interface, told apart by the ``family`` field:

* :class:`ViTSpec` — a timm ``VisionTransformer`` / Hugging Face ``ViTForImageClassification``.
* :class:`GPT2Spec` — a Hugging Face ``GPT2LMHeadModel``, or with ``num_classes`` a
  ``GPT2ForSequenceClassification`` (format ``"hf-sequence-classification"``).

Every spec has a canonical JSON form, a stable hash (the cache key) and an exact parameter
count computed from the shape alone. ``tal.arch.parse`` turns what users send (timm names,
Hugging Face configs, JSON) into specs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

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
ArchFamily = Literal["vit", "gpt2"]
NORM_PARAMS_PER_WIDTH = 2  # a LayerNorm's scale and shift


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
        """Exact number of trainable parameters of the real model (tied weights counted once),
        computed from the shape alone (``tests/core`` checks it against the real models)."""
        raise NotImplementedError  # each family counts its own layout


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

    def num_params(self) -> int:
        width, hidden, patch = self.embed_dim, self.mlp_hidden_dim, self.patch_size
        embedding = width * self.in_chans * patch * patch + width  # patch projection
        embedding += width * int(self.class_token) + self.num_tokens * width
        attention = 3 * width * width + 3 * width * int(self.qkv_bias) + width * width + width
        mlp = hidden * width + hidden + width * hidden + width
        block = NORM_PARAMS_PER_WIDTH * 2 * width + attention + mlp
        head = self.num_classes * width + self.num_classes
        return embedding + self.depth * block + NORM_PARAMS_PER_WIDTH * width + head


class GPT2Spec(_Spec):
    """A GPT-2 language model (Hugging Face ``GPT2LMHeadModel`` layout).

    ``n_inner`` defaults to ``4 * n_embd`` and is stored resolved, so both spellings hash alike.
    ``num_classes`` is the width of the ``GPT2ForSequenceClassification`` head (``score.weight``,
    ``(num_classes, n_embd)``, no bias), written only in format ``"hf-sequence-classification"``;
    0 (the default) describes the language model alone. :meth:`num_params` counts the
    ``GPT2LMHeadModel``; ``tal.arch.formats.format_num_params`` counts either layout.
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
    num_classes: int = Field(
        0,
        ge=0,
        le=MAX_CLASSES,
        description="classes of the sequence-classification head (format "
        "'hf-sequence-classification'); 0 = language model only",
    )

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

    def num_params(self) -> int:
        width, inner = self.n_embd, self.n_inner or 4 * self.n_embd
        embedding = (self.vocab_size + self.n_positions) * width
        attention = 3 * width * width + 3 * width + width * width + width
        mlp = inner * width + inner + width * inner + width
        block = NORM_PARAMS_PER_WIDTH * 2 * width + attention + mlp
        lm_head = 0 if self.tie_word_embeddings else self.vocab_size * width
        return embedding + self.n_layer * block + NORM_PARAMS_PER_WIDTH * width + lm_head


ArchSpec = Annotated[ViTSpec | GPT2Spec, Field(discriminator="family")]
ARCH_ADAPTER: TypeAdapter[ViTSpec | GPT2Spec] = TypeAdapter(ArchSpec)
SpecLike = ViTSpec | GPT2Spec | dict[str, Any] | str


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]
