"""What the training-free transfers share: which source tensor feeds each target tensor, and
everything about that mapping that is not a change of width.

A transfer builds the target's own timm initialisation (seeded), then, for every target
parameter, finds its source tensor and brings every axis that is *not* a width axis to the
target's size here, identically for every method:

* **Depth.** Target block ``i`` takes source block ``i`` while the source has one (the first
  blocks, as weight selection's "first-N" layer selection). Blocks beyond the source's depth
  keep the target's initialisation with their residual output projections (``attn.proj`` and
  ``mlp.fc2``, weight and bias) set to zero, so each starts as an identity map and, at equal
  width, the target computes the source's function (no block is repeated: a repeated block
  would apply its residual update twice).
* **Patch embedding.** Channels first: grey -> RGB splits the grey kernel over the channels
  with the BT.601 luma weights (they sum to one, so a grey image repeated into RGB gives the
  source's response, and a colour image gives the response to its luma, the grey the suite
  loader makes from it); C -> grey sums the channels (the response to a grey image repeated
  into C channels); 1 -> C otherwise splits evenly. Then the kernel is resized from the
  source's patch size to the target's with FlexiViT's pseudo-inverse resize (timm's
  ``resample_patch_embed``, bilinear like the suite's image resize), which keeps a patch's
  response when the image is resized with it.
* **Position embedding.** The patch grid is resampled on the 2-D grid (timm's
  ``resample_abs_pos_embed``, bicubic); a class-token row is carried over when both models
  have a class token, else taken from the target's initialisation or dropped.
* **Norms and biases** follow their width axis like any tensor; the final norm is ``norm``
  (class token) or ``fc_norm`` (average pooling) on either side.
* **Classifier head.** ``head_rows = (start, stop)`` selects the source head's rows of a task it
  learned (the ancestry's union head, its ``task_offsets``); with ``head_rows=None`` the head
  keeps the target's timm initialisation (a random head at timm's default scale: untrained
  accuracy is then chance, and a head can be fitted on top, as for any unseen task).

What remains, a tensor whose width axes (embedding, attention, MLP hidden) still have the
source's sizes, goes to the method's :data:`WidthMap` together with the target's initial
tensor of the right shape (a fill where the method needs one). Tensors are stored as timm
names them (``tal.arch.graph`` slot names).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from tal.arch.graph import build_graph
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.tasks.preprocess import LUMA_WEIGHTS

GREY, RGB = 1, 3
QKV_PARTS = 3
PATCH_RESAMPLE = "bilinear"
"""Interpolation of the patch-kernel resize: the suite's image resize is bilinear too."""
POS_RESAMPLE = "bicubic"
"""Interpolation of the position-embedding grid (timm's default for resizing ViTs)."""
IDENTITY_BLOCK_OUTPUTS = ("attn.proj", "mlp.fc2")
"""A block's residual output projections: zero in blocks beyond the source's depth."""
FINAL_NORMS = ("norm", "fc_norm")
BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


class Axis(Enum):
    """A width axis: its size depends on the architecture's width, not on its input."""

    EMBED = "embed"
    ATTENTION = "attention"
    HIDDEN = "hidden"


@dataclass(frozen=True)
class TensorRole:
    """How a tensor's axes map between widths.

    Attributes:
        axes: per axis of the (viewed) tensor, its width axis, or None for an axis that is
            already the target's size when the method sees it.
        fan_in_dim: the axis whose size is the tensor's fan-in when that is a width axis
            (weight matrices), else None (vectors, embeddings, the patch kernel).
        qkv: stored as ``(3 * A, ...)``: the method sees a ``(3, A, ...)`` view so q, k and v
            are mapped separately.
    """

    axes: tuple[Axis | None, ...]
    fan_in_dim: int | None = None
    qkv: bool = False


_E, _A, _H = Axis.EMBED, Axis.ATTENTION, Axis.HIDDEN
_VECTOR = TensorRole((_E,))
_BLOCK_ROLES: dict[str, TensorRole] = {
    "norm1.weight": _VECTOR,
    "norm1.bias": _VECTOR,
    "attn.qkv.weight": TensorRole((None, _A, _E), fan_in_dim=2, qkv=True),
    "attn.qkv.bias": TensorRole((None, _A), qkv=True),
    "attn.proj.weight": TensorRole((_E, _A), fan_in_dim=1),
    "attn.proj.bias": _VECTOR,
    "norm2.weight": _VECTOR,
    "norm2.bias": _VECTOR,
    "mlp.fc1.weight": TensorRole((_H, _E), fan_in_dim=1),
    "mlp.fc1.bias": TensorRole((_H,)),
    "mlp.fc2.weight": TensorRole((_E, _H), fan_in_dim=1),
    "mlp.fc2.bias": _VECTOR,
}
_TOP_ROLES: dict[str, TensorRole] = {
    "patch_embed.proj.weight": TensorRole((_E, None, None, None)),
    "patch_embed.proj.bias": _VECTOR,
    "cls_token": TensorRole((None, None, _E)),
    "pos_embed": TensorRole((None, None, _E)),
    **{f"{norm}.{p}": _VECTOR for norm in FINAL_NORMS for p in ("weight", "bias")},
    "head.weight": TensorRole((None, _E), fan_in_dim=1),
    "head.bias": TensorRole((None,)),
}

