"""The named tasks of the suite and the functions that load them."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import emoji, fashion_mnist
from .cache import resolve_data_dir
from .data import (
    SPLITS,
    SUITE_IMAGE_SIZE,
    SUITE_IN_CHANS,
    Modality,
    NormStats,
    SplitSizes,
    TaskData,
    TaskInfo,
    check_split,
)
from .errors import UnknownTaskError
from .fonts import FONT_DIRS_ENV
from .glyphs import GlyphClass, GlyphTaskSpec, load_glyph_task_raw
from .preprocess import (
    converted_norm_stats,
    norm_stats_from_uint8,
    normalize,
    prepare_images,
    to_unit_float,
)
from .text.data import TextTaskData
from .text.loader import clear_text_memo, load_text_split, text_data_fingerprint
from .text.suite import TEXT_SPECS_BY_NAME, TEXT_TASK_SPECS

FONT_SOURCE = "rendered:debian-fonts"

LATIN_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LATIN_LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
GREEK_LOWER = "αβγδεζηθικλμνξοπρστυφχψω"
"""The 24 lowercase Greek letters (final sigma left out: it is a form of sigma)."""

# The script task keeps only letters that no other class of it draws alike. Left out: Latin I l O o
# (like the digits 1 and 0); Cyrillic letters shaped like Latin ones or like Latin small capitals,
# and Cyrillic Ze (like the digit 3); Hebrew vav and final nun, and Arabic alef (plain vertical
# strokes, like l and 1).
SCRIPT_LATIN = "".join(c for c in LATIN_UPPER + LATIN_LOWER if c not in "IlOo")
SCRIPT_CYRILLIC = "БДЖИЙЛЦЧШЩЪЫЭЮЯгджийлпфцчшщъыьэюя"
SCRIPT_HEBREW = "אבגדהזחטיךכלםמנסעףפץצקרשת"
SCRIPT_ARABIC = "بةتثجحخدذرزسشصضطظعغفقكلمنهوىي"


def _one_char_classes(chars: str) -> tuple[GlyphClass, ...]:
    return tuple(GlyphClass(c, c) for c in chars)


GLYPH_SPECS: tuple[GlyphTaskSpec, ...] = (
    GlyphTaskSpec(
        name="glyphs_latin",
        description="Which of the 52 Latin letters (case-sensitive) is drawn; few examples per "
        "class, many fonts and distortions (Omniglot-like).",
        classes=_one_char_classes(LATIN_UPPER + LATIN_LOWER),
        per_class=SplitSizes(train=20, val=5, test=10),
        seed=1_001,
    ),
    GlyphTaskSpec(
        name="glyphs_script",
        description="Which writing system a character belongs to: Latin, Cyrillic, Hebrew, "
        "Arabic or digit (upright faces only; cross-script look-alikes removed).",
        classes=(
            GlyphClass("latin", SCRIPT_LATIN),
            GlyphClass("cyrillic", SCRIPT_CYRILLIC),
            GlyphClass("hebrew", SCRIPT_HEBREW),
            GlyphClass("arabic", SCRIPT_ARABIC),
            GlyphClass("digit", DIGITS),
        ),
        per_class=SplitSizes(train=1_200, val=200, test=400),
        seed=1_002,
        upright_only=True,
    ),
    GlyphTaskSpec(
        name="glyphs_digits",
        description="Which digit 0-9 is drawn (MNIST-like, from fonts).",
        classes=_one_char_classes(DIGITS),
        per_class=SplitSizes(train=300, val=50, test=100),
        seed=1_003,
    ),
    GlyphTaskSpec(
        name="glyphs_greek",
        description="Which of the 24 lowercase Greek letters is drawn; held out of multi-task "
        "training as the unseen task (no task above draws Greek letters).",
        classes=_one_char_classes(GREEK_LOWER),
        per_class=SplitSizes(train=20, val=5, test=15),
        seed=1_004,
        held_out_of_stage2=True,
    ),
)
_GLYPH_SPECS_BY_NAME = {spec.name: spec for spec in GLYPH_SPECS}

FASHION_MNIST = "fashion_mnist"
FASHION_CONFIG = fashion_mnist.FashionMnistConfig()

EMOJI_GROUPS = "emoji_groups"
EMOJI_SOURCE = "rendered:debian-emoji"
EMOJI_SPEC = emoji.EmojiTaskSpec(
    name=EMOJI_GROUPS,
    description="Which Unicode emoji group a colour emoji belongs to (8 groups; Flags left "
    "out), rendered from fonts-noto-color-emoji at 64x64 RGB under random affine maps, "
    "backgrounds, noise and occlusion; the splits hold disjoint emoji, so the test split "
    "asks about emoji never seen in training.",
    groups=(
        "Smileys & Emotion",
        "People & Body",
        "Animals & Nature",
        "Food & Drink",
        "Travel & Places",
        "Activities",
        "Objects",
        "Symbols",
    ),
    per_class=SplitSizes(train=400, val=60, test=120),
    seed=2_001,
)

_TASKS: tuple[TaskInfo, ...] = (
    TaskInfo(
        name=FASHION_MNIST,
        source=f"debian:{fashion_mnist.APT_PACKAGE}",
        num_classes=fashion_mnist.NUM_CLASSES,
        image_size=SUITE_IMAGE_SIZE,
        in_chans=SUITE_IN_CHANS,
        description="Fashion-MNIST clothing photos (10 classes), 28x28 zero-padded to 32x32; "
        "val is a fixed seeded subset of the official training set.",
        split_sizes=FASHION_CONFIG.split_sizes,
        class_names=fashion_mnist.CLASS_NAMES,
        apt_packages=(fashion_mnist.APT_PACKAGE,),
    ),
    *(
        TaskInfo(
            name=spec.name,
            source=FONT_SOURCE,
            num_classes=spec.num_classes,
            image_size=spec.image_size,
            in_chans=SUITE_IN_CHANS,
            description=spec.description,
            split_sizes=spec.split_sizes,
            class_names=tuple(c.name for c in spec.classes),
            apt_packages=spec.apt_packages,
            held_out_of_stage2=spec.held_out_of_stage2,
        )
        for spec in GLYPH_SPECS
    ),
    TaskInfo(
        name=EMOJI_SPEC.name,
        source=EMOJI_SOURCE,
        num_classes=EMOJI_SPEC.num_classes,
        image_size=EMOJI_SPEC.image_size,
        in_chans=emoji.EMOJI_IN_CHANS,
        description=EMOJI_SPEC.description,
        split_sizes=EMOJI_SPEC.split_sizes,
        class_names=EMOJI_SPEC.groups,
        apt_packages=EMOJI_SPEC.apt_packages,
    ),
    *(
        TaskInfo(
            name=spec.name,
            source=f"debian:{','.join(spec.apt_packages)}",
            num_classes=spec.num_classes,
            image_size=0,
            in_chans=0,
            description=spec.description,
            split_sizes=spec.split_sizes,
            class_names=spec.class_names,
            apt_packages=spec.apt_packages,
            held_out_of_stage2=spec.held_out_of_stage2,
            modality="text",
            max_tokens=spec.max_tokens,
        )
        for spec in TEXT_TASK_SPECS
    ),
)
_TASKS_BY_NAME = {info.name: info for info in _TASKS}


def list_tasks(
    modality: Modality | None = "image",
    *,
    image_size: int | None = None,
    in_chans: int | None = None,
) -> list[TaskInfo]:
    """The tasks of one modality (``None``: every task), in a fixed order; with ``image_size``
    / ``in_chans``, only the image tasks stored natively in that format
    (``list_tasks(image_size=32, in_chans=1)``: the 32x32 grey tasks).

    The default is the image suite, which the training and evaluation code iterate over.
    """
    return [
        info
        for info in _TASKS
        if (modality is None or info.modality == modality)
        and image_size in (None, info.image_size)
        and in_chans in (None, info.in_chans)
    ]


def task_names(
    modality: Modality | None = "image",
    *,
    image_size: int | None = None,
    in_chans: int | None = None,
) -> list[str]:
    """Names of the tasks of ``list_tasks`` (same filters, same order)."""
    return [info.name for info in list_tasks(modality, image_size=image_size, in_chans=in_chans)]


def get_task_info(name: str) -> TaskInfo:
    """The ``TaskInfo`` of task ``name``; ``UnknownTaskError`` (listing known names) if none."""
    try:
        return _TASKS_BY_NAME[name]
    except KeyError:
        raise UnknownTaskError(name, _TASKS_BY_NAME) from None


def held_out_task(modality: Modality = "image") -> TaskInfo:
    """The one task of ``modality`` kept out of multi-task (stage 2) training."""
    (info,) = [info for info in list_tasks(modality) if info.held_out_of_stage2]
    return info


def required_apt_packages(modality: Modality | None = None) -> list[str]:
    """Debian packages the suite needs (every task's, or one modality's), in a stable order."""
    return list(dict.fromkeys(pkg for info in list_tasks(modality) for pkg in info.apt_packages))


@dataclass(frozen=True)
class _RawTask:
    """All splits of a task as uint8 images and int64 labels, plus its native statistics.

    Grey tasks store ``(N, S, S)`` images, colour tasks ``(N, C, S, S)`` (the shapes the data
    fingerprints were first taken over, so they stay as they are).
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    norm: NormStats

    def images_nchw(self, split: str) -> np.ndarray:
        """The uint8 images of ``split`` as ``(N, C, S, S)`` (a view for grey tasks)."""
        images = self.splits[split][0]
        return images[:, None] if images.ndim == 3 else images


