"""Loading the built-in tasks: shapes, determinism, splits, caching and missing sources.

The suite is generated once into a pytest temporary directory shared by these tests (never
into ~/.cache).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tal.tasks import (
    SPLITS,
    TaskSourceMissingError,
    UnknownTaskError,
    clear_memory_cache,
    data_fingerprint,
    get_task_info,
    list_tasks,
    load_task,
    task_names,
)
from tal.tasks import fashion_mnist as fm
from tal.tasks.fonts import FONT_DIRS_ENV, clear_font_index
from tal.tasks.glyphs import load_glyph_task_raw
from tal.tasks.registry import GLYPH_SPECS

GLYPH_TASKS = [spec.name for spec in GLYPH_SPECS]
SMALL_LIMIT = 64
NORM_TOLERANCE = 0.05
"""How far the train split's mean may be from 0 and its std from 1 after normalisation."""


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "tal-task-cache"
    root.mkdir(exist_ok=True)
    return root


@pytest.mark.parametrize("name", task_names())
def test_every_split_has_declared_shape_and_dtype(name: str, task_root: Path) -> None:
    info = get_task_info(name)
    for split in SPLITS:
        data = load_task(name, split, root=task_root)
        size = info.split_sizes[split]
        assert data.images.shape == (size, info.in_chans, info.image_size, info.image_size)
        assert data.images.dtype == torch.float32
        assert data.labels.shape == (size,)
        assert data.labels.dtype == torch.int64
        assert data.num_classes == info.num_classes
        assert data.class_names == info.class_names
        assert (data.name, data.split) == (name, split)
        assert int(data.labels.min()) >= 0
        assert int(data.labels.max()) < info.num_classes
        assert torch.isfinite(data.images).all()


@pytest.mark.parametrize("name", task_names())
def test_every_class_appears_in_every_split(name: str, task_root: Path) -> None:
    info = get_task_info(name)
    for split in SPLITS:
        labels = load_task(name, split, root=task_root).labels
        assert torch.unique(labels).numel() == info.num_classes


@pytest.mark.parametrize("name", task_names())
def test_train_split_is_normalised(name: str, task_root: Path) -> None:
    images = load_task(name, "train", root=task_root).images
    assert abs(float(images.mean())) < NORM_TOLERANCE
    assert abs(float(images.std()) - 1.0) < NORM_TOLERANCE


def test_val_and_test_use_train_statistics(task_root: Path) -> None:
    train = load_task("glyphs_digits", "train", root=task_root)
    test = load_task("glyphs_digits", "test", root=task_root)
    assert train.norm == test.norm


@pytest.mark.parametrize("name", task_names())
def test_two_loads_are_identical(name: str, task_root: Path) -> None:
    first = load_task(name, "val", root=task_root)
    clear_memory_cache()  # the second load comes from the disk cache (or the source files)
    second = load_task(name, "val", root=task_root)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    first.images.add_(1.0)  # callers own their tensors: mutating one must not leak
    third = load_task(name, "val", root=task_root)
    assert torch.equal(second.images, third.images)


def test_generation_is_deterministic_across_cache_dirs(task_root: Path, tmp_path: Path) -> None:
    spec = next(s for s in GLYPH_SPECS if s.name == "glyphs_greek")
    cached = load_glyph_task_raw(spec, task_root)
    fresh = load_glyph_task_raw(spec, tmp_path)  # rendered from scratch
    for split in SPLITS:
        assert np.array_equal(cached[split][0], fresh[split][0])
        assert np.array_equal(cached[split][1], fresh[split][1])


def test_limit_takes_a_prefix(task_root: Path) -> None:
    full = load_task("glyphs_latin", "train", root=task_root)
    small = load_task("glyphs_latin", "train", root=task_root, limit=SMALL_LIMIT)
    assert len(small) == SMALL_LIMIT
    assert torch.equal(small.images, full.images[:SMALL_LIMIT])
    assert torch.equal(small.labels, full.labels[:SMALL_LIMIT])
    with pytest.raises(ValueError, match="limit"):
        load_task("glyphs_latin", "train", root=task_root, limit=-1)


def _row_hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in images}


@pytest.mark.parametrize("name", GLYPH_TASKS)
def test_glyph_splits_share_no_image(name: str, task_root: Path) -> None:
    hashes = {split: _row_hashes(load_task(name, split, root=task_root).images) for split in SPLITS}
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_fashion_mnist_val_is_carved_from_train() -> None:
    config = fm.FashionMnistConfig()
    val_idx, train_idx = fm.split_indices(fm.SOURCE_TRAIN_SIZE, config)
    assert len(val_idx) == config.val_size
    assert not set(val_idx.tolist()) & set(train_idx.tolist())
    assert sorted(np.concatenate([val_idx, train_idx]).tolist()) == list(
        range(fm.SOURCE_TRAIN_SIZE)
    )
    again_val, _ = fm.split_indices(fm.SOURCE_TRAIN_SIZE, config)
    assert np.array_equal(val_idx, again_val)


