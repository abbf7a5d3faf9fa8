"""GPT-2 run on predicted tensors (differentiably), and the text losses of hypernetwork training.

The model is a real ``GPT2ForSequenceClassification`` built on the ``meta`` device (nothing is
allocated): ``torch.func.functional_call`` supplies every tensor it uses from the prediction.
Its token embedding is not one of them: the hypernetwork keeps GPT-2's ``(vocab, width)``
embedding as factors (``tal.hypernet.decoder.LowRankMatrix``), the rows of a batch are looked
up through them and passed as ``inputs_embeds``, and the tied language-model head's logits at
the sampled positions are taken through them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION
from tal.arch.graph import SEQUENCE_HEAD, VECTOR_KINDS, build_graph
from tal.arch.specs import GPT2Spec
from tal.arch.target_models import build_model
from tal.checkpoints.text_ancestry import WTE, last_token_states
from tal.hypernet.decoder import LowRankMatrix
from tal.training.text_data import TextBatch

TRANSFORMER_PREFIX = "transformer."
SCORE = f"{SEQUENCE_HEAD}.weight"

Predicted = dict[str, torch.Tensor | LowRankMatrix]


def token_rows(embedding: torch.Tensor | LowRankMatrix, ids: torch.Tensor) -> torch.Tensor:
    """``embedding[ids]`` for a dense or factored ``(vocab, width)`` embedding."""
    return embedding.rows(ids) if isinstance(embedding, LowRankMatrix) else embedding[ids]


def tied_logits(embedding: torch.Tensor | LowRankMatrix, hidden: torch.Tensor) -> torch.Tensor:
    """A tied LM head's logits ``hidden @ embedding^T``: ``(..., width)`` -> ``(..., vocab)``."""
    if isinstance(embedding, LowRankMatrix):
        return embedding.times_transpose(hidden)
    return hidden @ embedding.T


class GPT2Runner(nn.Module):
    """The ``GPT2ForSequenceClassification`` of ``spec`` on the meta device, run on predicted
    tensors (names of format ``hf-sequence-classification``)."""

    def __init__(self, spec: GPT2Spec) -> None:
        super().__init__()
        if not spec.num_classes or not spec.tie_word_embeddings:
            raise ValueError("training runs tied GPT-2 specs with num_classes >= 1")
        self.spec = spec
        self.model = build_model(spec, HF_SEQUENCE_CLASSIFICATION, device="meta").eval()

    def hidden_states(self, params: Predicted, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` ids padded on the right -> final hidden states ``(B, T, width)``."""
        embeds = token_rows(params[WTE], input_ids)
        body = {
            name.removeprefix(TRANSFORMER_PREFIX): value
            for name, value in params.items()
            if name.startswith(TRANSFORMER_PREFIX) and name != WTE
        }
        outputs = functional_call(
            self.model.transformer, body, (), {"inputs_embeds": embeds}, strict=False
        )
        return outputs.last_hidden_state

    def outputs(
        self, params: Predicted, batch: TextBatch, rows: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``(K, vocab)`` at ``(rows, positions)`` and class logits ``(B,
        num_classes)`` at each row's last real token."""
        hidden = self.hidden_states(params, batch.input_ids)
        lm = tied_logits(params[WTE], hidden[rows, positions])
        classes = last_token_states(hidden, batch.lengths) @ params[SCORE].T
        return lm, classes


@dataclass(frozen=True)
class TeacherLM:
    """The ancestry's next-token distributions at the sampled positions: probabilities ``(K,
    vocab)`` and their mean entropy (so the distillation term reads as a KL divergence)."""

    probs: torch.Tensor
    entropy: torch.Tensor

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> TeacherLM:
        log_probs = F.log_softmax(logits.float(), dim=-1)
        probs = log_probs.exp()
        return cls(probs, -(probs * log_probs).sum(-1).mean())


@dataclass(frozen=True)
class TextTargets:
    """What a text step is scored against: next tokens ``(K,)`` at the sampled positions,
    labels ``(B,)``, and the ancestry's distributions at the same places (None: no
    distillation)."""

    next_tokens: torch.Tensor
    labels: torch.Tensor
    teacher_lm: TeacherLM | None = None
    teacher_classes: torch.Tensor | None = None


def kl_to_teacher(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the last axis."""
    return (
        F.kl_div(
            F.log_softmax(student.float() / temperature, dim=-1),
            F.log_softmax(teacher.float() / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )


def lm_loss(
    logits: torch.Tensor,
    next_tokens: torch.Tensor,
    teacher: TeacherLM | None,
    ce_weight: float,
    distill_weight: float,
) -> torch.Tensor:
    """``ce_weight * CE + distill_weight * KL(teacher || student)`` over next tokens, both from
    one log-softmax of the ``(K, vocab)`` logits (the vocabulary-sized passes are most of a text
    step's cost): the KL is the teacher-weighted cross-entropy minus the teacher's entropy."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    loss = -ce_weight * log_probs.gather(1, next_tokens[:, None]).mean()
    if distill_weight and teacher is not None:
        cross = -(teacher.probs * log_probs).sum(-1).mean()
        loss = loss + distill_weight * (cross - teacher.entropy)
    return loss


def text_loss(
    lm_logits: torch.Tensor,
    class_logits: torch.Tensor,
    targets: TextTargets,
    ce_weight: float,
    distill_weight: float,
    temperature: float,
    label_smoothing: float,
) -> torch.Tensor:
    """``ce_weight * (LM CE + class CE) + distill_weight * (LM KD + class KD)``: next-token
    cross-entropy (nats per token), the classifier's, and the ancestry's distributions over
    next tokens (at temperature 1: its distribution itself) and classes (at ``temperature``)."""
    teacher = targets.teacher_lm if distill_weight else None
    loss = lm_loss(lm_logits, targets.next_tokens, teacher, ce_weight, distill_weight)
    loss = loss + ce_weight * F.cross_entropy(
        class_logits.float(), targets.labels, label_smoothing=label_smoothing
    )
    if distill_weight and targets.teacher_classes is not None:
        loss = loss + distill_weight * kl_to_teacher(
            class_logits, targets.teacher_classes, temperature
        )
    return loss


def predicted_norm(params: Predicted, spec: GPT2Spec) -> torch.Tensor:
    """Mean Frobenius norm of the predicted matrices (GHN-3's penalty), factored ones through
    their ``r x r`` Gram matrices."""
    norms = []
    for slot in build_graph(spec).params:
        if slot.kind in VECTOR_KINDS or slot.name not in params:
            continue
        value = params[slot.name]
        if isinstance(value, LowRankMatrix):
            gram = (value.left.T @ value.left) * (value.right @ value.right.T)
            norms.append(gram.sum().clamp_min(0).sqrt())
        else:
            norms.append(value.norm())
    return torch.stack(norms).mean()
