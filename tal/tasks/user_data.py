"""Loaders for the user's own data, all returning the suite's ``TaskData``.

Each loader resizes and converts images to the requested ``image_size`` and ``in_chans`` and
normalises them, with the given ``norm`` statistics or (by default) statistics computed from
the loaded images themselves; pass a train split's ``TaskData.norm`` when loading its test split.
The torchvision and Hugging Face wrappers import those libraries only when called.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .data import SUITE_IMAGE_SIZE, SUITE_IN_CHANS, NormStats, TaskData, check_split
from .errors import TaskSourceMissingError
from .preprocess import CHANNEL_COUNTS, prepare_images, to_unit_float

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
NPZ_IMAGES_KEY = "images"
NPZ_LABELS_KEY = "labels"
NPZ_NUM_CLASSES_KEY = "num_classes"
NPZ_CLASS_NAMES_KEY = "class_names"
HF_IMAGE_KEYS = ("image", "img", "pixel_values")
HF_LABEL_KEYS = ("label", "labels", "fine_label", "coarse_label")
PathLike = str | os.PathLike[str]


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")


def _pil_to_array(image: Image.Image, in_chans: int) -> np.ndarray:
    """A PIL image as uint8 ``(H, W, in_chans)``."""
    mode = "L" if in_chans == 1 else "RGB"
    return np.asarray(image.convert(mode), dtype=np.uint8).reshape(image.height, image.width, -1)


def _pil_batch_to_unit(
    images: Sequence[Image.Image], image_size: int, in_chans: int
) -> torch.Tensor:
    """PIL images of any sizes -> float ``(N, in_chans, image_size, image_size)`` in [0, 1]."""
    arrays = [
        _pil_to_array(img.resize((image_size, image_size), Image.Resampling.BILINEAR), in_chans)
        for img in images
    ]
    stacked = (
        np.stack(arrays)
        if arrays
        else np.zeros((0, image_size, image_size, in_chans), dtype=np.uint8)
    )
    return to_unit_float(stacked).permute(0, 3, 1, 2).contiguous()


def _make_task_data(
    unit_images: torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int],
    image_size: int,
    in_chans: int,
    norm: NormStats | None,
    num_classes: int | None,
    class_names: Sequence[str] = (),
    name: str = "",
    split: str = "",
) -> TaskData:
    """Shared tail of every loader: check labels, resize/convert, normalise, wrap."""
    label_array = np.asarray(labels)
    if label_array.ndim != 1 or label_array.shape[0] != unit_images.shape[0]:
        raise ValueError(
            f"labels must be (N,) with N={unit_images.shape[0]}, got shape {label_array.shape}"
        )
    if label_array.size and not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {label_array.dtype}")
    label_array = label_array.astype(np.int64)
    if label_array.size and label_array.min() < 0:
        raise ValueError(f"labels must be non-negative, got minimum {label_array.min()}")
    if num_classes is None:
        num_classes = len(class_names) or (int(label_array.max()) + 1 if label_array.size else 1)
    if unit_images.shape[0] == 0:
        raise ValueError("no images to load")
    images, used_norm = prepare_images(unit_images, image_size, in_chans, norm)
    return TaskData(
        images=images,
        labels=torch.from_numpy(label_array),
        num_classes=num_classes,
        class_names=tuple(class_names),
        name=name,
        split=split,
        norm=used_norm,
    )


def load_image_folder(
    path: PathLike,
    image_size: int = SUITE_IMAGE_SIZE,
    in_chans: int = SUITE_IN_CHANS,
    norm: NormStats | None = None,
    limit_per_class: int | None = None,
) -> TaskData:
    """Load ``path/<class name>/<image file>``; classes are the sub-folders in sorted order.

    Returns ``TaskData`` with images ``(N, in_chans, image_size, image_size)``; labels index
    the sorted class names. Files with other suffixes than common image ones are ignored.
    Raises ``FileNotFoundError`` if ``path`` is not a directory and ``ValueError`` if it has no
    class folders, a class folder has no image, or a file cannot be read as an image.
    """
    _check_limit(limit_per_class)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root} has no class sub-folders (expected {root}/<class>/<image>)")
    images: list[Image.Image] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise ValueError(f"class folder {class_dir} holds no image file")
        for file in files[:limit_per_class]:
            try:
                with Image.open(file) as img:
                    img.load()
                    images.append(img.copy())
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"cannot read image {file}: {exc}") from exc
            labels.append(label)
    unit = _pil_batch_to_unit(images, image_size, in_chans)
    return _make_task_data(
        unit,
        labels,
        image_size,
        in_chans,
        norm,
        len(class_dirs),
        class_names=[d.name for d in class_dirs],
        name=root.name,
    )


def _images_to_nchw(images: np.ndarray) -> np.ndarray:
    """Accept ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (C in 1, 3, 4) -> NCHW.

    When both the second and the last axis could be channels, channels-last is assumed.
    """
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        if images.shape[-1] in CHANNEL_COUNTS:
            return images.transpose(0, 3, 1, 2)
        if images.shape[1] in CHANNEL_COUNTS:
            return images
    raise ValueError(
        f"images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W) with C in "
        f"{CHANNEL_COUNTS}; got {images.shape}"
    )


def load_npz(
    path: PathLike,
    image_size: int = SUITE_IMAGE_SIZE,
    in_chans: int = SUITE_IN_CHANS,
    norm: NormStats | None = None,
    limit: int | None = None,
) -> TaskData:
    """Load images and labels from an .npz file.

    The file must hold ``images`` ((N, H, W), (N, H, W, C) or (N, C, H, W); uint8 in 0..255 or
    float in [0, 1]) and ``labels`` ((N,) integers); ``num_classes`` (scalar) and
    ``class_names`` ((K,) strings) are optional. Raises ``ValueError`` naming the problem if
    keys, shapes or dtypes are wrong.
    """
    _check_limit(limit)
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"npz file {file} does not exist")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read {file} as .npz: {exc}") from exc
    missing = [k for k in (NPZ_IMAGES_KEY, NPZ_LABELS_KEY) if k not in arrays]
    if missing:
        raise ValueError(
            f"{file} lacks array(s) {', '.join(missing)}; it has {', '.join(sorted(arrays))} "
            f"(expected '{NPZ_IMAGES_KEY}' and '{NPZ_LABELS_KEY}')"
        )
    images = arrays[NPZ_IMAGES_KEY]
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
        raise ValueError(f"images must be numeric, got dtype {images.dtype}")
    labels = arrays[NPZ_LABELS_KEY]
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels must be (N,) with N={images.shape[0]} (the number of images), "
            f"got shape {labels.shape}"
        )
    nchw = _images_to_nchw(images)
    if limit is not None:
        nchw, labels = nchw[:limit], labels[:limit]
    class_names = [str(n) for n in arrays.get(NPZ_CLASS_NAMES_KEY, np.array([], dtype=str))]
    num_classes = int(arrays[NPZ_NUM_CLASSES_KEY]) if NPZ_NUM_CLASSES_KEY in arrays else None
    if num_classes is not None and labels.size and int(labels.max()) >= num_classes:
        raise ValueError(f"label {int(labels.max())} out of range for num_classes={num_classes}")
    return _make_task_data(
        to_unit_float(np.ascontiguousarray(nchw)),
        labels,
        image_size,
        in_chans,
        norm,
        num_classes,
        class_names=class_names,
        name=file.stem,
    )


def _import_optional(module: str, pip_name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this loader needs the '{module}' package; install it with `pip install {pip_name}`"
        ) from exc


def dataset_to_arrays(dataset: Any, limit: int | None = None) -> tuple[Any, np.ndarray]:
    """Images and int64 labels of a torchvision-style dataset.

    Uses the ``data``/``targets`` (or ``labels``) arrays when the dataset has them (CIFAR,
    MNIST, SVHN); otherwise iterates ``dataset[i] -> (PIL image or tensor, label)``. Returns
    either a NumPy/Tensor image array or a list of PIL images, and the labels.
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if isinstance(data, (np.ndarray, torch.Tensor)) and targets is not None:
        return data[:count], np.asarray(targets)[:count].astype(np.int64)
    images, labels = [], []
    for index in range(count):
        image, label = dataset[index]
        images.append(image)
        labels.append(int(label))
    return images, np.asarray(labels, dtype=np.int64)


