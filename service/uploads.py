"""Turning an uploaded task file into its labelled examples, safely: an ``.npz`` (arrays
``images``, ``labels``) into images, a JSONL / CSV of ``{text, label}`` into tokenised texts."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from service.core.errors import InvalidInput, TooLarge
from tal.arch.specs import ViTSpec
from tal.tasks import TaskData, load_npz
from tal.tasks.data import Modality
from tal.tasks.text.data import TextTaskData
from tal.tasks.text.user_data import CSV_DELIMITERS, JSONL_SUFFIXES, load_text_file

NPZ_SUFFIX = ".npz"
TEXT_SUFFIXES = frozenset(JSONL_SUFFIXES | set(CSV_DELIMITERS))
UPLOAD_NAME = "upload"  # the upload's name on disk, replaced by "the upload" in messages


def upload_modality(filename: str | None) -> tuple[Modality, str]:
    """What an upload holds, from its file name's suffix: ``.npz`` (or no name) images, a
    text suffix labelled texts; returns the modality and the suffix to read it as."""
    suffix = Path(filename or "").suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text", suffix
    if suffix in ("", NPZ_SUFFIX):
        return "image", NPZ_SUFFIX
    known = ", ".join(sorted(TEXT_SUFFIXES | {NPZ_SUFFIX}))
    raise InvalidInput(
        f"file: unknown file type {suffix!r}; send images as .npz or labelled texts as one of "
        f"{known}"
    )


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
        path = Path(folder) / f"{UPLOAD_NAME}{NPZ_SUFFIX}"
        path.write_bytes(data)
        try:
            task = load_npz(
                path, image_size=spec.img_size, in_chans=spec.in_chans, limit=max_images
            )
        except Exception as exc:  # any unreadable upload is the client's input: 422, never 500
            raise InvalidInput(f"file: {str(exc).replace(str(path), 'the upload')}") from exc
    return task


def task_data_from_text(data: bytes, suffix: str, max_examples: int) -> TextTaskData:
    """JSONL / CSV / TSV bytes (``suffix`` says which) of ``{text, label}`` -> texts tokenised
    with GPT-2's BPE (``TextTaskData``, ids ``(N, L)``), validated by
    :func:`tal.tasks.text.user_data.load_text_file`; at most the first ``max_examples`` are
    kept. Blocking."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{UPLOAD_NAME}{suffix}"
        path.write_bytes(data)
        try:
            return load_text_file(path, limit=max_examples)
        except ValueError as exc:  # every refusal of the file says what to fix: 422
            raise InvalidInput(f"file: {str(exc).replace(str(path), 'the upload')}") from exc
