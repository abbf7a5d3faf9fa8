"""Graph encoder: a small pre-norm Transformer over computational-graph nodes.

Node token = op embedding + shape encoding + depth position + degree embeddings. Shortest-path
distances (forward and backward, capped) become a per-head additive attention bias. Every layer
can be modulated by a task embedding: ``(1 + g(t)) * LN(x) + b(t)`` with ``g``, ``b`` linear and
zero-initialised, so training starts from the unconditioned model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tal.arch.graph import MAX_DEGREE, MAX_PATH_LENGTH, OpType
from tal.hypernet.config import EncoderConfig

SHAPE_FEATURES = 3  # (out, in, kernel area)
MIN_LOG2_FREQUENCY = -4.0  # slowest shape / depth sinusoid: period 2 * pi * 16
MAX_LOG2_FREQUENCY = 1.0


class SinusoidalFeatures(nn.Module):
    """``(...,)`` float -> ``(..., 2F)`` sines and cosines at geometric frequencies."""

    def __init__(self, num_frequencies: int) -> None:
        super().__init__()
        exponents = torch.linspace(MIN_LOG2_FREQUENCY, MAX_LOG2_FREQUENCY, num_frequencies)
        self.register_buffer("frequencies", 2.0**exponents, persistent=False)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        angles = values.unsqueeze(-1) * self.frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TaskModulation(nn.Module):
    """``x -> (1 + g(t)) * x + b(t)``; identity when ``t`` is None (zero-initialised)."""

    def __init__(self, task_dim: int, hidden: int) -> None:
        super().__init__()
        self.scale = nn.Linear(task_dim, hidden)
        self.shift = nn.Linear(task_dim, hidden)
        for layer in (self.scale, self.shift):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        if task is None:
            return x
        return x * (1 + self.scale(task)) + self.shift(task)


class EncoderLayer(nn.Module):
    """Pre-norm Transformer layer with a path-distance attention bias and task modulation.

    Args:
        hidden: token width.
        heads: attention heads (divide ``hidden``).
        mlp_ratio: MLP hidden width / ``hidden``.
        task_dim: task embedding width, or None for no conditioning.
    """

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, task_dim: int | None) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        mlp_hidden = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, hidden)
        )
        self.modulate1 = TaskModulation(task_dim, hidden) if task_dim else None
        self.modulate2 = TaskModulation(task_dim, hidden) if task_dim else None

    def _attention(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        nodes, width = x.shape
        q, k, v = self.qkv(x).view(nodes, 3, self.heads, width // self.heads).permute(1, 2, 0, 3)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (heads, N, head_dim)
        return self.proj(out.transpose(0, 1).reshape(nodes, width))

    def _norm(
        self,
        norm: nn.LayerNorm,
        modulate: TaskModulation | None,
        x: torch.Tensor,
        task: torch.Tensor | None,
    ) -> torch.Tensor:
        h = norm(x)
        return modulate(h, task) if modulate is not None else h

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, task: torch.Tensor | None
    ) -> torch.Tensor:
        """x: ``(N, hidden)``; bias: ``(heads, N, N)``; task: ``(task_dim,)`` or None."""
        x = x + self._attention(self._norm(self.norm1, self.modulate1, x, task), bias)
        return x + self.mlp(self._norm(self.norm2, self.modulate2, x, task))


class GraphEncoder(nn.Module):
    """Graph tensors (``ComputationalGraph.tensors()``) -> node embeddings ``(N, hidden)``."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        hidden, freqs = config.hidden, config.shape_frequencies
        self.config = config
        self.op_embedding = nn.Embedding(len(OpType), hidden)
        self.in_degree_embedding = nn.Embedding(MAX_DEGREE + 1, hidden)
        self.out_degree_embedding = nn.Embedding(MAX_DEGREE + 1, hidden)
        self.sinusoids = SinusoidalFeatures(freqs)
        self.shape_projection = nn.Linear(SHAPE_FEATURES * 2 * freqs, hidden)
        self.depth_projection = nn.Linear(2 * 2 * freqs, hidden)
        self.forward_distance_bias = nn.Embedding(MAX_PATH_LENGTH + 2, config.heads)
        self.backward_distance_bias = nn.Embedding(MAX_PATH_LENGTH + 2, config.heads)
        task_dim = config.task_dim if config.task_conditioning else None
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, config.heads, config.mlp_ratio, task_dim)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(hidden)

    def forward(
        self, graph: dict[str, torch.Tensor], task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Node embeddings ``(N, hidden)``; ``task`` is ``(task_dim,)`` or None (unconditioned)."""
        if task is not None and not self.config.task_conditioning:
            task = None
        if task is not None and task.shape != (self.config.task_dim,):
            raise ValueError(
                f"task embedding must have shape ({self.config.task_dim},), got {tuple(task.shape)}"
            )
        node_shape = graph["node_shape"]  # (N, 3)
        if not self.config.head_features:
            attention = (graph["node_feat"] == OpType.MSA).unsqueeze(-1)  # (N, 1)
            node_shape = node_shape.masked_fill(attention, 0)
        log_sizes = torch.log2(1.0 + node_shape.float())  # (N, 3)
        shape = self.sinusoids(log_sizes).flatten(1)  # (N, 3 * 2F)
        depth = torch.cat(
            [
                self.sinusoids(graph["node_block"].float()),
                self.sinusoids(
                    graph["node_relative_depth"].float() * math.pi * 2**-MIN_LOG2_FREQUENCY
                ),
            ],
            dim=-1,
        )
        x = (
            self.op_embedding(graph["node_feat"])
            + self.shape_projection(shape)
            + self.depth_projection(depth)
            + self.in_degree_embedding(graph["in_degree"])
            + self.out_degree_embedding(graph["out_degree"])
        )
        distances = graph["distances"]
        bias = self.forward_distance_bias(distances) + self.backward_distance_bias(distances.T)
        bias = bias.permute(2, 0, 1).to(x.dtype)  # (heads, N, N)
        for layer in self.layers:
            x = layer(x, bias, task)
        return self.norm(x)
