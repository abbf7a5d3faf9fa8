"""The text ancestry: a small GPT-2 trained on the text tasks, whose features define text tasks.

It is a real ``GPT2ForSequenceClassification`` whose ``score`` head covers the union of the
training text tasks' classes (``task_offsets`` slice it) and whose token embedding, tied, is
also its language-model head. Three things come from it:

* a text task's embedding: the mean over the task's examples of each example's mean final
  hidden state (after ``ln_f``) over its real tokens, zero-padded to the hypernetwork's
  ``task_dim`` when the ancestry is narrower;
* the distillation targets of GPT-2 training: its next-token logits and its class logits;
* the token table, the row basis of GPT-2's predicted token embedding
  (``tal.hypernet.decoder``): the token embedding's top ``basis_size`` principal directions,
  whitened. The projection ``(width, basis_size)`` is computed once when the ancestry is saved
  and stored with it, so training and serving derive the same table from the same bytes.

It is stored in float16 (its token embedding alone is ``50257 x width`` values); the model in
memory holds the float16-rounded values as float32, so what training sees is what is shipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import safetensors.torch
import torch
from torch import nn

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION
from tal.arch.specs import GPT2Spec
from tal.arch.target_models import build_model

STORAGE_DTYPE = torch.float16
TOKEN_PROJECTION = "tal.token_projection"  # tensor name of the stored projection
FEATURE_BATCH = 128
WTE = "transformer.wte.weight"


def last_token_states(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(B, T, width)`` states -> ``(B, width)`` at each row's last real token (index
    ``lengths - 1``): what ``GPT2ForSequenceClassification`` scores when rows are padded on the
    right with its ``pad_token_id``."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


def mean_token_states(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(B, T, width)`` -> ``(B, width)``: each row's mean over its first ``lengths`` states."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    mask = (positions[None, :] < lengths[:, None]).to(hidden.dtype)  # (B, T)
    return (hidden * mask[..., None]).sum(1) / lengths[:, None].to(hidden.dtype)


def token_projection(embedding: torch.Tensor, size: int) -> torch.Tensor:
    """``(width, size)`` map from token-embedding rows ``(vocab, width)`` to their coordinates on
    the top ``size`` principal directions (of the uncentred rows), whitened and scaled so a
    row's mean squared norm is 1. Columns beyond ``width`` are zero. Each direction's sign makes
    its coordinates' sum non-negative (the sign is otherwise arbitrary)."""
    vocab, width = embedding.shape
    rows = embedding.double()
    values, vectors = torch.linalg.eigh(rows.T @ rows)  # ascending
    keep = min(size, width)
    values, vectors = values.flip(0)[:keep], vectors.flip(1)[:, :keep]
    signs = torch.where((rows @ vectors).sum(0) < 0, -1.0, 1.0).double()
    scale = (vocab / keep) ** 0.5 / values.clamp_min(1e-12).sqrt()
    projection = torch.zeros(width, size, dtype=torch.float64)
    projection[:, :keep] = vectors * (signs * scale)
    return projection.float()