WidthMap = Callable[[torch.Tensor, torch.Tensor, TensorRole], torch.Tensor]
"""``(source, target_init, role) -> tensor of target_init's shape``: a method's change of width.

``source`` has the target's sizes on every axis whose role is None and the source's on the
width axes; ``target_init`` is the target's own initial tensor (same dtype)."""


def role_of(name: str) -> TensorRole:
    """The role of a timm ViT parameter; ``ValueError`` for a name a plain ViT does not have."""
    match = BLOCK_NAME.match(name)
    roles, local = (_BLOCK_ROLES, match.group(2)) if match else (_TOP_ROLES, name)
    if local not in roles:
        raise ValueError(f"{name!r} is not a parameter of a plain timm ViT")
    return roles[local]


def target_initial_state(target: ViTSpec, seed: int) -> dict[str, torch.Tensor]:
    """The target's timm initialisation under ``torch.manual_seed(seed)`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(target, "timm")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def convert_kernel_channels(kernel: torch.Tensor, in_chans: int) -> torch.Tensor:
    """``(D, C, p, p)`` patch kernel -> ``(D, in_chans, p, p)`` (see the module docstring)."""
    channels = kernel.shape[1]
    if channels == in_chans:
        return kernel
    if (channels, in_chans) == (GREY, RGB):
        luma = torch.tensor(LUMA_WEIGHTS, dtype=kernel.dtype, device=kernel.device)
        luma = luma.view(1, RGB, 1, 1)
        return kernel * luma
    if in_chans == GREY:
        return kernel.sum(dim=1, keepdim=True)
    if channels == GREY:
        return kernel.expand(-1, in_chans, -1, -1) / in_chans
    raise ValueError(
        f"cannot map a {channels}-channel patch embedding to {in_chans} channels; "
        f"one side must have 1 channel, or both the same count"
    )


def _grid(spec: ViTSpec) -> list[int]:
    side = spec.img_size // spec.patch_size
    return [side, side]


def _pos_embed(source: ViTSpec, pos: torch.Tensor, target: ViTSpec, init: torch.Tensor):
    """``(1, T_s, E_s)`` -> ``(1, T_t, E_s)``: the patch grid resampled, prefix row handled."""
    prefix = int(source.class_token)
    grid = resample_abs_pos_embed(
        pos,
        new_size=_grid(target),
        old_size=_grid(source),
        num_prefix_tokens=prefix,
        interpolation=POS_RESAMPLE,
        antialias=True,
    )
    patches = grid[:, prefix:]
    if not target.class_token:
        return patches
    if source.class_token:
        return torch.cat([grid[:, :prefix], patches], dim=1)
    filler = pos.new_zeros(1, 1, pos.shape[-1])
    filler[..., : min(pos.shape[-1], init.shape[-1])] = init[:, :1, : pos.shape[-1]]
    return torch.cat([filler, patches], dim=1)


def source_name(name: str, source: ViTSpec, target: ViTSpec) -> str | None:
    """The source parameter feeding target parameter ``name`` (None: keep the target init)."""
    match = BLOCK_NAME.match(name)
    if match:
        return name if int(match.group(1)) < source.depth else None
    norm, _, param = name.partition(".")
    if norm in FINAL_NORMS:
        return f"{'norm' if source.class_token else 'fc_norm'}.{param}"
    if name == "cls_token" and not source.class_token:
        return None
    return name


def aligned_source(
    name: str,
    tensor: torch.Tensor,
    source: ViTSpec,
    target: ViTSpec,
    init: torch.Tensor,
    head_rows: tuple[int, int] | None,
) -> torch.Tensor | None:
    """The source tensor with every non-width axis at the target's size (None: keep init)."""
    if name == "patch_embed.proj.weight":
        kernel = convert_kernel_channels(tensor, target.in_chans)
        size = [target.patch_size, target.patch_size]
        return resample_patch_embed(kernel, size, interpolation=PATCH_RESAMPLE, antialias=True)
    if name == "pos_embed":
        return _pos_embed(source, tensor, target, init)
    if name.startswith("head."):
        if head_rows is None:
            return None
        start, stop = head_rows
        return tensor[start:stop]
    return tensor


