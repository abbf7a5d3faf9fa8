"""Where generated task data is cached on disk, and how it is written safely."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "TAL_DATA_DIR"
"""Environment variable that overrides the default cache directory."""

DEFAULT_DATA_DIR = Path("~/.cache/tal/tasks")
CACHE_FILE_MODE = 0o644
"""Permissions of a written cache file (mkstemp would leave it readable by its owner only)."""


def resolve_data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``root`` if given, else ``$TAL_DATA_DIR``, else ~/.cache/tal/tasks."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as a compressed .npz, atomically.

    The file is written under a temporary name in the same directory and renamed into place,
    so a concurrent reader never sees a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
        os.chmod(tmp_name, CACHE_FILE_MODE)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_npz_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """All arrays of an .npz file, or None if it is missing or unreadable (e.g. truncated)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