_RAW_MEMO: dict[tuple[str, ...], _RawTask] = {}
_CONVERTED_NORM_MEMO: dict[tuple[object, ...], NormStats] = {}
_RAW_MEMO_LOCK = threading.Lock()


def _memo_key(name: str, data_dir: Path) -> tuple[str, ...]:
    return (
        name,
        str(data_dir),
        os.environ.get(FONT_DIRS_ENV, ""),
        os.environ.get(fashion_mnist.SOURCE_DIR_ENV, ""),
        os.environ.get(emoji.EMOJI_TEST_ENV, ""),
    )


def _stored_shape(info: TaskInfo, count: int) -> tuple[int, ...]:
    side = info.image_size
    return (count, side, side) if info.in_chans == 1 else (count, info.in_chans, side, side)


def _load_raw(name: str, root: str | os.PathLike[str] | None) -> _RawTask:
    info = get_task_info(name)
    data_dir = resolve_data_dir(root)
    key = _memo_key(info.name, data_dir)
    with _RAW_MEMO_LOCK:
        if key in _RAW_MEMO:
            return _RAW_MEMO[key]
        if info.name == FASHION_MNIST:
            splits = fashion_mnist.load_fashion_mnist_raw(data_dir, FASHION_CONFIG)
        elif info.name == EMOJI_GROUPS:
            splits = emoji.load_emoji_task_raw(EMOJI_SPEC, data_dir)
        else:
            splits = load_glyph_task_raw(_GLYPH_SPECS_BY_NAME[info.name], data_dir)
        for split in SPLITS:
            images, labels = splits[split]
            expected = _stored_shape(info, info.split_sizes[split])
            if images.shape != expected or labels.shape != expected[:1]:
                raise RuntimeError(
                    f"task {name!r} split {split!r}: got images {images.shape} / labels "
                    f"{labels.shape}, expected {expected}"
                )
        raw = _RawTask(splits, norm_stats_from_uint8(splits["train"][0]))
        _RAW_MEMO[key] = raw
        return raw