def check_state(spec: ViTSpec, state: Mapping[str, torch.Tensor], role: str = "source") -> None:
    """``ValueError`` unless ``state`` has exactly the tensors of ``spec``'s timm ViT (``role``
    names the state in the message)."""
    expected = {slot.name: slot.stored_shape for slot in build_graph(spec).params}
    got = {name: tuple(t.shape) for name, t in state.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))[:4]
        extra = sorted(set(got) - set(expected))[:4]
        shapes = [n for n in expected if n in got and got[n] != expected[n]][:4]
        raise ValueError(
            f"{role} state dict does not match its spec: missing {missing}, unexpected "
            f"{extra}, wrong shapes {shapes}"
        )


def _check_head_rows(head_rows: tuple[int, int] | None, source: ViTSpec, target: ViTSpec):
    if head_rows is None:
        return
    start, stop = head_rows
    if not 0 <= start < stop <= source.num_classes:
        raise ValueError(
            f"head_rows {head_rows} must lie within the source head's {source.num_classes} rows"
        )
    if stop - start != target.num_classes:
        raise ValueError(
            f"head_rows {head_rows} select {stop - start} classes but the target has "
            f"num_classes={target.num_classes}; set the target's num_classes to match"
        )


def _qkv_view(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(QKV_PARTS, tensor.shape[0] // QKV_PARTS, *tensor.shape[1:])


def transfer_state(
    source: ViTSpec,
    source_state: Mapping[str, torch.Tensor],
    target: ViTSpec,
    width_map: WidthMap,
    seed: int = 0,
    head_rows: tuple[int, int] | None = None,
    initial: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The target's timm state dict: each tensor from its source through ``width_map``.

    Args:
        source: the source ViT's spec; ``source_state`` its timm state dict.
        target: the target ViT's spec.
        width_map: the method's change of width (see :data:`WidthMap`).
        seed: seeds the target's initialisation (the fill of whatever has no source).
        head_rows: ``(start, stop)`` rows of the source head to keep (a task it learned);
            None keeps the target's initial head.
        initial: the target's initial state (timm names), the fill of whatever has no
            source; None: timm's initialisation seeded by ``seed``.

    Returns:
        float tensors named and shaped as ``build_model(target, "timm").state_dict()``
        (loads with ``strict=True``); the same inputs give the same bytes.
    """
    if not isinstance(source, ViTSpec) or not isinstance(target, ViTSpec):
        raise TypeError("weight transfers map a ViT to a ViT; got " + type(target).__name__)
    check_state(source, source_state)
    _check_head_rows(head_rows, source, target)
    if initial is None:
        init = target_initial_state(target, seed)
    else:
        check_state(target, initial, "initial")
        init = {name: tensor.detach().clone() for name, tensor in initial.items()}
    result: dict[str, torch.Tensor] = {}
    for name, fill in init.items():
        from_name = source_name(name, source, target)
        aligned = None
        if from_name is not None and from_name in source_state:
            tensor = source_state[from_name].detach().to(fill.dtype)
            aligned = aligned_source(name, tensor, source, target, fill, head_rows)
        if aligned is not None:
            fill = map_width(aligned, fill, role_of(name), width_map)
        result[name] = fill.zero_() if is_identity_output(name, source.depth) else fill
    return result


def is_identity_output(name: str, source_depth: int) -> bool:
    """Whether target parameter ``name`` is a residual output projection of a block past
    ``source_depth`` (zero: the block starts as an identity map)."""
    match = BLOCK_NAME.match(name)
    return bool(
        match
        and int(match.group(1)) >= source_depth
        and any(match.group(2).startswith(f"{output}.") for output in IDENTITY_BLOCK_OUTPUTS)
    )


def map_width(
    aligned: torch.Tensor, fill: torch.Tensor, role: TensorRole, width_map: WidthMap
) -> torch.Tensor:
    """``aligned`` (the source with every non-width axis at the target's size) brought to
    ``fill``'s shape by ``width_map``, q, k and v mapped separately."""
    fixed = [dim for dim, axis in enumerate(role.axes) if axis is None and not role.qkv]
    if aligned.ndim != fill.ndim or any(aligned.shape[d] != fill.shape[d] for d in fixed):
        raise RuntimeError(
            f"aligned source {tuple(aligned.shape)} and target {tuple(fill.shape)} differ "
            f"outside their width axes {role.axes}"
        )
    if role.qkv:
        mapped = width_map(_qkv_view(aligned), _qkv_view(fill), role)
        return mapped.reshape(fill.shape).contiguous()
    return width_map(aligned, fill, role).contiguous()
