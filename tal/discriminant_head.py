"""A classifier head for a task the hypernetwork never trained a head on, fitted in closed form.

For a new task the hypernetwork knows the task only by an embedding of a few hundred images; the
head rows it predicts follow no class order it could have learned, so their argmax is near chance
(docs/ablations.md, round 8). The same labelled images give a better head without a gradient
step: linear discriminant analysis on the model's pre-logit features (class means and one shared
covariance, shrunk towards a multiple of the identity by the Ledoit-Wolf formula, since a few
hundred examples do not determine a ``D x D`` covariance). Its decision function is linear in the
features, so it is written into the model's linear head as weight ``(C, D)`` and bias ``(C,)``;
the rest of the model keeps its predicted weights.

Needs scikit-learn (the ``models`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tal.head_calibration import classifier_head, head_features

BINARY = 2  # scikit-learn returns one decision row for two classes


@dataclass(frozen=True)
class DiscriminantHeadFit:
    """What the fit used and how well the new head classifies its own examples."""

    examples: int
    classes: int
    support_accuracy: float


def _linear_rows(coef: torch.Tensor, intercept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's decision function as one row per class: ``(C, D)``, ``(C,)``. For two
    classes it is the log-odds of class 1 alone, i.e. class 0 at zero and class 1 at it."""
    if coef.shape[0] == 1:
        return torch.cat([torch.zeros_like(coef), coef]), torch.cat(
            [torch.zeros_like(intercept), intercept]
        )
    return coef, intercept


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
            f"every class needs at least one example; none for classes {missing[:10]}"
            + (" ..." if len(missing) > 10 else "")
        )
    features = head_features(model, head, images).double().numpy()
    lda = LinearDiscriminantAnalysis(
        solver="lsqr", shrinkage="auto" if shrinkage is None else shrinkage
    )
    lda.fit(features, labels.numpy())
    weight, bias = _linear_rows(torch.from_numpy(lda.coef_), torch.from_numpy(lda.intercept_))
    head.weight.copy_(weight.to(head.weight.dtype))
    head.bias.copy_(bias.to(head.bias.dtype))
    return DiscriminantHeadFit(
        examples=len(labels),
        classes=classes,
        support_accuracy=float((lda.predict(features) == labels.numpy()).mean()),
    )
