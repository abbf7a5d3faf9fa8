"""Reach: a learngene's prediction carried to ViTs outside the range it was trained on.

A learngene trains on one model library (``tal.arch.libraries``): depths and widths within
its width rules, head widths and MLP ratios within bounds, its input formats (image size, patch
size, channels). Inside that range the hypernetwork's prediction is served as it is. Outside
it the decoder extrapolates, and its weights were measured at chance (a ViT-S-width model at
64 px RGB: 13% on Fashion-MNIST, timm's init 14%; docs/user_scale.md).

So for a target outside the range the learngene predicts its **proxy**, the target projected
into the range (:meth:`TrainedRange.proxy`: depth and width clamped to the library's rules, the
head width kept as near the target's as the range allows, the nearest trained input format), and
the proxy's weights are **lifted** to the target: where the target's widths are whole
multiples of the proxy's with heads as wide (ViT-S and ViT-B from the ``cpu`` library's width
192) every width axis is tiled, which carries the proxy's function over exactly
(:mod:`tal.transfer.tile`); otherwise by the FRONT-style DCT transfer
(:mod:`tal.transfer.dct_transfer`), every width axis keeping its low frequencies. Either way the
proxy's blocks come first and the blocks past its depth start as identity maps, the patch
kernel is spread over the channels by luma and resized by pseudo-inverse, the position grid is
resampled. The head is the proxy's predicted head (same classes), brought to the target's
width. What has no source in the proxy (the inner weights of the blocks past its depth, whose
residual outputs are zero) keeps the target's own prediction, the ``initial`` state.

Where the target cuts its images into a finer patch grid than the proxy's
(``vit_small_patch16_224``: 14 x 14 against the ``cpu`` proxy's 4 x 4), resizing the kernel and
resampling the positions leaves every token a sliver of what a proxy token saw, and the lifted
weights were at chance. There the target's first blocks become an **adapter**
(:mod:`tal.transfer.regrid`) that rebuilds, from the fine grid, the lifted stream the proxy's
patch embedding gives the image averaged to the proxy's size; the proxy's lifted blocks follow
it (target block ``i`` takes the proxy's block ``i - adapter depth``). ViT-S/16 at 224 px went
from 18% to 61% untrained on the tasks the ancestry learned (docs/lab/user_scale.md, section 9).

Last, the residual stream is scaled up (:func:`scale_residual_stream`), which leaves the
function unchanged: every block reads the stream through a LayerNorm, and the final norm
precedes the head. Adam moves every weight by about the learning rate whatever its scale, so
small weights that write the stream are rewritten by the first steps of a fine-tune. The gain
(:func:`stream_gain`) is at least the width ratio (a branch writing into a stream ``r`` times
wider changes it more per step: on 300 images at lr 5e-4 a lifted ViT-S-width model fell from
78% to 56% without it and to 69% with it) and brings the blocks' output projections, which the
hypernetwork predicts about ten times smaller than timm initialises them, to timm's scale
(docs/lab/user_scale.md, sections 2 and 10).

Serving (:func:`lift_into`) does this in place: the target is decoded into its output buffer
without the block matrices the lift overwrites (:func:`lifted_matrices`), the proxy's matrices
come as their rank-``r`` factors, and each is lifted factor by factor and composed straight
into its output. :func:`lift` is the same on whole state dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tal.arch.formats import ExportPiece, ExportPlan, export_plan
from tal.arch.graph import ParamSlot, build_graph
from tal.arch.libraries import PRESETS, InputFormat, LibraryPreset
from tal.arch.specs import ViTSpec
from tal.hypernet.decoder import LowRankMatrix

from .dct_transfer import dct_width, dct_width_factors, factored_rms
from .layout import (
    BLOCK_NAME,
    IDENTITY_BLOCK_OUTPUTS,
    aligned_source,
    check_state,
    is_identity_output,
    map_width,
    role_of,
    source_name,
)
from .regrid import plan_regrid, regrid_adapter
from .tile import noise_seed, tile_factors, tile_tensor, tiles

STREAM_INPUTS = ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed")
"""What writes the residual stream before the first block (beside the blocks' outputs)."""
MATRIX_AXES = 2
WRITER_RMS = 0.02
"""What the lift brings the blocks' output projections to (:func:`stream_gain`): the standard
deviation timm initialises a ViT's weights with."""


@dataclass(frozen=True)
class DepthWidths:
    """Widths ``low..high`` trained at depths ``min_depth..max_depth``."""

    min_depth: int
    max_depth: int
    low: int
    high: int


@dataclass(frozen=True)
class TrainedRange:
    """The ViT shapes and input formats a learngene's model library covers.

    Attributes:
        widths: per depth band, the trained widths (a library's width rules).
        head_dims: ``(min, max)`` width per attention head.
        mlp_ratios: ``(min, max)`` MLP ratio.
        formats: the library's input formats (image size, patch size, channels).
    """

    widths: tuple[DepthWidths, ...]
    head_dims: tuple[int, int]
    mlp_ratios: tuple[float, float]
    formats: tuple[InputFormat, ...]

    @classmethod
    def of_library(cls, preset: LibraryPreset) -> TrainedRange:
        """The range of a ViT library preset."""
        if preset.family != "vit":
            raise ValueError(f"a trained range is a ViT library's; got a {preset.family} one")
        return cls(
            widths=tuple(
                DepthWidths(r.min_depth, r.max_depth, r.low, r.high) for r in preset.rules
            ),
            head_dims=preset.head_dims,
            mlp_ratios=(min(preset.mlp_ratios), max(preset.mlp_ratios)),
            formats=preset.formats,
        )

    def nearest_format(self, target: ViTSpec) -> InputFormat:
        """The trained format nearest ``target``'s: its channel count if trained, then the
        nearest patch grid (patches per side, the token layout the blocks see), then the nearest
        image size (both on a log scale)."""
        grid = target.img_size // target.patch_size

        def distance(fmt: InputFormat) -> tuple[bool, float, float]:
            return (
                fmt.in_chans != target.in_chans,
                abs(math.log(fmt.img_size // fmt.patch_size / grid)),
                abs(math.log(fmt.img_size / target.img_size)),
            )

        return min(self.formats, key=distance)

    @classmethod
    def of_manifest(cls, manifest: Mapping[str, object]) -> TrainedRange | None:
        """The range of the library a stored learngene's manifest names (None without one)."""
        library = manifest.get("library")
        name = library.get("name") if isinstance(library, Mapping) else None
        if name not in PRESETS or PRESETS[name].family != "vit":
            return None
        return cls.of_library(PRESETS[name])

    def contains(self, spec: ViTSpec) -> bool:
        """Whether the learngene predicts ``spec`` itself (its own proxy)."""
        return self.proxy(spec) == spec

    def proxy(self, target: ViTSpec) -> ViTSpec:
        """The spec in this range nearest ``target``: depth, then width for that depth, clamped
        to the rules; the head count whose head width is nearest the target's; MLP ratio
        clamped; the nearest trained input format (:meth:`nearest_format`), a class token and
        qkv biases. Classes and the norm epsilon are the target's."""
        image_format = self.nearest_format(target)
        min_depth = min(band.min_depth for band in self.widths)
        max_depth = max(band.max_depth for band in self.widths)
        depth = min(max(target.depth, min_depth), max_depth)
        band = next(b for b in self.widths if b.min_depth <= depth <= b.max_depth)
        width = min(max(target.embed_dim, band.low), band.high)
        low, high = self.head_dims
        head_dim = target.embed_dim / target.num_heads
        candidates = [
            h for h in range(1, width + 1) if width % h == 0 and low <= width // h <= high
        ]
        if width == target.embed_dim and target.num_heads in candidates:
            heads = target.num_heads
        else:
            heads = min(candidates or [1], key=lambda h: (abs(width / h - head_dim), h))
        return target.model_copy(
            update={
                "depth": depth,
                "embed_dim": width,
                "num_heads": heads,
                "mlp_ratio": min(max(target.mlp_ratio, self.mlp_ratios[0]), self.mlp_ratios[1]),
                "img_size": image_format.img_size,
                "patch_size": image_format.patch_size,
                "in_chans": image_format.in_chans,
                "class_token": True,
                "qkv_bias": True,
            }
        )


def lift(
    proxy: ViTSpec,
    proxy_state: Mapping[str, torch.Tensor | LowRankMatrix],
    target: ViTSpec,
    initial: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The target's timm state dict lifted from the proxy's (tiled or by the DCT transfer).

    Args:
        proxy: the spec ``proxy_state`` (timm names) was predicted for; same ``num_classes``
            as ``target``.
        target: the spec to lift to.
        initial: a timm state dict of ``target`` that fills what has no source in the proxy.

    Returns:
        float tensors named and shaped as the target's timm ``state_dict`` (``initial``'s
        dtype), the residual stream scaled by :func:`stream_gain`.
    """
    check_state(target, initial, "initial")
    lifted = {name: tensor.detach().clone() for name, tensor in initial.items()}
    lift_into(proxy, proxy_state, target, lifted, export_plan(target, "timm"))
    return lifted


def lift_into(
    proxy: ViTSpec,
    proxy_state: Mapping[str, torch.Tensor | LowRankMatrix],
    target: ViTSpec,
    outputs: Mapping[str, torch.Tensor],
    plan: ExportPlan,
) -> None:
    """Lifts the proxy's weights into ``outputs``, the target's own prediction, in place.

    ``outputs`` holds the target's tensors as ``plan`` names and stores them (any format and
    dtype; e.g. views of a blob's payload): each tensor with a source in the proxy is
    overwritten by the proxy's, lifted (:func:`lift`), and the rest keep the prediction. A
    proxy matrix given as a :class:`LowRankMatrix` (the decoder's factors) is lifted factor by
    factor (:func:`tal.transfer.tile.tile_factors`, or
    :func:`tal.transfer.dct_transfer.dct_width_factors`) and its product written
    straight into its output, so a lift copies no weights and costs little more than
    composing them.
    """
    if proxy.num_classes != target.num_classes:
        raise ValueError(
            f"proxy has {proxy.num_classes} classes, target {target.num_classes}: they must match"
        )
    if set(outputs) != set(plan.names):
        raise ValueError("outputs must hold exactly the tensors of the target's export plan")
    proxy_state = _stored_shapes(proxy, proxy_state)
    check_state(proxy, proxy_state)
    exact = tiles(proxy, target)
    gain = stream_gain(proxy, proxy_state, target, exact)
    head_rows = (0, target.num_classes) if target.num_classes else None
    regrid = plan_regrid(proxy, target)
    adapted: set[str] = set()
    if regrid is not None:
        pieces_of = {slot.name: pieces for slot, pieces in plan.pieces}
        inputs = _dense(proxy_state, STREAM_INPUTS)  # what the adapter reads of the proxy
        for name, tensor in regrid_adapter(regrid, inputs, gain):
            _write_pieces(tensor, pieces_of[name], outputs)
            adapted.add(name)
        for name in regrid.zero_mlps():
            for piece in pieces_of[name]:
                outputs[piece.name].zero_()
            adapted.add(name)
    offset = regrid.depth if regrid else 0
    for slot, pieces in plan.pieces:
        if slot.name in adapted:
            continue
        name = proxy_block_name(slot.name, offset)
        if name is None:  # an adapter block's MLP input: inert, the prediction stays
            continue
        if is_identity_output(name, proxy.depth):  # a block past the proxy's depth
            for piece in pieces:
                outputs[piece.name].zero_()
            continue
        scale = gain if writes_residual_stream(name) else 1.0
        from_name = source_name(name, proxy, target)
        source = proxy_state.get(from_name) if from_name is not None else None
        role = role_of(name)
        if source is None:
            _scale_pieces(outputs, pieces, scale)
        elif isinstance(source, LowRankMatrix) and (role.qkv or len(role.axes) == MATRIX_AXES):
            _lift_factors(source, slot, name, exact, pieces, head_rows, scale, outputs)
        else:
            _lift_dense(source, proxy, target, name, exact, pieces, head_rows, scale, outputs)


def proxy_block_name(name: str, offset: int) -> str | None:
    """The target parameter ``name`` as the lift sees it when ``offset`` adapter blocks come
    first (:mod:`tal.transfer.regrid`): block ``i`` is the proxy's block ``i - offset``; None
    for a parameter of an adapter block."""
    match = BLOCK_NAME.match(name)
    if match is None or offset == 0:
        return name
    index = int(match.group(1)) - offset
    return f"blocks.{index}.{match.group(2)}" if index >= 0 else None


def lifted_matrices(proxy: ViTSpec, target: ViTSpec) -> frozenset[str]:
    """The target's block matrices (timm names) that :func:`lift_into` writes whole, whatever
    the prediction held: every matrix of the blocks the proxy has, the residual output
    projections (zeroed) of those past its depth, and what an adapter writes in the blocks
    before them (:meth:`tal.transfer.regrid.RegridPlan.written`). Their prediction can be
    skipped."""
    matrices = ("attn.qkv", *IDENTITY_BLOCK_OUTPUTS, "mlp.fc1")
    regrid = plan_regrid(proxy, target)
    offset = regrid.depth if regrid else 0
    lifted = frozenset(
        f"blocks.{index}.{matrix}.weight"
        for index in range(offset, target.depth)
        for matrix in (matrices if index - offset < proxy.depth else IDENTITY_BLOCK_OUTPUTS)
    )
    return lifted | regrid.written() if regrid else lifted


def _stored_shapes(
    spec: ViTSpec, state: Mapping[str, torch.Tensor | LowRankMatrix]
) -> dict[str, torch.Tensor | LowRankMatrix]:
    """``state`` with every factored tensor whose stored shape is not its matrix's (the patch
    kernel, class token, positions) composed and reshaped as timm stores it."""
    stored = {slot.name: slot.stored_shape for slot in build_graph(spec).params}
    return {
        name: value.dense().reshape(stored[name])
        if isinstance(value, LowRankMatrix) and name in stored and value.shape != stored[name]
        else value
        for name, value in state.items()
    }


def _dense(
    state: Mapping[str, torch.Tensor | LowRankMatrix], names: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    return {
        name: state[name].dense() if isinstance(state[name], LowRankMatrix) else state[name]
        for name in names
    }


def _write_pieces(
    tensor: torch.Tensor, pieces: tuple[ExportPiece, ...], outputs: Mapping[str, torch.Tensor]
) -> None:
    """A whole tensor (timm's shape, or its pieces' stacked) written into its output pieces."""
    parts = [outputs[piece.name] for piece in pieces]
    rows = sum(part.shape[0] for part in parts)
    whole = tensor.reshape(rows, *parts[0].shape[1:])
    for piece, part in zip(pieces, parts, strict=True):
        part.copy_(whole[piece.row_start : piece.row_stop].reshape(piece.stored_shape))


def _lift_factors(
    source: LowRankMatrix,
    slot: ParamSlot,
    name: str,
    exact: bool,
    pieces: tuple[ExportPiece, ...],
    head_rows: tuple[int, int] | None,
    scale: float,
    outputs: Mapping[str, torch.Tensor],
) -> None:
    """A matrix lifted from its factors (tiled when ``exact``, :mod:`tal.transfer.tile`, else
    resized by the DCT), its product composed into its output pieces; ``name`` is the proxy's
    view of the parameter."""
    left, right = source.left, source.right
    if slot.name.startswith("head."):
        if head_rows is None:
            return
        left = left[head_rows[0] : head_rows[1]]
    if slot.transposed:
        raise ValueError(f"{slot.name}: a ViT slot is never stored transposed")
    role = role_of(name)
    if exact:
        left, right = tile_factors(left, right, (slot.rows, slot.cols), role, noise_seed(name))
    else:
        left, right = dct_width_factors(left, right, (slot.rows, slot.cols), role)
    left = left * scale
    for piece in pieces:
        view = outputs[piece.name]
        part = left[piece.row_start : piece.row_stop].to(view.device)
        matrix = view.view(part.shape[0], right.shape[1])
        if view.dtype == part.dtype:
            torch.mm(part, right.to(view.device), out=matrix)
        else:
            matrix.copy_(part @ right.to(view.device))


def _lift_dense(
    source: torch.Tensor | LowRankMatrix,
    proxy: ViTSpec,
    target: ViTSpec,
    name: str,
    exact: bool,
    pieces: tuple[ExportPiece, ...],
    head_rows: tuple[int, int] | None,
    scale: float,
    outputs: Mapping[str, torch.Tensor],
) -> None:
    """A tensor lifted whole (vectors, the patch kernel, embeddings; a matrix given dense) into
    its output pieces, as :func:`_lift_factors` lifts it."""
    parts = [outputs[piece.name] for piece in pieces]
    current = (parts[0] if len(parts) == 1 else torch.cat(parts)).float()
    dense = source.dense() if isinstance(source, LowRankMatrix) else source
    dense = dense.detach().to(current.device, torch.float32)
    aligned = aligned_source(name, dense, proxy, target, current, head_rows)
    if aligned is None:
        return
    role = role_of(name)
    if not exact:
        lifted = map_width(aligned, current, role, dct_width)
    elif role.fan_in_dim is None:
        lifted = tile_tensor(aligned, tuple(current.shape), role)
    else:
        matrix = aligned.reshape(aligned.shape[0], -1)
        identity = torch.eye(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
        left, right = tile_factors(matrix, identity, tuple(current.shape), role, noise_seed(name))
        lifted = left @ right
    _write_pieces(lifted * scale, pieces, outputs)


def _scale_pieces(
    outputs: Mapping[str, torch.Tensor], pieces: tuple[ExportPiece, ...], scale: float
) -> None:
    if scale != 1.0:
        for piece in pieces:
            outputs[piece.name].mul_(scale)


def stream_gain(
    proxy: ViTSpec,
    proxy_state: Mapping[str, torch.Tensor | LowRankMatrix],
    target: ViTSpec,
    exact: bool,
) -> float:
    """The factor the lift multiplies the residual stream by (:func:`scale_residual_stream`):
    at least the width ratio, and enough to bring the blocks' output projections (``attn.proj``
    and ``mlp.fc2``, lifted: tiled when ``exact``, else by the DCT) to an RMS of
    :data:`WRITER_RMS`.

    Adam moves each weight by about the learning rate whatever its size. The hypernetwork
    predicts output projections far smaller than a trained or a timm-initialised ViT's (RMS
    0.002-0.008 against 0.02), so the first steps of a fine-tune rewrote them; scaled up with
    everything else that writes the stream, the function is the same and a step is as small
    beside them as on a timm init (docs/lab/user_scale.md, section 10).
    """
    ratio = max(1.0, target.embed_dim / proxy.embed_dim)
    squares, count = 0.0, 0
    for index in range(proxy.depth):
        for output in IDENTITY_BLOCK_OUTPUTS:
            weight = proxy_state[f"blocks.{index}.{output}.weight"]
            rows, cols = weight.shape
            rms = (
                factored_rms(weight.left, weight.right)
                if isinstance(weight, LowRankMatrix)
                else float(weight.detach().float().pow(2).mean().sqrt())
            )
            fan_in = (target.mlp_hidden_dim if output == "mlp.fc2" else target.embed_dim) / cols
            rms /= max(fan_in, 1.0) if exact else math.sqrt(fan_in)
            squares += rms * rms * rows * cols
            count += rows * cols
    lifted = math.sqrt(squares / count) if count else 0.0
    return max(ratio, WRITER_RMS / lifted) if lifted > 0.0 else ratio


def writes_residual_stream(name: str) -> bool:
    """Whether the timm ViT parameter ``name`` writes the residual stream: the patch
    embedding, class token, positions, and each block's attention and MLP output
    projections."""
    if name.startswith("blocks."):
        return any(f".{output}." in name for output in IDENTITY_BLOCK_OUTPUTS)
    return name in STREAM_INPUTS


def scale_residual_stream(state: dict[str, torch.Tensor], gain: float) -> dict[str, torch.Tensor]:
    """``state`` (timm names, pre-norm ViT) with everything that writes the residual stream
    (:func:`writes_residual_stream`) multiplied by ``gain``: the logits are unchanged up to the
    norms' epsilon."""
    for name, tensor in list(state.items()):
        if writes_residual_stream(name):
            state[name] = tensor * gain
    return state
