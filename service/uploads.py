"""Turning an uploaded ``.npz`` (arrays ``images``, ``labels``) into task images, safely."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from service.core.errors import InvalidInput, TooLarge
from tal.arch.specs import ViTSpec
from tal.tasks import TaskData, load_npz

NPZ_SUFFIX = ".npz"


def check_unpacked_size(data: bytes, limit: int) -> None:
    """Refuses archives whose arrays unpack above ``limit`` bytes (zip bombs) before reading."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"file: not an .npz archive ({exc})") from exc
    if unpacked > limit:
        raise TooLarge(f"file: arrays unpack to {unpacked:,} bytes; the limit is {limit:,}")


def task_data_from_npz(data: bytes, spec: ViTSpec, max_unpacked: int, max_images: int) -> TaskData:
    """``.npz`` bytes -> images ``(N, spec.in_chans, spec.img_size, spec.img_size)`` float32
    and labels ``(N,)``, validated by :func:`tal.tasks.load_npz`; at most the first
    ``max_images`` are read. Blocking."""
    check_unpacked_size(data, max_unpacked)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{NPZ_SUFFIX}"
        path.write_bytes(data)
        try:
            task = load_npz(
                path, image_size=spec.img_size, in_chans=spec.in_chans, limit=max_images
            )
        except Exception as exc:  # any unreadable upload is the client's input: 422, never 500
            raise InvalidInput(f"file: {str(exc).replace(str(path), 'the upload')}") from exc
    return task
