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


def _out_of_fold_scale(
    features: np.ndarray, labels: np.ndarray, lda: Any
) -> tuple[int, float, float]:
    """Folds, out-of-fold accuracy and the fitted scale of ``lda``'s decisions on ``features``
    ``(N, D)``; (0, nan, 1.0) when some class has a single example."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = min(CALIBRATION_FOLDS, int(np.bincount(labels).min()))
    if folds < BINARY:
        return 0, math.nan, 1.0
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    decisions = cross_val_predict(
        clone(lda), features, labels, cv=splitter, method="decision_function"
    )  # (N, C), or (N,) for two classes
    per_class = _one_row_per_class(np.atleast_2d(decisions.T))  # (C, N)
    logits, targets = torch.from_numpy(per_class.T).float(), torch.from_numpy(labels)
    accuracy = float((logits.argmax(1) == targets).float().mean())
    return folds, accuracy, fit_scale(logits, targets).scale


@torch.no_grad()
def fit_discriminant_head(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    shrinkage: float | None = None,
) -> DiscriminantHeadFit:
    """Replaces the model's classifier weight and bias (in place) by shrinkage LDA fitted on
    the pre-logit features of ``images`` ``(N, C_in, H, W)`` with ``labels`` ``(N,)``.

    ``shrinkage``: the identity's weight in the covariance, in [0, 1]; None (the default)
    picks it by the Ledoit-Wolf formula, 1.0 gives the nearest class mean classifier.

    Raises:
        ValueError: fewer than two examples, a label outside the head's classes, a class
            with no example (LDA has no mean for it), or a shrinkage outside [0, 1].
        TypeError: the model has no linear classifier head, or one without a bias.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    head = classifier_head(model)
    if head.bias is None:
        raise TypeError("the classifier head has no bias; a discriminant head needs one")
    classes = head.out_features
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
    features = head_features(model, head, images).double().numpy()
    targets = labels.numpy()
    lda = LinearDiscriminantAnalysis(
        solver="lsqr", shrinkage="auto" if shrinkage is None else shrinkage
    )
    folds, cross_validated, scale = _out_of_fold_scale(features, targets, lda)
    lda.fit(features, targets)
    weight = torch.from_numpy(_one_row_per_class(lda.coef_))  # (C, D)
    bias = torch.from_numpy(_one_row_per_class(lda.intercept_))  # (C,)
    head.weight.copy_((scale * weight).to(head.weight.dtype))
    head.bias.copy_((scale * bias).to(head.bias.dtype))
    return DiscriminantHeadFit(
        examples=len(labels),
        classes=classes,
        support_accuracy=float((lda.predict(features) == targets).mean()),
        folds=folds,
        cross_validated_accuracy=cross_validated,
        scale=scale,
    )