def _to_unit_nchw(images: Any, image_size: int, in_chans: int) -> torch.Tensor:
    """A list of PIL images, or an array in one of the ``load_npz`` layouts -> NCHW [0, 1]."""
    if isinstance(images, list) and images and isinstance(images[0], Image.Image):
        return _pil_batch_to_unit(images, image_size, in_chans)
    if isinstance(images, list):
        images = np.stack([np.asarray(img) for img in images]) if images else np.zeros((0, 1, 1))
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return to_unit_float(np.ascontiguousarray(_images_to_nchw(array)))


TORCHVISION_SPLIT_ARG = {"SVHN": "split", "STL10": "split", "Flowers102": "split", "DTD": "split"}
"""torchvision datasets that take ``split=`` rather than ``train=``."""


def load_torchvision(
    name: str,
    root: PathLike,
    split: str,
    download: bool = False,
    image_size: int = SUITE_IMAGE_SIZE,
    in_chans: int = SUITE_IN_CHANS,
    norm: NormStats | None = None,
    limit: int | None = None,
) -> TaskData:
    """Load a torchvision data set class by name (e.g. ``"CIFAR100"``, ``"MNIST"``, ``"SVHN"``).

    ``split`` is ``"train"`` or ``"test"`` (torchvision has no val split for most sets). With
    ``download=False`` (the default) nothing is fetched: if the files are not under ``root``,
    ``TaskSourceMissingError`` says so.
    """
    _check_limit(limit)
    split = check_split(split)
    datasets = _import_optional("torchvision.datasets", "torchvision")
    cls = getattr(datasets, name, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"torchvision.datasets has no data set class {name!r}")
    if split == "val":
        raise ValueError("torchvision data sets have no 'val' split; carve one out of 'train'")
    if name in TORCHVISION_SPLIT_ARG:
        kwargs: dict[str, Any] = {TORCHVISION_SPLIT_ARG[name]: split}
    else:
        kwargs = {"train": split == "train"}
    try:
        dataset = cls(root=str(root), download=download, **kwargs)
    except RuntimeError as exc:
        if download:
            raise
        raise TaskSourceMissingError(
            f"torchvision data set {name} ({exc})", [str(root)], []
        ) from exc
    images, labels = dataset_to_arrays(dataset, limit)
    classes = getattr(dataset, "classes", None)
    class_names = [str(c) for c in classes] if isinstance(classes, Sequence) else []
    return _make_task_data(
        _to_unit_nchw(images, image_size, in_chans),
        labels,
        image_size,
        in_chans,
        norm,
        len(class_names) or None,
        class_names=class_names,
        name=name,
        split=split,
    )


