"""Reach: a learngene's prediction carried to ViTs outside the range it was trained on.

A learngene trains on one model library (``tal.arch.libraries``): depths and widths within
its width rules, head widths and MLP ratios within bounds, one input format (image size, patch
size, channels). Inside that range the hypernetwork's prediction is served as it is. Outside
it the decoder extrapolates, and its weights were measured at chance (a ViT-S-width model at
64 px RGB: 13% on Fashion-MNIST, timm's init 14%; docs/user_scale.md).

So for a target outside the range the learngene predicts its **proxy**, the target projected
into the range (:meth:`TrainedRange.proxy`: depth and width clamped to the library's rules, the
head width kept as near the target's as the range allows, the library's input format), and
the proxy's weights are **lifted** to the target by the FRONT-style DCT transfer
(:mod:`tal.transfer.dct_transfer`): every width axis keeps its low frequencies, the proxy's
blocks come first and the blocks past its depth start as identity maps, the patch kernel is
spread over the channels by luma and resized by pseudo-inverse, the position grid is
resampled. The head is the proxy's predicted head (same classes), brought to the target's
width. What has no source in the proxy (the inner weights of the blocks past its depth, whose
residual outputs are zero) keeps the target's own prediction, the ``initial`` state.

Last, the residual stream is scaled up by the width ratio (:func:`scale_residual_stream`),
which leaves the function unchanged: every block reads the stream through a LayerNorm, and
the final norm precedes the head. Adam moves every weight by about the learning rate whatever
its scale, so a branch writing into a stream ``r`` times wider changes it more per step; at a
ViT-S-width model lifted from width 192, fine-tuning on 300 images at lr 5e-4 fell from 78% to
56% without the gain and to 69% with it (docs/lab/user_scale.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tal.arch.libraries import PRESETS, LibraryPreset
from tal.arch.specs import ViTSpec

from .dct_transfer import dct_transfer
from .layout import IDENTITY_BLOCK_OUTPUTS

STREAM_INPUTS = ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed")
"""What writes the residual stream before the first block (beside the blocks' outputs)."""


@dataclass(frozen=True)
class DepthWidths:
    """Widths ``low..high`` trained at depths ``min_depth..max_depth``."""

    min_depth: int
    max_depth: int
    low: int
    high: int


@dataclass(frozen=True)
class TrainedRange:
    """The ViT shapes and input format a learngene's model library covers.

    Attributes:
        widths: per depth band, the trained widths (a library's width rules).
        head_dims: ``(min, max)`` width per attention head.
        mlp_ratios: ``(min, max)`` MLP ratio.
        img_size, patch_size, in_chans: the one input format of the library.
    """

    widths: tuple[DepthWidths, ...]
    head_dims: tuple[int, int]
    mlp_ratios: tuple[float, float]
    img_size: int
    patch_size: int
    in_chans: int

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
            img_size=preset.img_size,
            patch_size=preset.patch_size,
            in_chans=preset.in_chans,
        )

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
        clamped; the library's input format, a class token and qkv biases. Classes and the norm
        epsilon are the target's."""
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
                "img_size": self.img_size,
                "patch_size": self.patch_size,
                "in_chans": self.in_chans,
                "class_token": True,
                "qkv_bias": True,
            }
        )


def lift(
    proxy: ViTSpec,
    proxy_state: Mapping[str, torch.Tensor],
    target: ViTSpec,
    initial: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The target's timm state dict lifted from the proxy's by the DCT transfer.

    Args:
        proxy: the spec ``proxy_state`` (timm names) was predicted for; same ``num_classes``
            as ``target``.
        target: the spec to lift to.
        initial: a timm state dict of ``target`` that fills what has no source in the proxy.

    Returns:
        float tensors named and shaped as the target's timm ``state_dict``, the residual
        stream scaled by ``max(1, target width / proxy width)``.
    """
    if proxy.num_classes != target.num_classes:
        raise ValueError(
            f"proxy has {proxy.num_classes} classes, target {target.num_classes}: they must match"
        )
    head_rows = (0, target.num_classes) if target.num_classes else None
    lifted = dct_transfer(proxy, proxy_state, target, head_rows=head_rows, initial=initial)
    return scale_residual_stream(lifted, max(1.0, target.embed_dim / proxy.embed_dim))


def scale_residual_stream(state: dict[str, torch.Tensor], gain: float) -> dict[str, torch.Tensor]:
    """``state`` (timm names, pre-norm ViT) with everything that writes the residual stream
    (patch embedding, class token, positions, each block's attention and MLP output
    projections) multiplied by ``gain``: the logits are unchanged up to the norms' epsilon."""
    for name, tensor in list(state.items()):
        block_output = name.startswith("blocks.") and any(
            f".{output}." in name for output in IDENTITY_BLOCK_OUTPUTS
        )
        if block_output or name in STREAM_INPUTS:
            state[name] = tensor * gain
    return state