def _converted_norm(
    name: str, root: str | os.PathLike[str] | None, raw: _RawTask, image_size: int, in_chans: int
) -> NormStats:
    """Per-channel statistics of the train split brought to ``image_size`` / ``in_chans``
    (memoised per task, data directory and format)."""
    key = (*_memo_key(name, resolve_data_dir(root)), image_size, in_chans)
    with _RAW_MEMO_LOCK:
        if key not in _CONVERTED_NORM_MEMO:
            _CONVERTED_NORM_MEMO[key] = converted_norm_stats(
                raw.images_nchw("train"), image_size, in_chans
            )
        return _CONVERTED_NORM_MEMO[key]


def clear_memory_cache() -> None:
    """Drop the in-process copies of loaded tasks (the on-disk cache is kept)."""
    with _RAW_MEMO_LOCK:
        _RAW_MEMO.clear()
        _CONVERTED_NORM_MEMO.clear()
    clear_text_memo()


def load_task(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    image_size: int | None = None,
    in_chans: int | None = None,
) -> TaskData | TextTaskData:
    """Load one split of a task of the suite (an image task in its native format or any other).

    Args:
        name: a task name from ``list_tasks(None)``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: data directory (default ``$TAL_DATA_DIR`` or ``~/.cache/tal/tasks``): generated
            tasks are cached there, and a ``fashion-mnist`` folder in it is searched first for
            the Fashion-MNIST idx files (then ``$TAL_FASHION_MNIST_DIR``, then the Debian
            package's folder).
        limit: keep only the first ``limit`` examples of the (fixed, shuffled) split.
        image_size: side length to resize to (bilinear, antialiased when shrinking); None
            keeps the task's native size (``get_task_info(name).image_size``).
        in_chans: 1 or 3 channels (grey -> RGB repeats the grey value; RGB -> grey is BT.601
            luma); None keeps the task's native channels.

    Returns:
        For an image task, ``TaskData`` with ``images`` float32 ``(N, C, S, S)`` normalised per
        channel with the statistics of the train split in the same format (``TaskData.norm``),
        and ``labels`` int64 ``(N,)``; in the native format the values are exactly those of the
        stored pixels (no resampling). For a text task, ``TextTaskData`` with ``input_ids`` int64
        ``(N, max_tokens)`` (GPT-2 BPE, padded with 50256), ``lengths`` and ``labels`` int64
        ``(N,)``; its Debian source files are read under ``$TAL_TEXT_SOURCE_ROOT`` (default
        ``/``). The same call always returns the same values.
    """
    info = get_task_info(name)
    split = check_split(split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    if info.modality == "text":
        return load_text_split(TEXT_SPECS_BY_NAME[name], split, resolve_data_dir(root), limit)
    raw = _load_raw(name, root)
    images_u8, labels = raw.images_nchw(split), raw.splits[split][1]
    if limit is not None:
        images_u8, labels = images_u8[:limit], labels[:limit]
    size = info.image_size if image_size is None else image_size
    chans = info.in_chans if in_chans is None else in_chans
    if (size, chans) == (info.image_size, info.in_chans):
        norm = raw.norm
        images = normalize(to_unit_float(images_u8), norm)
    else:
        norm = _converted_norm(name, root, raw, size, chans)
        images, _ = prepare_images(to_unit_float(images_u8), size, chans, norm)
    return TaskData(
        images=images,
        labels=torch.from_numpy(np.array(labels, dtype=np.int64)),
        num_classes=info.num_classes,
        class_names=info.class_names,
        name=info.name,
        split=split,
        norm=norm,
    )


def load_text_task(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> TextTaskData:
    """``load_task`` for a text task, typed as ``TextTaskData``; ``ValueError`` for an image
    task."""
    data = load_task(name, split, root=root, limit=limit)
    if not isinstance(data, TextTaskData):
        raise ValueError(f"task {name!r} is an image task; load it with load_task")
    return data


def data_fingerprint(name: str, root: str | os.PathLike[str] | None = None) -> str:
    """sha256 (hex) over every split's data and label bytes (and shapes) of task ``name``:
    images for an image task, token ids and lengths for a text task.

    Equal fingerprints mean bit-identical data, so it can be written into run manifests.
    """
    if get_task_info(name).modality == "text":
        return text_data_fingerprint(TEXT_SPECS_BY_NAME[name], resolve_data_dir(root))
    raw = _load_raw(name, root)
    digest = hashlib.sha256(name.encode())
    for split in SPLITS:
        images, labels = raw.splits[split]
        for array in (
            np.ascontiguousarray(images, dtype=np.uint8),
            np.ascontiguousarray(labels, dtype="<i8"),
        ):
            digest.update(f"{split}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()