@dataclass
class TextAncestry:
    """A GPT-2 text model with a classifier over the union of its tasks' classes.

    Attributes:
        spec: its architecture (``num_classes`` = the union's classes).
        model: ``GPT2ForSequenceClassification`` (evaluation mode, float32 holding float16
            values once saved or loaded).
        task_offsets: task name -> ``(start, stop)`` of its classes in ``score``.
        projection: ``(width, basis_size)`` token projection (:func:`token_projection`), or None
            before :meth:`freeze`.
    """

    spec: GPT2Spec
    model: nn.Module
    task_offsets: dict[str, tuple[int, int]] = field(default_factory=dict)
    projection: torch.Tensor | None = None
    _table: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def create(cls, spec: GPT2Spec, task_offsets: dict[str, tuple[int, int]]) -> TextAncestry:
        return cls(spec, build_model(spec, HF_SEQUENCE_CLASSIFICATION), dict(task_offsets))

    @property
    def width(self) -> int:
        return self.spec.n_embd

    @property
    def device(self) -> torch.device:
        return self.model.score.weight.device

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` ids padded on the right -> final hidden states ``(B, T, width)`` (after
        ``ln_f``; differentiable). Causal attention keeps the padding out of real tokens'
        states, so no attention mask is needed."""
        return self.model.transformer(input_ids=input_ids).last_hidden_state

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., width)`` -> next-token logits ``(..., vocab)`` through the tied embedding."""
        return hidden @ self.model.transformer.wte.weight.T

    def class_logits(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, width)``, lengths ``(B,)`` -> union class logits ``(B, classes)``."""
        return self.model.score(last_token_states(hidden, lengths))

    @torch.no_grad()
    def features(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(N, width)``: each example's mean final hidden state over its real tokens (at most
        the first ``n_positions``)."""
        self.model.eval()
        chunks = []
        lengths = lengths.clamp_max(self.spec.n_positions)
        batches = zip(input_ids.split(FEATURE_BATCH), lengths.split(FEATURE_BATCH), strict=True)
        for ids, length in batches:
            width = int(length.max())
            ids, length = ids[:, :width].to(self.device), length.to(self.device)
            chunks.append(mean_token_states(self.hidden_states(ids), length).float().cpu())
        return torch.cat(chunks)

    def embed_task(
        self, input_ids: torch.Tensor, lengths: torch.Tensor, task_dim: int
    ) -> torch.Tensor:
        """A text task's embedding ``(task_dim,)`` from its examples (ids ``(N, L)`` padded on
        the right, lengths ``(N,)``): the mean of :meth:`features`, zero-padded to
        ``task_dim``."""
        if input_ids.ndim != 2 or input_ids.shape[0] < 1 or lengths.shape != input_ids.shape[:1]:
            raise ValueError(
                f"input_ids must be (N, L) with N >= 1 and lengths (N,), got "
                f"{tuple(input_ids.shape)} and {tuple(lengths.shape)}"
            )
        if self.width > task_dim:
            raise ValueError(f"text ancestry width {self.width} exceeds task_dim {task_dim}")
        if int(input_ids.max()) >= self.spec.vocab_size or int(input_ids.min()) < 0:
            raise ValueError(f"token ids must lie in [0, {self.spec.vocab_size})")
        mean = self.features(input_ids, lengths).mean(0)
        return torch.nn.functional.pad(mean, (0, task_dim - self.width))

    def freeze(self, basis_size: int) -> None:
        """Rounds the weights to the storage dtype (kept as float32) and computes the token
        projection from the rounded embedding: after this, the model and table in memory are
        those a load of :meth:`to_bytes` gives."""
        with torch.no_grad():
            for tensor in self.model.state_dict().values():
                tensor.copy_(tensor.to(STORAGE_DTYPE).float())
        embedding = self.model.transformer.wte.weight.detach().cpu()
        self.projection = token_projection(embedding, basis_size)
        self._table = None
        self.model.eval()

    def token_table(self) -> torch.Tensor:
        """``(vocab, basis_size)`` float32: the token embedding times :attr:`projection`
        (cached; on the model's device)."""
        if self.projection is None:
            raise ValueError("the text ancestry has no token projection yet: call freeze()")
        if self._table is None or self._table.device != self.device:
            with torch.no_grad():
                weight = self.model.transformer.wte.weight.detach()
                self._table = weight @ self.projection.to(weight.device)
        return self._table

    def to_bytes(self) -> bytes:
        """Safetensors bytes in float16 (metadata: spec, task offsets; the projection as a
        float32 tensor); the same model gives the same bytes."""
        from tal.blobs.io import to_bytes

        if self.projection is None:
            raise ValueError("freeze() the text ancestry before saving it")
        state = {
            k: v.detach().cpu().to(STORAGE_DTYPE).contiguous()
            for k, v in self.model.state_dict().items()
        }
        state[TOKEN_PROJECTION] = self.projection.contiguous()
        metadata = {
            "spec": self.spec.canonical_json(),
            "task_offsets": json.dumps(self.task_offsets),
        }
        return to_bytes(state, metadata=metadata)

    @classmethod
    def from_bytes(cls, blob: bytes, device: str | torch.device = "cpu") -> TextAncestry:
        from tal.blobs.io import read_metadata

        metadata = read_metadata(blob)
        spec = GPT2Spec.model_validate_json(metadata["spec"])
        offsets = {k: tuple(v) for k, v in json.loads(metadata["task_offsets"]).items()}
        state = safetensors.torch.load(blob)
        projection = state.pop(TOKEN_PROJECTION).float()
        model = build_model(spec, HF_SEQUENCE_CLASSIFICATION)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return cls(spec, model.to(device).eval(), offsets, projection)  # type: ignore[arg-type]