def _pick_key(keys: Iterable[str], candidates: Sequence[str], what: str, given: str | None) -> str:
    keys = list(keys)
    if given is not None:
        if given not in keys:
            raise ValueError(f"{what} column {given!r} not in the data set's columns {keys}")
        return given
    for key in candidates:
        if key in keys:
            return key
    raise ValueError(
        f"cannot find the {what} column among {keys}; pass it explicitly (tried {candidates})"
    )


def load_hf_dataset(
    name: str,
    split: str,
    image_size: int = SUITE_IMAGE_SIZE,
    in_chans: int = SUITE_IN_CHANS,
    norm: NormStats | None = None,
    limit: int | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    **load_kwargs: Any,
) -> TaskData:
    """Load a Hugging Face ``datasets`` data set (e.g. ``"cifar100"``) split by name.

    ``split`` is passed to ``datasets.load_dataset`` unchanged (any split name it knows).
    The image and label columns are found by common names unless given. Whether it downloads is
    up to ``datasets`` (set ``HF_DATASETS_OFFLINE=1`` to forbid it). Raises ``ImportError``
    with the pip command if ``datasets`` is not installed.
    """
    _check_limit(limit)
    hf = _import_optional("datasets", "datasets")
    dataset = hf.load_dataset(name, split=split, **load_kwargs)
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        columns = list(dataset[0].keys()) if len(dataset) else []
    image_col = _pick_key(columns, HF_IMAGE_KEYS, "image", image_key)
    label_col = _pick_key(columns, HF_LABEL_KEYS, "label", label_key)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    rows = [dataset[i] for i in range(count)]
    images = [row[image_col] for row in rows]
    labels = np.asarray([int(row[label_col]) for row in rows], dtype=np.int64)
    class_names: list[str] = []
    features = getattr(dataset, "features", None)
    label_feature = features.get(label_col) if isinstance(features, dict) else None
    names = getattr(label_feature, "names", None)
    if names:
        class_names = [str(n) for n in names]
    return _make_task_data(
        _to_unit_nchw(images, image_size, in_chans),
        labels,
        image_size,
        in_chans,
        norm,
        len(class_names) or None,
        class_names=class_names,
        name=name,
        split=split,
    )
