"""Hypernetwork configuration: encoder, decoder and the named presets used as baselines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

BasisKind = Literal["relative", "periodic"]


@dataclass(frozen=True)
class EncoderConfig:
    """Graph Transformer over the nodes (GHN-3-T recipe by default: hidden 64, 3 layers)."""

    hidden: int = 64
    layers: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0
    shape_frequencies: int = 8
    task_dim: int = 192  # width of the ancestry model's CLS feature
    task_conditioning: bool = True
    # read each attention node's head count and head width; without them specs that differ
    # only in their heads are one graph to the encoder and are predicted the same weights
    # (measured no better with them: docs/lab/ablations.md round 14)
    head_features: bool = False


@dataclass(frozen=True)
class DecoderConfig:
    """How a node embedding becomes a tensor ``W = s * P_rows C P_cols^T``
    (``tal.hypernet.decoder``).

    ``basis="relative"`` (ours, the default): ``P(n)`` are cosines of the relative index
    ``(i + 1/2) / n`` (a cut DCT-II), so a core means nearly the same function at every width,
    any size works with no cap and no row repeats. ``basis="periodic"`` with a full core is
    GHN-3's tiling of a ``basis_size x basis_size`` chunk; with ``core_rank`` it is LoGAH's
    low-rank ``A @ B`` cut from ``basis_size`` (tiled beyond it). ``span_scaling`` scales the
    structured part by ``sqrt(rank / fan_in)`` so that it has the fan-in gain on the inputs it
    sees (those in its row space) instead of on isotropic ones.

    ``token_basis`` (ours): the rows of a token-indexed matrix (GPT-2's token embedding, an
    untied LM head) carry no order, so they are not decoded along the row index: their row basis
    is the text ancestry's token table (``TALHypernet.set_token_table``). A GPT-2 of another
    vocabulary takes rows drawn like the table's rows (their mean and covariance) as its row
    basis; without a table the whole model is Hugging Face's initialisation. Without
    ``token_basis`` (the GHN-3 and LoGAH baselines) token rows are decoded like any other.
    """

    basis: BasisKind = "relative"
    basis_size: int = 64
    core_rank: int | None = None  # None: full basis_size x basis_size core
    hidden: int = 128
    span_scaling: bool = True
    token_basis: bool = True

    def __post_init__(self) -> None:
        if self.basis not in get_args(BasisKind):
            choices = list(get_args(BasisKind))
            raise ValueError(f"basis must be one of {choices}, not {self.basis!r}")


# Fields of earlier checkpoints' decoder configs and the only values this code implements
# (their other values named decoders that no checkpoint in the store uses any more).
RETIRED_DECODER_FIELDS: dict[str, object] = {
    "residual_noise": False,
    "min_noise_fraction": None,  # any value: meaningless without the residual
    "initial_noise_fraction": None,
    "basis_seed": None,
    "frequencies": None,
}


def check_decoder_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` unchanged when every key is a DecoderConfig field; otherwise a ValueError
    that names the unknown keys and the known ones."""
    known = set(DecoderConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown decoder fields {unknown}; choose from {sorted(known)}")
    return overrides


@dataclass(frozen=True)
class HypernetConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    init_seed: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HypernetConfig:
        """The config a checkpoint's manifest records; fields of retired decoders are accepted
        only with the value this code implements (ValueError naming them otherwise)."""
        return cls(
            encoder=EncoderConfig(**data.get("encoder", {})),
            decoder=DecoderConfig(**_current_decoder_fields(data.get("decoder", {}))),
            init_seed=data.get("init_seed", 0),
        )

    @classmethod
    def from_json(cls, text: str) -> HypernetConfig:
        return cls.from_dict(json.loads(text))


def _current_decoder_fields(fields: dict[str, Any]) -> dict[str, Any]:
    current = {k: v for k, v in fields.items() if k not in RETIRED_DECODER_FIELDS}
    retired = {
        k: v
        for k, v in fields.items()
        if k in RETIRED_DECODER_FIELDS and RETIRED_DECODER_FIELDS[k] not in (None, v)
    }
    if retired:
        raise ValueError(
            f"this checkpoint uses a retired decoder ({retired}); this version of tal predicts "
            "only with decoders without the seeded residual"
        )
    return current


_NO_TASK = EncoderConfig(task_conditioning=False)

PRESETS: dict[str, HypernetConfig] = {
    # ours: the relative-index basis with span scaling, task-conditioned (the defaults; measured
    # against the GHN-3 and LoGAH styles in docs/results.md)
    "tal": HypernetConfig(),
    "ghn3": HypernetConfig(
        encoder=_NO_TASK,
        decoder=DecoderConfig(
            basis="periodic", basis_size=64, span_scaling=False, token_basis=False
        ),
    ),
    "logah": HypernetConfig(
        encoder=_NO_TASK,
        decoder=DecoderConfig(
            basis="periodic", basis_size=1024, core_rank=16, span_scaling=False, token_basis=False
        ),
    ),
}


def preset(name: str, **encoder_overrides: Any) -> HypernetConfig:
    """A named preset (``tal``, ``ghn3``, ``logah``), optionally with encoder fields replaced."""
    if name not in PRESETS:
        raise KeyError(f"unknown hypernet preset {name!r}; choose from {sorted(PRESETS)}")
    config = PRESETS[name]
    return replace(config, encoder=replace(config.encoder, **encoder_overrides))