def test_fashion_mnist_is_padded_with_black(task_root: Path) -> None:
    data = load_task("fashion_mnist", "test", root=task_root, limit=SMALL_LIMIT)
    background = -data.norm.mean[0] / data.norm.std[0]
    border = (32 - 28) // 2
    assert torch.allclose(data.images[..., :border, :], torch.tensor(background))
    assert torch.allclose(data.images[..., -border:], torch.tensor(background))


def test_data_fingerprint_is_stable_and_distinct(task_root: Path) -> None:
    prints = {name: data_fingerprint(name, root=task_root) for name in task_names()}
    assert all(len(p) == 64 and int(p, 16) >= 0 for p in prints.values())
    assert len(set(prints.values())) == len(prints)
    clear_memory_cache()
    assert data_fingerprint("glyphs_greek", root=task_root) == prints["glyphs_greek"]


def test_bad_split_and_name(task_root: Path) -> None:
    with pytest.raises(ValueError, match="train, val, test"):
        load_task("glyphs_digits", "validation", root=task_root)
    with pytest.raises(UnknownTaskError, match="glyphs_digits"):
        load_task("cifar1000", "train", root=task_root)


def test_corrupt_cache_file_is_regenerated(tmp_path: Path, task_root: Path) -> None:
    reference = load_task("glyphs_greek", "test", root=task_root)
    load_task("glyphs_greek", "test", root=tmp_path)
    (cache_file,) = tmp_path.glob("glyphs_greek-*.npz")
    cache_file.write_bytes(b"not a zip file")
    clear_memory_cache()
    again = load_task("glyphs_greek", "test", root=tmp_path)
    assert torch.equal(again.images, reference.images)


def test_generator_change_invalidates_cache(tmp_path: Path) -> None:
    import dataclasses

    spec = next(s for s in GLYPH_SPECS if s.name == "glyphs_greek")
    small = dataclasses.replace(spec, per_class=dataclasses.replace(spec.per_class, train=2))
    load_glyph_task_raw(small, tmp_path)
    reseeded = dataclasses.replace(small, seed=small.seed + 1)
    load_glyph_task_raw(reseeded, tmp_path)
    assert len(list(tmp_path.glob("glyphs_greek-*.npz"))) == 2


def test_missing_fonts_name_the_apt_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    monkeypatch.setenv(FONT_DIRS_ENV, str(empty))
    clear_font_index()
    with pytest.raises(TaskSourceMissingError, match="apt-get install -y fonts-") as excinfo:
        load_task("glyphs_digits", "train", root=tmp_path / "cache")
    assert isinstance(excinfo.value, RuntimeError)
    assert "fonts-dejavu-core" in excinfo.value.apt_packages


def test_missing_fashion_mnist_names_the_apt_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.delenv(fm.SOURCE_DIR_ENV, raising=False)
    with pytest.raises(TaskSourceMissingError, match="apt-get install -y dataset-fashion-mnist"):
        load_task("fashion_mnist", "test", root=tmp_path / "cache")


def _write_idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_loader_reads_idx_files_from_root(tmp_path: Path) -> None:
    source = tmp_path / fm.ROOT_SUBDIR
    source.mkdir()
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    _write_idx_gz(source / fm.FILES["train_images"], train_x)
    _write_idx_gz(source / fm.FILES["train_labels"], np.arange(12) % 10)
    _write_idx_gz(source / fm.FILES["test_images"], test_x)
    _write_idx_gz(source / fm.FILES["test_labels"], np.arange(4))
    splits = fm.load_fashion_mnist_raw(tmp_path, fm.FashionMnistConfig(val_size=3))
    assert splits["train"][0].shape == (9, 32, 32)
    assert splits["val"][0].shape == (3, 32, 32)
    assert np.array_equal(splits["test"][0][:, 2:30, 2:30], test_x)
    assert splits["test"][1].dtype == np.int64


def test_parse_idx_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="magic"):
        fm.parse_idx(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="bytes"):
        fm.parse_idx(bytes([0, 0, 0x08, 1]) + np.asarray([5], dtype=">u4").tobytes() + b"\x00")


def test_list_tasks_loadable_sizes_match(task_root: Path) -> None:
    for info in list_tasks():
        assert len(load_task(info.name, "test", root=task_root)) == info.split_sizes.test
