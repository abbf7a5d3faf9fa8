"""A classifier head for a task the hypernetwork never trained a head on, fitted in closed form.

For a new task the hypernetwork knows the task only by an embedding of a few hundred images; the
head rows it predicts follow no class order it could have learned, so their argmax is near chance
(docs/lab/ablations.md). The same labelled images give a better head without a gradient
step: linear discriminant analysis on the model's pre-logit features (class means and one shared
covariance, shrunk towards a multiple of the identity by the Ledoit-Wolf formula, since a few
hundred examples do not determine a ``D x D`` covariance). Its decision function is linear in the
features, so it is written into the model's linear head as weight ``(C, D)`` and bias ``(C,)``;
the rest of the model keeps its predicted weights.

Fitted and scored on the same few hundred images, such a head is right more often on them than
on new images and far more confident than it is right: fine-tuning from it started at a
training loss of 7.6-9.2 on the unseen task (ln 24 = 3.18; docs/lab/ablations.md). So its
weight and bias are scaled by the factor in [0, 1] that fits out-of-fold decisions best
(stratified k-fold over the same images, ``tal.heads.calibration.fit_scale``), which keeps every
argmax and so the untrained accuracy.

Needs scikit-learn (the ``models`` extra).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tal.heads.calibration import classifier_head, fit_scale, head_features

BINARY = 2  # scikit-learn returns one decision row for two classes
CALIBRATION_FOLDS = 5  # at most; fewer when a class has fewer examples
MISSING_CLASSES_NAMED = 10  # an error lists at most this many classes without an example


@dataclass(frozen=True)
class DiscriminantHeadFit:
    """What the fit used and how well the new head classifies its own examples."""

    examples: int
    classes: int
    support_accuracy: float  # on the images it was fitted on
    folds: int  # of the out-of-fold calibration; 0 when a class had a single example
    cross_validated_accuracy: float  # out of fold (nan without folds): what new images get
    scale: float  # in [0, 1], applied to the fitted weight and bias


def _one_row_per_class(values: np.ndarray) -> np.ndarray:
    """scikit-learn's per-class values ``(C, ...)``, which for two classes are the log-odds of
    class 1 alone ``(1, ...)``: then class 0 at zero and class 1 at them, ``(2, ...)``."""
    return np.concatenate([np.zeros_like(values), values]) if len(values) == 1 else values


def _lda(shrinkage: float | None) -> Any:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return LinearDiscriminantAnalysis(
        solver="lsqr", shrinkage="auto" if shrinkage is None else shrinkage
    )


def _linear_rule(lda: Any, with_bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A fitted LDA's decision rule as weight ``(C, D)`` and bias ``(C,)`` (None without)."""
    weight = torch.from_numpy(_one_row_per_class(lda.coef_))
    bias = torch.from_numpy(_one_row_per_class(lda.intercept_)) if with_bias else None
    return weight, bias


def _decisions(features: np.ndarray, weight: torch.Tensor, bias: torch.Tensor | None):
    logits = torch.from_numpy(features) @ weight.T
    return logits if bias is None else logits + bias


def _out_of_fold(
    features: np.ndarray, labels: np.ndarray, shrinkage: float | None, with_bias: bool
) -> tuple[int, float, float]:
    """Folds, out-of-fold accuracy and the fitted scale of the rule's decisions on ``features``
    ``(N, D)``, each fold's rule fitted on the others; (0, nan, 1.0) when some class has a
    single example."""
    from sklearn.model_selection import StratifiedKFold

    folds = min(CALIBRATION_FOLDS, int(np.bincount(labels).min()))
    if folds < BINARY:
        return 0, math.nan, 1.0
    logits = torch.empty(len(labels), int(labels.max()) + 1, dtype=torch.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, held in splitter.split(features, labels):
        lda = _lda(shrinkage).fit(features[train], labels[train])
        logits[held] = _decisions(features[held], *_linear_rule(lda, with_bias))
    targets = torch.from_numpy(labels)
    accuracy = float((logits.argmax(1) == targets).float().mean())
    return folds, accuracy, fit_scale(logits.float(), targets).scale


def fit_linear_discriminant(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    shrinkage: float | None = None,
    with_bias: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, DiscriminantHeadFit]:
    """Shrinkage LDA on ``features`` ``(N, D)`` with ``labels`` ``(N,)`` in ``[0, classes)``:
    weight ``(C, D)`` and bias ``(C,)`` (None when ``with_bias`` is False, for heads without
    one: the rule is fitted and calibrated without its intercept), both scaled to the
    out-of-fold confidence, and the fit's summary.

    ``shrinkage``: the identity's weight in the covariance, in [0, 1]; None (the default)
    picks it by the Ledoit-Wolf formula, 1.0 gives the nearest class mean classifier.

    Raises:
        ValueError: fewer than two examples, a label outside ``[0, classes)``, a class with
            no example (LDA has no mean for it), or a shrinkage outside [0, 1].
    """
    if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1] (None: Ledoit-Wolf), got {shrinkage}")
    if len(labels) < BINARY:
        raise ValueError(f"a discriminant head needs at least {BINARY} labelled examples")
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise ValueError(f"labels must lie in [0, {classes}) for this head")
    missing = sorted(set(range(classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(
            "every class needs at least one example; none for classes "
            f"{missing[:MISSING_CLASSES_NAMED]}"
            + (" ..." if len(missing) > MISSING_CLASSES_NAMED else "")
        )
    data = features.double().numpy()
    targets = labels.numpy()
    folds, cross_validated, scale = _out_of_fold(data, targets, shrinkage, with_bias)
    weight, bias = _linear_rule(_lda(shrinkage).fit(data, targets), with_bias)
    own = _decisions(data, weight, bias).argmax(1).numpy()
    fit = DiscriminantHeadFit(
        examples=len(labels),
        classes=classes,
        support_accuracy=float((own == targets).mean()),
        folds=folds,
        cross_validated_accuracy=cross_validated,
        scale=scale,
    )
    return scale * weight, None if bias is None else scale * bias, fit


@torch.no_grad()
def fit_discriminant_head(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    shrinkage: float | None = None,
) -> DiscriminantHeadFit:
    """Replaces an image model's classifier weight and bias (in place) by shrinkage LDA fitted
    on the pre-logit features of ``images`` ``(N, C_in, H, W)`` with ``labels`` ``(N,)``
    (:func:`fit_linear_discriminant`).

    Raises:
        ValueError: as :func:`fit_linear_discriminant`.
        TypeError: the model has no linear classifier head, or one without a bias.
    """
    head = classifier_head(model)
    if head.bias is None:
        raise TypeError("the classifier head has no bias; a discriminant head needs one")
    features = head_features(model, head, images)
    weight, bias, fit = fit_linear_discriminant(features, labels, head.out_features, shrinkage)
    head.weight.copy_(weight.to(head.weight.dtype))
    head.bias.copy_(bias.to(head.bias.dtype))  # type: ignore[union-attr]
    return fit
