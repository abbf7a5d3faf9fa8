"""Computational graphs built straight from a spec: one node per operation.

The graph follows the paper's example (``node_feat``, ``node_info``, ``edges``) and adds what the
encoder needs: capped shortest-path distances and in/out degrees. Building it from the spec is
exact and fast (no tracing); graphs are cached per spec.

Every trainable tensor of the target model is a :class:`ParamSlot` attached to the node of the
operation that uses it. Slot names are canonical: timm's for ViT, Hugging Face's for GPT-2
(``tal.arch.formats`` maps them to other layouts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property, lru_cache

import numpy as np
import torch

from tal.arch.specs import GPT2Spec, ViTSpec

MAX_PATH_LENGTH = 16  # shortest paths longer than this share one "far / unreachable" bucket
MAX_DEGREE = 8
GAIN_BEFORE_GELU = 2.0  # He-style gain for a weight feeding a (G)ELU, as in GHN-3
RESIDUAL_BRANCHES_PER_BLOCK = 2  # attention and MLP each add into the residual stream
EDGE_FORWARD = 1
LM_HEAD = "lm_head"  # GPT2LMHeadModel's output layer (tied to the token embedding by default)
SEQUENCE_HEAD = "score"  # GPT2ForSequenceClassification's classifier (no bias)


class OpType(IntEnum):
    """Operation vocabulary shared by every family (the ``node_feat`` ids)."""

    INPUT = 0
    CONV = 1
    TOKEN_EMBED = 2
    CLS_TOKEN = 3
    CONCAT = 4
    POS_ENC = 5
    LAYER_NORM = 6
    LINEAR = 7
    MSA = 8
    GELU = 9
    SUM = 10
    POOL = 11


class ParamKind(IntEnum):
    """How a tensor is decoded and scaled."""

    WEIGHT = 0  # matrix, scaled by sqrt(gain / fan_in)
    EMBEDDING = 1  # matrix, scaled to the conventional embedding std
    BIAS = 2  # vector, bounded around 0
    NORM_SCALE = 3  # vector, bounded around 1
    NORM_SHIFT = 4  # vector, bounded around 0


VECTOR_KINDS = frozenset({ParamKind.BIAS, ParamKind.NORM_SCALE, ParamKind.NORM_SHIFT})


@dataclass(frozen=True)
class ParamSlot:
    """One trainable tensor of the target model.

    A matrix is decoded as a logical ``(rows, cols) = (out_features, in_features)`` matrix and
    stored as ``stored_shape`` (transposed first for Hugging Face ``Conv1D``); a vector has
    ``cols == 1``. ``token_rows``: one row per vocabulary token (GPT-2's token embedding and an
    untied LM head), rows that carry no order, so the decoder does not make them a smooth
    function of the row index.
    """

    name: str
    node: int
    kind: ParamKind
    stored_shape: tuple[int, ...]
    rows: int
    cols: int = 1
    transposed: bool = False
    fan_in: int = 1
    gain: float = 1.0
    token_rows: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.stored_shape)

    @property
    def is_vector(self) -> bool:
        return self.kind in VECTOR_KINDS


@dataclass(frozen=True)
class Node:
    """One operation. ``shape`` is its main parameter's stored shape (None if it has none)."""

    index: int
    op: OpType
    name: str
    shape: tuple[int, ...] | None
    block: int  # transformer block index; -1 before the first block, depth after the last
    # the shape encoding's input: (out, in, kernel area); (heads, head width, 0) for attention
    features: tuple[int, int, int] = (0, 0, 0)


