"""Array helpers: scaling, padding, channel conversion, resizing and normalisation."""

from __future__ import annotations

import numpy as np
import torch

from .data import NormStats

PIXEL_MAX = 255.0
"""Largest value of an 8-bit pixel."""

MIN_STD = 1e-6
"""Floor on a channel's standard deviation, so a constant channel does not divide by zero."""

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights turning RGB into luma (the same as Pillow's ``convert("L")``)."""

GRAY, RGB, RGBA = 1, 3, 4
CHANNEL_COUNTS = (GRAY, RGB, RGBA)
"""Channel counts an input image may have."""


def pad_to_square(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``(N, H, W)`` images equally on all sides to ``(N, size, size)``.

    Raises ``ValueError`` if an image is larger than ``size``.
    """
    if images.ndim != 3:
        raise ValueError(f"expected (N, H, W), got shape {images.shape}")
    _, height, width = images.shape
    if height > size or width > size:
        raise ValueError(f"cannot pad {height}x{width} images down to {size}x{size}")
    top, left = (size - height) // 2, (size - width) // 2
    padding = ((0, 0), (top, size - height - top), (left, size - width - left))
    return np.pad(images, padding, mode="constant", constant_values=0)


def to_unit_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Turn an image array into a float32 tensor in [0, 1] (same shape).

    Integer arrays are read as 8-bit pixels (divided by 255); float arrays are taken to be in
    [0, 1] already, unless their maximum exceeds 1, in which case they are read as 0..255.
    """
    tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if tensor.dtype == torch.bool:
        return tensor.to(torch.float32)
    if not torch.is_floating_point(tensor):
        return tensor.to(torch.float32) / PIXEL_MAX
    tensor = tensor.to(torch.float32)
    if tensor.numel() and float(tensor.max()) > 1.0:
        tensor = tensor / PIXEL_MAX
    return tensor


def convert_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` images to ``(N, in_chans, H, W)``.

    Alpha (a 4th channel) is dropped; RGB becomes gray by BT.601 luma; gray is repeated into
    RGB. ``in_chans`` must be 1 or 3.
    """
    if in_chans not in (GRAY, RGB):
        raise ValueError(f"in_chans must be {GRAY} or {RGB}, got {in_chans}")
    channels = images.shape[1]
    if channels not in CHANNEL_COUNTS:
        raise ValueError(f"images must have 1, 3 or 4 channels, got {channels}")
    if channels == RGBA:
        images = images[:, :RGB]
        channels = RGB
    if channels == in_chans:
        return images
    if in_chans == GRAY:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype).view(1, RGB, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    return images.expand(-1, RGB, -1, -1).contiguous()


def resize_square(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images to ``(N, C, image_size, image_size)`` (bilinear).

    Downscaling is antialiased; images already of that size are returned unchanged.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if images.shape[-2:] == (image_size, image_size):
        return images
    return torch.nn.functional.interpolate(
        images,
        size=(image_size, image_size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )


def to_input_format(images: torch.Tensor, image_size: int, in_chans: int) -> torch.Tensor:
    """``(N, C, H, W)`` images as a ViT of another input format takes them: resized
    (:func:`resize_square`), then channels converted (:func:`convert_channels`), giving
    ``(N, in_chans, image_size, image_size)``; images already in that format are returned as
    they are."""
    return convert_channels(resize_square(images, image_size), in_chans)


def compute_norm_stats(images: torch.Tensor) -> NormStats:
    """Per-channel mean and std of ``(N, C, H, W)`` images in [0, 1] (computed in float64)."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"need a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).to(torch.float64)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, unbiased=False).clamp_min(MIN_STD)
    return NormStats(tuple(float(m) for m in mean), tuple(float(s) for s in std))


def norm_stats_from_uint8(images: np.ndarray) -> NormStats:
    """Statistics of ``uint8`` images, as for their [0, 1] scaling: single-channel ``(N, H, W)``
    or per channel of ``(N, C, H, W)``.

    Computed exactly from a histogram, so it is cheap and bit-for-bit reproducible.
    """
    if images.ndim == 4:
        per_channel = [norm_stats_from_uint8(images[:, c]) for c in range(images.shape[1])]
        return NormStats(
            tuple(s.mean[0] for s in per_channel), tuple(s.std[0] for s in per_channel)
        )
    counts = np.bincount(images.reshape(-1), minlength=int(PIXEL_MAX) + 1).astype(np.float64)
    values = np.arange(counts.size, dtype=np.float64) / PIXEL_MAX
    total = counts.sum()
    if total == 0:
        raise ValueError("cannot compute statistics of an empty image set")
    mean = float((counts * values).sum() / total)
    var = float((counts * (values - mean) ** 2).sum() / total)
    return NormStats((mean,), (max(var**0.5, MIN_STD),))


STATS_CHUNK = 512
"""Images converted at a time by :func:`converted_norm_stats` (bounds its memory)."""


def converted_norm_stats(
    images: np.ndarray | torch.Tensor, image_size: int, in_chans: int
) -> NormStats:
    """Per-channel mean and std of ``(N, C, H, W)`` images (uint8, or float in [0, 1]) after
    :func:`convert_channels` and :func:`resize_square` to ``in_chans`` x ``image_size``.

    Equal (to float64 rounding) to ``compute_norm_stats`` of the converted set, but converts
    ``STATS_CHUNK`` images at a time, so large sizes need no copy of the whole set.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"need a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    total = torch.zeros(in_chans, dtype=torch.float64)
    total_sq = torch.zeros(in_chans, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], STATS_CHUNK):
        chunk = resize_square(
            convert_channels(to_unit_float(images[start : start + STATS_CHUNK]), in_chans),
            image_size,
        )
        flat = chunk.transpose(0, 1).reshape(in_chans, -1).to(torch.float64)
        total += flat.sum(dim=1)
        total_sq += (flat * flat).sum(dim=1)
        count += flat.shape[1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0.0).sqrt().clamp_min(MIN_STD)
    return NormStats(tuple(float(m) for m in mean), tuple(float(s) for s in std))


def normalize(images: torch.Tensor, norm: NormStats) -> torch.Tensor:
    """Return ``(images - mean) / std`` per channel for ``(N, C, H, W)`` images in [0, 1]."""
    if images.shape[1] != norm.channels:
        raise ValueError(f"{images.shape[1]} channels but stats for {norm.channels}")
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((images.to(torch.float32) - mean) / std).contiguous()


def denormalize(images: torch.Tensor, norm: NormStats) -> torch.Tensor:
    """The inverse of :func:`normalize`: ``(N, C, H, W)`` back to [0, 1] values."""
    mean = torch.tensor(norm.mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=images.dtype).view(1, -1, 1, 1)
    return images * std + mean


def prepare_images(
    images: torch.Tensor, image_size: int, in_chans: int, norm: NormStats | None = None
) -> tuple[torch.Tensor, NormStats]:
    """Bring ``(N, C, H, W)`` images in [0, 1] to the requested size and channels, normalised.

    When ``norm`` is None the statistics are computed from ``images`` themselves (after the
    conversion). Returns the float32 ``(N, in_chans, image_size, image_size)`` tensor and the
    statistics used.
    """
    images = resize_square(convert_channels(images, in_chans), image_size)
    if norm is None:
        norm = compute_norm_stats(images)
    return normalize(images, norm), norm
