"""Running a real model on predicted tensors while keeping their gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call


def forward_with(
    model: nn.Module, params: dict[str, torch.Tensor], *args: Any, **kwargs: Any
) -> Any:
    """``model(*args, **kwargs)`` with ``params`` in place of its parameters (differentiable).

    ``params`` must name every parameter of ``model`` (buffers come from the model).
    """
    missing = {name for name, _ in model.named_parameters(remove_duplicate=False)} - set(params)
    if missing:
        raise KeyError(f"predicted tensors missing for {sorted(missing)[:5]}")
    return functional_call(model, params, args, kwargs, tie_weights=True, strict=False)
