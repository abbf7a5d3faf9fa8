"""Loaders for users' own data: image folders, .npz, torchvision and Hugging Face wrappers.

Nothing here downloads: the torchvision test checks the error for absent files, and the Hugging
Face path runs against a stand-in ``datasets`` module.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tal.tasks import (
    NormStats,
    TaskData,
    TaskSourceMissingError,
    load_hf_dataset,
    load_image_folder,
    load_npz,
    load_torchvision,
)
from tal.tasks.user_data import dataset_to_arrays

NORM_TOLERANCE = 1e-4
IMAGES_PER_CLASS = 3
CLASSES = ("cats", "dogs")


def _assert_task_data(data: TaskData, n: int, size: int, chans: int, classes: int) -> None:
    assert data.images.shape == (n, chans, size, size)
    assert data.images.dtype == torch.float32
    assert data.labels.shape == (n,)
    assert data.labels.dtype == torch.int64
    assert data.num_classes == classes
    assert int(data.labels.max()) < classes


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``root/<class>/<i>.png``: mixed sizes and modes (gray, RGB, RGBA), plus a stray file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    modes = ("L", "RGB", "RGBA")
    for class_index, class_name in enumerate(CLASSES):
        class_dir = root / class_name
        class_dir.mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            mode = modes[i % len(modes)]
            side = 20 + 8 * i + class_index
            channels = len(mode)
            pixels = rng.integers(0, 256, size=(side, side, channels), dtype=np.uint8)
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(
                class_dir / f"{i}.png"
            )
        (class_dir / "notes.txt").write_text("not an image")
    return root


def test_image_folder_gray_32(image_folder: Path) -> None:
    data = load_image_folder(image_folder, image_size=32, in_chans=1)
    n = IMAGES_PER_CLASS * len(CLASSES)
    _assert_task_data(data, n, 32, 1, len(CLASSES))
    assert data.class_names == CLASSES
    assert data.labels.tolist() == [0] * IMAGES_PER_CLASS + [1] * IMAGES_PER_CLASS
    assert abs(float(data.images.mean())) < NORM_TOLERANCE


def test_image_folder_rgb_other_size_and_limit(image_folder: Path) -> None:
    data = load_image_folder(image_folder, image_size=16, in_chans=3, limit_per_class=2)
    _assert_task_data(data, 2 * len(CLASSES), 16, 3, len(CLASSES))
    assert data.norm.channels == 3


def test_image_folder_reuses_given_stats(image_folder: Path) -> None:
    stats = NormStats((0.5,), (0.25,))
    data = load_image_folder(image_folder, norm=stats)
    assert data.norm == stats
    assert float(data.images.min()) >= -2.0 - NORM_TOLERANCE
    assert float(data.images.max()) <= 2.0 + NORM_TOLERANCE


def test_image_folder_errors(tmp_path: Path, image_folder: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path / "flat")
    (image_folder / "empty_class").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        load_image_folder(image_folder)


def test_image_folder_unreadable_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad" / "only"
    bad.mkdir(parents=True)
    (bad / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_image_folder(tmp_path / "bad")


def _save_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("shape", "in_chans"),
    [
        ((6, 28, 28), 1),  # (N, H, W)
        ((6, 28, 28, 3), 1),  # (N, H, W, C) RGB -> gray
        ((6, 1, 28, 28), 3),  # (N, C, H, W) gray -> RGB
        ((6, 40, 40, 4), 3),  # RGBA: alpha dropped
    ],
)
def test_npz_layouts(tmp_path: Path, shape: tuple[int, ...], in_chans: int) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    path = _save_npz(tmp_path / "d.npz", images=images, labels=labels)
    data = load_npz(path, image_size=32, in_chans=in_chans)
    _assert_task_data(data, 6, 32, in_chans, 3)
    assert data.labels.tolist() == labels.tolist()


def test_npz_layout_values_are_preserved(tmp_path: Path) -> None:
    images = np.zeros((2, 1, 32, 32), dtype=np.uint8)
    images[1] = 255
    hwc = images.transpose(0, 2, 3, 1)
    a = load_npz(_save_npz(tmp_path / "a.npz", images=images, labels=np.array([0, 1])))
    b = load_npz(_save_npz(tmp_path / "b.npz", images=hwc, labels=np.array([0, 1])))
    c = load_npz(_save_npz(tmp_path / "c.npz", images=images[:, 0], labels=np.array([0, 1])))
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.images, c.images)
    assert a.images[0].max() < a.images[1].min()


def test_npz_float_images_and_optional_keys(tmp_path: Path) -> None:
    images = np.random.default_rng(2).random((4, 32, 32), dtype=np.float32)
    path = _save_npz(
        tmp_path / "f.npz",
        images=images,
        labels=np.array([0, 1, 0, 1]),
        num_classes=np.array(5),
        class_names=np.array(["a", "b", "c", "d", "e"]),
    )
    data = load_npz(path, limit=3)
    _assert_task_data(data, 3, 32, 1, 5)
    assert data.class_names == ("a", "b", "c", "d", "e")


def test_npz_wrong_keys(tmp_path: Path) -> None:
    path = _save_npz(tmp_path / "k.npz", x=np.zeros((2, 8, 8)), y=np.zeros(2))
    with pytest.raises(ValueError, match=r"lacks array.*images.*labels"):
        load_npz(path)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.zeros((4, 8)), np.zeros(4, dtype=int), "shape"),
        (np.zeros((4, 8, 8, 8, 1)), np.zeros(4, dtype=int), "shape"),
        (np.zeros((4, 5, 8, 8)), np.zeros(4, dtype=int), "shape"),
        (np.zeros((4, 8, 8)), np.zeros(3, dtype=int), "labels must be"),
        (np.zeros((4, 8, 8)), np.zeros((4, 1), dtype=int), "labels must be"),
        (np.zeros((4, 8, 8)), np.array([0.5, 1, 0, 1]), "integers"),
        (np.zeros((4, 8, 8)), np.array([0, -1, 0, 1]), "non-negative"),
        (np.zeros((0, 8, 8)), np.zeros(0, dtype=int), "no images"),
    ],
)
def test_npz_bad_shapes(tmp_path: Path, images: np.ndarray, labels: np.ndarray, match: str) -> None:
    path = _save_npz(tmp_path / "bad.npz", images=images, labels=labels)
    with pytest.raises(ValueError, match=match):
        load_npz(path)


def test_npz_label_outside_num_classes(tmp_path: Path) -> None:
    path = _save_npz(
        tmp_path / "n.npz",
        images=np.zeros((2, 8, 8)),
        labels=np.array([0, 4]),
        num_classes=np.array(3),
    )
    with pytest.raises(ValueError, match="out of range"):
        load_npz(path)


def test_npz_missing_or_not_npz(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "absent.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        load_npz(junk)


def test_torchvision_missing_dataset_without_download(tmp_path: Path) -> None:
    with pytest.raises(TaskSourceMissingError, match="CIFAR100"):
        load_torchvision("CIFAR100", tmp_path, "train", download=False)


def test_torchvision_bad_name_and_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no data set class"):
        load_torchvision("NotADataset", tmp_path, "train")
    with pytest.raises(ValueError, match="val"):
        load_torchvision("CIFAR10", tmp_path, "val")


def test_dataset_to_arrays_iterates_pil_datasets() -> None:
    from torchvision.datasets import FakeData

    fake = FakeData(size=5, image_size=(3, 20, 24), num_classes=4, random_offset=0)
    images, labels = dataset_to_arrays(fake, limit=3)
    assert len(images) == 3
    assert all(isinstance(img, Image.Image) for img in images)
    assert labels.dtype == np.int64
    assert labels.shape == (3,)


def test_dataset_to_arrays_uses_data_and_targets() -> None:
    class ArrayDataset:
        def __init__(self) -> None:
            self.data = np.zeros((7, 32, 32, 3), dtype=np.uint8)
            self.targets = list(range(7))

        def __len__(self) -> int:
            return 7

    images, labels = dataset_to_arrays(ArrayDataset(), limit=4)
    assert images.shape == (4, 32, 32, 3)
    assert labels.tolist() == [0, 1, 2, 3]


class _FakeHFDataset:
    """Just enough of ``datasets.Dataset`` for the loader."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(3)
        self.rows = [
            {
                "img": Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), "RGB"),
                "fine_label": i % 3,
            }
            for i in range(n)
        ]
        self.column_names = ["img", "fine_label"]
        self.features = {"fine_label": types.SimpleNamespace(names=["x", "y", "z"])}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


def test_hf_loader_with_stand_in_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def load_dataset(name: str, split: str, **_: Any) -> _FakeHFDataset:
        calls.append((name, split))
        return _FakeHFDataset(6)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_hf_dataset("cifar100", "test", image_size=32, in_chans=1, limit=5)
    assert calls == [("cifar100", "test")]
    _assert_task_data(data, 5, 32, 1, 3)
    assert data.class_names == ("x", "y", "z")
    with pytest.raises(ValueError, match="label column"):
        load_hf_dataset("cifar100", "test", label_key="coarse_label")


def test_hf_loader_without_datasets_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="pip install datasets"):
        load_hf_dataset("cifar100", "train")
