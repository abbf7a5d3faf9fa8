"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (idx files, no download)."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import SUITE_IMAGE_SIZE, SplitSizes
from .errors import TaskSourceMissingError
from .preprocess import pad_to_square

APT_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SOURCE_DIR_ENV = "TAL_FASHION_MNIST_DIR"
"""Environment variable naming a directory that holds the four idx .gz files."""
ROOT_SUBDIR = "fashion-mnist"
"""A ``root`` passed to the loader may hold the files in this sub-directory."""

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

CLASS_NAMES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
SOURCE_TRAIN_SIZE = 60_000
SOURCE_TEST_SIZE = 10_000
NATIVE_IMAGE_SIZE = 28

# The idx header: two zero bytes, a dtype code, the number of dimensions, then one big-endian
# uint32 per dimension.
IDX_MAGIC_ZEROS = b"\x00\x00"
IDX_HEADER_BYTES = 4
IDX_DIM_BYTES = 4
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class FashionMnistConfig:
    """How the fixed val split is carved out of the 60k training images."""

    val_size: int = 5_000
    split_seed: int = 20_240_601
    image_size: int = SUITE_IMAGE_SIZE

    @property
    def split_sizes(self) -> SplitSizes:
        return SplitSizes(SOURCE_TRAIN_SIZE - self.val_size, self.val_size, SOURCE_TEST_SIZE)


def parse_idx(data: bytes) -> np.ndarray:
    """Decode an (uncompressed) idx file into an array of its declared shape and dtype."""
    if len(data) < IDX_HEADER_BYTES or data[:2] != IDX_MAGIC_ZEROS:
        raise ValueError("not an idx file: bad magic number")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"idx file has unknown dtype code 0x{code:02x}")
    header_end = IDX_HEADER_BYTES + IDX_DIM_BYTES * ndim
    if len(data) < header_end:
        raise ValueError("idx file truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_end != expected:
        raise ValueError(
            f"idx file body has {len(data) - header_end} bytes, expected {expected} "
            f"for shape {shape}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzip-compressed idx file."""
    with gzip.open(path, "rb") as handle:
        return parse_idx(handle.read())


def candidate_dirs(root: Path | None) -> list[Path]:
    """Directories searched for the idx files, in order."""
    dirs: list[Path] = []
    if root is not None:
        dirs.append(root / ROOT_SUBDIR)
    env = os.environ.get(SOURCE_DIR_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(DEBIAN_DIR)
    return dirs


def find_source_dir(root: Path | None = None) -> Path:
    """The first candidate directory that holds all four idx files.

    Raises ``TaskSourceMissingError`` naming the Debian package if none does.
    """
    dirs = candidate_dirs(root)
    for directory in dirs:
        if all((directory / name).is_file() for name in FILES.values()):
            return directory
    raise TaskSourceMissingError(
        "Fashion-MNIST idx files (" + ", ".join(FILES.values()) + ")",
        [str(d) for d in dirs],
        [APT_PACKAGE],
    )


def load_fashion_mnist_raw(
    root: Path | None = None, config: FashionMnistConfig | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load and split Fashion-MNIST.

    Returns ``{split: (images, labels)}`` with ``images`` uint8 ``(N, S, S)`` zero-padded from
    28x28 to ``S = config.image_size`` and ``labels`` int64 ``(N,)``. The val split is a fixed,
    seeded random subset of the source's training set; train is the rest, in a fixed shuffled
    order; test is the source's test set in file order.
    """
    config = config or FashionMnistConfig()
    directory = find_source_dir(root)
    arrays = {key: read_idx_gz(directory / name) for key, name in FILES.items()}
    train_images, train_labels = arrays["train_images"], arrays["train_labels"]
    test_images, test_labels = arrays["test_images"], arrays["test_labels"]
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Fashion-MNIST files in {directory} have inconsistent shapes "
                f"{images.shape} / {labels.shape}"
            )
    if not 0 < config.val_size < train_images.shape[0]:
        raise ValueError(f"val_size {config.val_size} must lie in (0, {train_images.shape[0]})")
    val_idx, train_idx = split_indices(train_images.shape[0], config)
    return {
        "train": (
            pad_to_square(train_images[train_idx], config.image_size),
            train_labels[train_idx].astype(np.int64),
        ),
        "val": (
            pad_to_square(train_images[val_idx], config.image_size),
            train_labels[val_idx].astype(np.int64),
        ),
        "test": (pad_to_square(test_images, config.image_size), test_labels.astype(np.int64)),
    }


def split_indices(num_train: int, config: FashionMnistConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the source training set: ``(val_indices, train_indices)``, disjoint."""
    order = np.random.default_rng(config.split_seed).permutation(num_train)
    return order[: config.val_size], order[config.val_size :]