@dataclass(eq=False)
class ComputationalGraph:
    """A spec's graph: nodes in topological order, edges, parameter slots and path distances.

    Attributes:
        distances: ``(N, N)`` int16, ``distances[u, v]`` = forward shortest path u -> v, capped
            at ``MAX_PATH_LENGTH + 1`` (also used for "unreachable").
        in_degree, out_degree: ``(N,)`` int64, capped at ``MAX_DEGREE``.
    """

    spec: ViTSpec | GPT2Spec
    nodes: tuple[Node, ...]
    edges: np.ndarray  # (E, 3) int64 rows [src, dst, edge type]
    params: tuple[ParamSlot, ...]
    distances: np.ndarray = field(repr=False)
    in_degree: np.ndarray = field(repr=False)
    out_degree: np.ndarray = field(repr=False)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @cached_property
    def num_params(self) -> int:
        return sum(slot.numel for slot in self.params)

    @property
    def node_feat(self) -> torch.Tensor:
        """``(N, 1)`` int64 op ids, as in the paper's example."""
        return torch.tensor([[node.op] for node in self.nodes], dtype=torch.long)

    @property
    def node_info(self) -> list[tuple[int, str, str, tuple[int, ...] | None]]:
        """``(index, parameter-owning module name, op name, parameter shape)`` per node."""
        return [(n.index, n.name, n.op.name.lower(), n.shape) for n in self.nodes]

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The graph as tensors for the encoder (all int64): node_feat ``(N,)``,
        node_shape ``(N, 3)``, node_block ``(N,)``, in/out degree ``(N,)``, distances ``(N, N)``.
        """
        depth = self.spec.depth if isinstance(self.spec, ViTSpec) else self.spec.n_layer
        with torch.inference_mode(False):  # usable by autograd even if built during inference
            return self._tensors(device, depth)

    def _tensors(self, device: torch.device | str, depth: int) -> dict[str, torch.Tensor]:
        return {
            "node_feat": self.node_feat[:, 0].to(device),
            "node_shape": torch.tensor([n.features for n in self.nodes], device=device),
            "node_block": torch.tensor([n.block + 1 for n in self.nodes], device=device),
            "node_relative_depth": torch.tensor(
                [(n.block + 1) / (depth + 1) for n in self.nodes], device=device
            ),
            "in_degree": torch.from_numpy(self.in_degree).to(device),
            "out_degree": torch.from_numpy(self.out_degree).to(device),
            "distances": torch.from_numpy(self.distances.astype(np.int64)).to(device),
        }


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[tuple[int, int]] = []
        self.params: list[ParamSlot] = []
        self.block = -1

    def node(
        self,
        op: OpType,
        inputs: tuple[int, ...],
        name: str = "",
        shape: tuple[int, ...] | None = None,
        features: tuple[int, int, int] = (0, 0, 0),
    ) -> int:
        index = len(self.nodes)
        self.nodes.append(Node(index, op, name or op.name.lower(), shape, self.block, features))
        self.edges.extend((src, index) for src in inputs)
        return index

    def linear(
        self,
        x: int,
        name: str,
        out_features: int,
        in_features: int,
        bias: bool = True,
        transposed: bool = False,
        gain: float = 1.0,
        has_weight: bool = True,
        token_rows: bool = False,
    ) -> int:
        stored = (in_features, out_features) if transposed else (out_features, in_features)
        node = self.node(OpType.LINEAR, (x,), name, stored, (out_features, in_features, 1))
        if has_weight:
            self.params.append(
                ParamSlot(
                    f"{name}.weight",
                    node,
                    ParamKind.WEIGHT,
                    stored,
                    out_features,
                    in_features,
                    transposed,
                    in_features,
                    gain,
                    token_rows,
                )
            )
        if bias:
            self.params.append(
                ParamSlot(f"{name}.bias", node, ParamKind.BIAS, (out_features,), out_features)
            )
        return node

    def layer_norm(self, x: int, name: str, width: int) -> int:
        node = self.node(OpType.LAYER_NORM, (x,), name, (width,), (width, 0, 0))
        self.params.append(ParamSlot(f"{name}.weight", node, ParamKind.NORM_SCALE, (width,), width))
        self.params.append(ParamSlot(f"{name}.bias", node, ParamKind.NORM_SHIFT, (width,), width))
        return node

    def embedding(
        self,
        inputs: tuple[int, ...],
        op: OpType,
        name: str,
        stored: tuple[int, ...],
        rows: int,
        cols: int,
        token_rows: bool = False,
    ) -> int:
        node = self.node(op, inputs, name, stored, (rows, cols, 1))
        self.params.append(
            ParamSlot(name, node, ParamKind.EMBEDDING, stored, rows, cols, token_rows=token_rows)
        )
        return node

    def finish(self, spec: ViTSpec | GPT2Spec) -> ComputationalGraph:
        num_nodes = len(self.nodes)
        edges = np.array([(s, d, EDGE_FORWARD) for s, d in self.edges], dtype=np.int64)
        in_degree = np.bincount(edges[:, 1], minlength=num_nodes)
        out_degree = np.bincount(edges[:, 0], minlength=num_nodes)
        return ComputationalGraph(
            spec=spec,
            nodes=tuple(self.nodes),
            edges=edges,
            params=tuple(self.params),
            distances=_shortest_paths(num_nodes, self.edges),
            in_degree=np.minimum(in_degree, MAX_DEGREE),
            out_degree=np.minimum(out_degree, MAX_DEGREE),
        )


def _shortest_paths(num_nodes: int, edges: list[tuple[int, int]]) -> np.ndarray:
    """Capped forward shortest-path lengths of a DAG whose nodes are in topological order.

    Dynamic programming over the order: ``to[v] = min(to[v], to[u] + 1)`` for each edge u -> v,
    where ``to[v]`` is the row of distances from every node to v. O(N * E) vectorised work.
    """
    far = MAX_PATH_LENGTH + 1
    dist_to = np.full((num_nodes, num_nodes), far, dtype=np.int16)
    np.fill_diagonal(dist_to, 0)
    predecessors: list[list[int]] = [[] for _ in range(num_nodes)]
    for src, dst in edges:
        if src >= dst:
            raise ValueError(f"edge {src}->{dst} breaks topological order")
        predecessors[dst].append(src)
    for dst in range(num_nodes):
        for src in predecessors[dst]:
            np.minimum(dist_to[dst], dist_to[src] + 1, out=dist_to[dst])
    np.minimum(dist_to, far, out=dist_to)
    return np.ascontiguousarray(dist_to.T)


@dataclass(frozen=True)
class _BlockNames:
    """Module names inside one pre-norm transformer block of a family."""

    prefix: str
    norm1: str
    qkv: str
    proj: str
    norm2: str
    fc1: str
    fc2: str
    transposed: bool


VIT_BLOCK = _BlockNames(
    "blocks.{}.", "norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2", transposed=False
)
GPT2_BLOCK = _BlockNames(
    "transformer.h.{}.",
    "ln_1",
    "attn.c_attn",
    "attn.c_proj",
    "ln_2",
    "mlp.c_fc",
    "mlp.c_proj",
    transposed=True,
)


def _transformer_block(
    g: _GraphBuilder,
    x: int,
    index: int,
    names: _BlockNames,
    width: int,
    heads: int,
    hidden: int,
    qkv_bias: bool,
    depth: int,
) -> int:
    """Adds ``x + attn(ln(x))`` then ``+ mlp(ln(.))``; returns the block's output node.

    The attention node's features are its head count and head width, so that an encoder that
    reads them (``EncoderConfig.head_features``) tells specs apart that differ only in heads.

    The projections that write into the residual stream get variance gain ``1 / (2 * depth)``
    (GPT-2's residual scaling), so the stream grows as slowly as under timm's init.
    """
    residual_gain = 1.0 / (RESIDUAL_BRANCHES_PER_BLOCK * depth)
    g.block = index
    p = names.prefix.format(index)
    t = names.transposed
    h = g.layer_norm(x, p + names.norm1, width)
    h = g.linear(h, p + names.qkv, 3 * width, width, bias=qkv_bias, transposed=t)
    h = g.node(OpType.MSA, (h,), p + "attn", features=(heads, width // heads, 0))
    h = g.linear(h, p + names.proj, width, width, transposed=t, gain=residual_gain)
    x = g.node(OpType.SUM, (x, h))
    h = g.layer_norm(x, p + names.norm2, width)
    h = g.linear(h, p + names.fc1, hidden, width, transposed=t, gain=GAIN_BEFORE_GELU)
    h = g.node(OpType.GELU, (h,))
    h = g.linear(h, p + names.fc2, width, hidden, transposed=t, gain=residual_gain)
    return g.node(OpType.SUM, (x, h))


def _build_vit(spec: ViTSpec) -> ComputationalGraph:
    g = _GraphBuilder()
    width, patch = spec.embed_dim, spec.patch_size
    x = g.node(OpType.INPUT, ())
    conv_shape = (width, spec.in_chans, patch, patch)
    x = g.node(OpType.CONV, (x,), "patch_embed.proj", conv_shape, (width, spec.in_chans, patch**2))
    fan_in = spec.in_chans * patch * patch
    g.params.append(
        ParamSlot(
            "patch_embed.proj.weight", x, ParamKind.WEIGHT, conv_shape, width, fan_in, fan_in=fan_in
        )
    )
    g.params.append(ParamSlot("patch_embed.proj.bias", x, ParamKind.BIAS, (width,), width))
    if spec.class_token:
        cls = g.embedding((), OpType.CLS_TOKEN, "cls_token", (1, 1, width), 1, width)
        x = g.node(OpType.CONCAT, (cls, x))
    x = g.embedding(
        (x,), OpType.POS_ENC, "pos_embed", (1, spec.num_tokens, width), spec.num_tokens, width
    )
    for index in range(spec.depth):
        x = _transformer_block(
            g,
            x,
            index,
            VIT_BLOCK,
            width,
            spec.num_heads,
            spec.mlp_hidden_dim,
            spec.qkv_bias,
            spec.depth,
        )
    g.block = spec.depth
    if spec.class_token:
        x = g.node(OpType.POOL, (g.layer_norm(x, "norm", width),), "pool_token")
    else:
        x = g.layer_norm(g.node(OpType.POOL, (x,), "pool_avg"), "fc_norm", width)
    if spec.num_classes:
        g.linear(x, "head", spec.num_classes, width)
    return g.finish(spec)


def _build_gpt2(spec: GPT2Spec) -> ComputationalGraph:
    g = _GraphBuilder()
    width, vocab = spec.n_embd, spec.vocab_size
    tokens = g.node(OpType.INPUT, ())
    wte = g.embedding(
        (tokens,),
        OpType.TOKEN_EMBED,
        "transformer.wte.weight",
        (vocab, width),
        vocab,
        width,
        token_rows=True,
    )
    wpe = g.embedding(
        (tokens,),
        OpType.POS_ENC,
        "transformer.wpe.weight",
        (spec.n_positions, width),
        spec.n_positions,
        width,
    )
    x = g.node(OpType.SUM, (wte, wpe))
    assert spec.n_inner is not None  # resolved by the spec validator
    for index in range(spec.n_layer):
        x = _transformer_block(
            g,
            x,
            index,
            GPT2_BLOCK,
            width,
            spec.n_head,
            spec.n_inner,
            qkv_bias=True,
            depth=spec.n_layer,
        )
    g.block = spec.n_layer
    x = g.layer_norm(x, "transformer.ln_f", width)
    g.linear(
        x,
        LM_HEAD,
        vocab,
        width,
        bias=False,
        has_weight=not spec.tie_word_embeddings,
        token_rows=True,
    )
    if spec.num_classes:  # GPT2ForSequenceClassification: the last real token's state
        x = g.node(OpType.POOL, (x,), "pool_last")
        g.linear(x, SEQUENCE_HEAD, spec.num_classes, width, bias=False)
    return g.finish(spec)


@lru_cache(maxsize=256)
def build_graph(spec: ViTSpec | GPT2Spec) -> ComputationalGraph:
    """The (cached) computational graph of a spec."""
    if isinstance(spec, ViTSpec):
        return _build_vit(spec)
    return _build_gpt2(spec)
