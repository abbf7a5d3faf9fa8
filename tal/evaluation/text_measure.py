"""Measures of a GPT-2 start on a text task: language-model loss, classification accuracy, a
head fitted to an unseen task's examples, and fine-tuning with one recipe for every method.

The model is always the real ``GPT2ForSequenceClassification`` of the spec, its weights loaded
strictly. The language-model loss is in nats per token through its tied token embedding (what
``GPT2LMHeadModel`` computes), on a fixed sample of the split's next-token targets: every
method is scored on the same positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tal.checkpoints.text_ancestry import last_token_states
from tal.evaluation.finetune import warmup_cosine_schedule
from tal.tasks import TextTaskData
from tal.training.data import step_generator
from tal.training.text_data import cut_rows, sample_lm_positions

EVAL_BATCH = 64
LOGIT_ROWS = 1024  # targets scored at once: 1024 x 50,257 float32 logits = 206 MB
EVAL_STREAM = 7  # the fixed positions of a split's language-model loss
FINETUNE_STREAM = 8
HEAD_FIT_ITERATIONS = 1_000


@dataclass(frozen=True)
class LMPositions:
    """Fixed next-token targets of a split: row ``rows[i]``, position ``positions[i]`` predicts
    the token after it (rows cut to ``max_tokens``)."""

    rows: torch.Tensor
    positions: torch.Tensor
    max_tokens: int

    @classmethod
    def draw(cls, data: TextTaskData, count: int, max_tokens: int, seed: int = 0) -> LMPositions:
        generator = step_generator(seed, 0, EVAL_STREAM)
        rows, positions = sample_lm_positions(data.lengths.clamp_max(max_tokens), count, generator)
        return cls(rows, positions, max_tokens)


def _hidden(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return model.transformer(input_ids=input_ids).last_hidden_state


def _tied_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return hidden @ model.transformer.wte.weight.T


@torch.no_grad()
def lm_loss(model: nn.Module, data: TextTaskData, positions: LMPositions) -> float:
    """Nats per token on ``positions``' next-token targets."""
    model.eval()
    total = 0.0
    for chunk in torch.unique(positions.rows).split(EVAL_BATCH):
        batch = cut_rows(data, chunk, positions.max_tokens)
        hidden = _hidden(model, batch.input_ids)
        inside = torch.isin(positions.rows, chunk)
        local = torch.searchsorted(chunk, positions.rows[inside])
        where = positions.positions[inside]
        for rows, at in zip(local.split(LOGIT_ROWS), where.split(LOGIT_ROWS), strict=True):
            logits = _tied_logits(model, hidden[rows, at])  # (LOGIT_ROWS, vocab) at most
            total += float(F.cross_entropy(logits, batch.input_ids[rows, at + 1], reduction="sum"))
    return total / max(1, len(positions.rows))


@torch.no_grad()
def last_token_features(model: nn.Module, data: TextTaskData, max_tokens: int) -> torch.Tensor:
    """``(N, n_embd)`` final hidden states at each row's last real token (what ``score``
    reads)."""
    model.eval()
    chunks = []
    for index in torch.arange(len(data)).split(EVAL_BATCH):
        batch = cut_rows(data, index, max_tokens)
        chunks.append(last_token_states(_hidden(model, batch.input_ids), batch.lengths))
    return torch.cat(chunks)


@torch.no_grad()
def accuracy(model: nn.Module, data: TextTaskData, max_tokens: int) -> float:
    """Classification accuracy of the model's ``score`` head."""
    logits = last_token_features(model, data, max_tokens) @ model.score.weight.T
    return float((logits.argmax(1) == data.labels).float().mean())


@torch.no_grad()
def fit_score_head(model: nn.Module, support: TextTaskData, max_tokens: int) -> float:
    """Replaces ``model.score.weight`` by a multinomial logistic regression without intercept
    (``GPT2ForSequenceClassification``'s score has no bias) fitted on the last-token features of
    ``support``; returns its accuracy on ``support``. Needs scikit-learn."""
    from sklearn.linear_model import LogisticRegression

    features = last_token_features(model, support, max_tokens).double().numpy()
    labels = support.labels.numpy()
    classifier = LogisticRegression(fit_intercept=False, max_iter=HEAD_FIT_ITERATIONS)
    classifier.fit(features, labels)
    weight = np.zeros((support.num_classes, features.shape[1]))
    coefficients = classifier.coef_
    if len(classifier.classes_) == 2:  # scikit-learn's one row of log-odds for two classes
        coefficients = np.concatenate([-coefficients / 2, coefficients / 2])
    weight[classifier.classes_] = coefficients
    model.score.weight.copy_(torch.from_numpy(weight).to(model.score.weight))
    return float(classifier.score(features, labels))


@dataclass(frozen=True)
class TextFinetuneRecipe:
    """The same for every method: AdamW, linear warm-up over the first epoch then cosine; each
    step minimises next-token cross-entropy on ``lm_positions`` sampled targets plus the
    classifier's cross-entropy."""

    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: int = 1
    lm_positions: int = 128
    max_tokens: int = 64


@dataclass
class TextCurve:
    """Per epoch (index 0 = after epoch 1): training loss, test LM loss and test accuracy."""

    train_loss: list[float] = field(default_factory=list)
    test_lm_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


def finetune_text(
    model: nn.Module,
    train: TextTaskData,
    test: TextTaskData,
    lm_test: TextTaskData,
    test_positions: LMPositions,
    recipe: TextFinetuneRecipe,
    seed: int,
) -> TextCurve:
    """Trains ``model`` (``GPT2ForSequenceClassification``) on ``train`` with ``recipe``; after
    each epoch scores accuracy on ``test`` and the LM loss on ``test_positions`` of ``lm_test``.
    The seed fixes the data order and the sampled positions."""
    curve = TextCurve()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    steps_per_epoch = max(1, len(train) // recipe.batch_size)
    scheduler = warmup_cosine_schedule(
        optimizer, recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch
    )
    order_generator = torch.Generator().manual_seed(seed)
    for epoch in range(recipe.epochs):
        model.eval()  # no dropout: the same network the untrained measures score
        order = torch.randperm(len(train), generator=order_generator)
        total = 0.0
        for step in range(steps_per_epoch):
            index = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            batch = cut_rows(train, index, recipe.max_tokens)
            generator = step_generator(seed, epoch * steps_per_epoch + step, FINETUNE_STREAM)
            rows, positions = sample_lm_positions(batch.lengths, recipe.lm_positions, generator)
            hidden = _hidden(model, batch.input_ids)
            loss = F.cross_entropy(
                model.score(last_token_states(hidden, batch.lengths)), batch.labels
            )
            if len(rows):
                logits = _tied_logits(model, hidden[rows, positions])
                loss = loss + F.cross_entropy(logits, batch.input_ids[rows, positions + 1])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        curve.train_loss.append(total / steps_per_epoch)
        curve.test_lm_loss.append(lm_loss(model, lm_test, test_positions))
        curve.test_accuracy.append(accuracy(model, test, recipe.max_tokens))
    return curve
