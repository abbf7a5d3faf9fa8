"""Loading any task at any size and channel count: one code path, per-channel statistics of the
converted train split, and the native format left bit-for-bit as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tal.tasks import clear_memory_cache, get_task_info, load_task
from tal.tasks.preprocess import (
    compute_norm_stats,
    convert_channels,
    converted_norm_stats,
    denormalize,
    norm_stats_from_uint8,
    resize_square,
    to_unit_float,
)
from tal.tasks.registry import _load_raw

STATS_TOLERANCE = 1e-6
NORM_TOLERANCE = 0.05
PIXEL_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "tal-task-cache"
    root.mkdir(exist_ok=True)
    return root


@pytest.mark.parametrize(
    ("name", "image_size", "in_chans"),
    [("glyphs_digits", 64, 3), ("glyphs_digits", 24, 1), ("emoji_groups", 32, 1)],
)
def test_converted_shapes_labels_and_train_statistics(
    name: str, image_size: int, in_chans: int, task_root: Path
) -> None:
    native = load_task(name, "test", root=task_root, limit=50)
    converted = load_task(
        name, "test", root=task_root, limit=50, image_size=image_size, in_chans=in_chans
    )
    assert converted.images.shape == (50, in_chans, image_size, image_size)
    assert converted.images.dtype == torch.float32
    assert torch.equal(converted.labels, native.labels)
    assert converted.norm.channels == in_chans
    train = load_task(name, "train", root=task_root, image_size=image_size, in_chans=in_chans)
    assert train.norm == converted.norm, "every split uses the converted train split's statistics"
    per_channel = train.images.transpose(0, 1).reshape(in_chans, -1)
    assert per_channel.mean(dim=1).abs().max() < NORM_TOLERANCE
    assert (per_channel.std(dim=1) - 1.0).abs().max() < NORM_TOLERANCE


def test_grey_to_rgb_replicates_and_shares_statistics(task_root: Path) -> None:
    rgb = load_task("glyphs_digits", "val", root=task_root, in_chans=3)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 1])
    assert torch.equal(rgb.images[:, 1], rgb.images[:, 2])
    grey = load_task("glyphs_digits", "val", root=task_root)
    assert rgb.norm.mean == pytest.approx(grey.norm.mean * 3, abs=STATS_TOLERANCE)
    assert rgb.norm.std == pytest.approx(grey.norm.std * 3, abs=STATS_TOLERANCE)
    assert torch.allclose(rgb.images[:, :1], grey.images, atol=PIXEL_TOLERANCE)


def test_grey_rgb_grey_round_trip_is_exact() -> None:
    grey = torch.rand(4, 1, 9, 9)
    back = convert_channels(convert_channels(grey, 3), 1)
    assert back.shape == grey.shape
    assert torch.allclose(back, grey, atol=PIXEL_TOLERANCE)


def test_native_format_is_unchanged_by_naming_it(task_root: Path) -> None:
    info = get_task_info("glyphs_script")
    plain = load_task("glyphs_script", "test", root=task_root)
    named = load_task(
        "glyphs_script", "test", root=task_root, image_size=info.image_size, in_chans=info.in_chans
    )
    assert torch.equal(plain.images, named.images)
    assert plain.norm == named.norm


def test_converted_pixels_are_the_resized_pixels(task_root: Path) -> None:
    """Denormalised, a converted load is exactly convert-then-resize of the stored pixels."""
    converted = load_task(
        "emoji_groups", "test", root=task_root, limit=8, image_size=40, in_chans=1
    )
    stored = _load_raw("emoji_groups", task_root).splits["test"][0][:8]
    expected = resize_square(convert_channels(to_unit_float(stored), 1), 40)
    assert torch.allclose(denormalize(converted.images, converted.norm), expected, atol=1e-5)


def test_chunked_statistics_equal_whole_set_statistics() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1_100, 3, 12, 12), dtype=np.uint8)
    whole = compute_norm_stats(resize_square(convert_channels(to_unit_float(images), 1), 20))
    chunked = converted_norm_stats(images, 20, 1)
    assert chunked.mean == pytest.approx(whole.mean, abs=STATS_TOLERANCE)
    assert chunked.std == pytest.approx(whole.std, abs=STATS_TOLERANCE)
    native = norm_stats_from_uint8(images)
    direct = compute_norm_stats(to_unit_float(images))
    assert native.mean == pytest.approx(direct.mean, abs=STATS_TOLERANCE)
    assert native.std == pytest.approx(direct.std, abs=STATS_TOLERANCE)


def test_converted_loads_are_deterministic_and_owned(task_root: Path) -> None:
    first = load_task("fashion_mnist", "test", root=task_root, limit=16, image_size=48, in_chans=3)
    clear_memory_cache()
    second = load_task("fashion_mnist", "test", root=task_root, limit=16, image_size=48, in_chans=3)
    assert torch.equal(first.images, second.images)
    assert first.norm == second.norm
    second.images.add_(1.0)
    third = load_task("fashion_mnist", "test", root=task_root, limit=16, image_size=48, in_chans=3)
    assert torch.equal(first.images, third.images)


def test_bad_formats_are_clear_errors(task_root: Path) -> None:
    with pytest.raises(ValueError, match="in_chans must be 1 or 3"):
        load_task("glyphs_digits", "test", root=task_root, limit=4, in_chans=2)
    with pytest.raises(ValueError, match="image_size must be positive"):
        load_task("glyphs_digits", "test", root=task_root, limit=4, image_size=0)
