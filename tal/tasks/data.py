"""Data containers shared by the task suite and the user-data loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

SUITE_IMAGE_SIZE = 32
"""Side length, in pixels, of every image in the built-in suite."""

SUITE_IN_CHANS = 1
"""Channel count of every image in the built-in suite (grayscale)."""

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)

Modality = Literal["image", "text"]
MODALITIES: tuple[Modality, ...] = get_args(Modality)


def check_split(split: str) -> Split:
    """Return ``split`` unchanged if it names a split, else raise ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split  # type: ignore[return-value]


@dataclass(frozen=True)
class SplitSizes:
    """Number of examples in each split."""

    train: int
    val: int
    test: int

    def __post_init__(self) -> None:
        for split in SPLITS:
            if getattr(self, split) < 0:
                raise ValueError(f"split size {split}={getattr(self, split)} is negative")

    def __getitem__(self, split: str) -> int:
        return int(getattr(self, check_split(split)))

    def scaled(self, factor: int) -> SplitSizes:
        """Sizes multiplied by ``factor`` (per-class counts to whole-split counts)."""
        return SplitSizes(self.train * factor, self.val * factor, self.test * factor)

    @property
    def total(self) -> int:
        return self.train + self.val + self.test


@dataclass(frozen=True)
class TaskInfo:
    """Static description of one task of the suite (nothing is loaded to build it)."""

    name: str
    source: str
    """Where the data comes from, e.g. ``"debian:dataset-fashion-mnist"``."""
    num_classes: int
    image_size: int
    in_chans: int
    description: str
    split_sizes: SplitSizes
    class_names: tuple[str, ...]
    apt_packages: tuple[str, ...]
    """Debian packages that must be installed to build the task."""
    held_out_of_stage2: bool = False
    """True for the one task of its modality kept out of multi-task (stage 2) training."""
    modality: Modality = "image"
    """``"image"`` tasks load as ``TaskData``; ``"text"`` tasks as ``TextTaskData`` (their
    ``image_size`` and ``in_chans`` are 0)."""
    max_tokens: int = 0
    """Tokens per example of a text task (0 for image tasks)."""

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"task {self.name!r}: {len(self.class_names)} class names "
                f"for {self.num_classes} classes"
            )
        if self.modality not in MODALITIES:
            raise ValueError(f"task {self.name!r}: modality must be one of {MODALITIES}")
        is_text = self.modality == "text"
        if is_text != (self.max_tokens > 0) or is_text == (self.image_size > 0):
            raise ValueError(
                f"task {self.name!r}: a text task has max_tokens > 0 and image_size 0, an "
                f"image task the reverse (got {self.modality}, max_tokens={self.max_tokens}, "
                f"image_size={self.image_size})"
            )


@dataclass(frozen=True)
class NormStats:
    """Per-channel mean and standard deviation of images scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def channels(self) -> int:
        return len(self.mean)


@dataclass
class TaskData:
    """One split of a classification task, ready for a model.

    Attributes:
        images: ``(N, C, H, W)`` float32, normalised with ``norm`` (roughly zero mean and unit
            standard deviation per channel).
        labels: ``(N,)`` int64 in ``[0, num_classes)``.
        num_classes: size of the label space (some classes may have no example in a subset).
        class_names: one name per class, or empty when unknown.
        norm: the statistics used to normalise ``images`` (``x = (x01 - mean) / std``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] = ()
    name: str = ""
    split: str = ""
    norm: NormStats = field(default_factory=lambda: NormStats((0.0,), (1.0,)))

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32, got {self.images.dtype}")
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be (N,) int64, got shape {tuple(self.labels.shape)} "
                f"dtype {self.labels.dtype}"
            )
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes
        ):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.norm.channels != self.images.shape[1]:
            raise ValueError(
                f"norm has {self.norm.channels} channels but images have {self.images.shape[1]}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> int:
        """Side length ``H`` of the (square) images."""
        return int(self.images.shape[-1])

    @property
    def in_chans(self) -> int:
        """Channel count ``C``."""
        return int(self.images.shape[1])
