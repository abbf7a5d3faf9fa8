"""Offline image-classification task suite.

Sources are Debian packages only (no download at run time): Fashion-MNIST
(``dataset-fashion-mnist``), glyphs rendered from Debian fonts (32x32 grey, ``SUITE_IMAGE_SIZE``
and ``SUITE_IN_CHANS``), and colour emoji rendered from ``fonts-noto-color-emoji`` with their
Unicode groups from ``unicode-data`` (``emoji_groups``, 64x64 RGB). Any task loads in any size
and channel count (one code path: resize, grey <-> RGB, per-channel statistics of the
converted train split):

    >>> from tal.tasks import list_tasks, load_task
    >>> data = load_task("glyphs_digits", "train")   # TaskData: images (N,1,32,32), labels (N,)
    >>> rgb = load_task("glyphs_digits", "train", image_size=64, in_chans=3)  # (N,3,64,64)
    >>> grey = list_tasks(image_size=32, in_chans=1)  # the tasks stored as 32x32 grey

Text tasks (``modality="text"``, ``list_tasks("text")``) load as ``TextTaskData``: GPT-2 token
ids from Debian's fortunes, WordNet and man pages (see ``tal.tasks.text``).

Users' own data comes in through ``load_image_folder``, ``load_npz``, ``load_torchvision`` and
``load_hf_dataset``, which return the same ``TaskData``, and text through ``load_text_file``.
"""

from .cache import DATA_DIR_ENV, resolve_data_dir
from .data import (
    MODALITIES,
    SPLITS,
    SUITE_IMAGE_SIZE,
    SUITE_IN_CHANS,
    Modality,
    NormStats,
    Split,
    SplitSizes,
    TaskData,
    TaskInfo,
)
from .errors import TaskSourceMissingError, UnknownTaskError
from .registry import (
    clear_memory_cache,
    data_fingerprint,
    get_task_info,
    held_out_task,
    list_tasks,
    load_task,
    load_text_task,
    required_apt_packages,
    task_names,
)
from .text import TextDataError, TextTaskData, load_text_file
from .user_data import load_hf_dataset, load_image_folder, load_npz, load_torchvision

__all__ = [
    "DATA_DIR_ENV",
    "MODALITIES",
    "SPLITS",
    "SUITE_IMAGE_SIZE",
    "SUITE_IN_CHANS",
    "Modality",
    "NormStats",
    "Split",
    "SplitSizes",
    "TaskData",
    "TaskInfo",
    "TaskSourceMissingError",
    "TextDataError",
    "TextTaskData",
    "UnknownTaskError",
    "clear_memory_cache",
    "data_fingerprint",
    "get_task_info",
    "held_out_task",
    "list_tasks",
    "load_hf_dataset",
    "load_image_folder",
    "load_npz",
    "load_task",
    "load_text_file",
    "load_text_task",
    "load_torchvision",
    "required_apt_packages",
    "resolve_data_dir",
    "task_names",
]
