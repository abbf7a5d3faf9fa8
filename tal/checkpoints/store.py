"""The model store: versioned learngene checkpoints on disk.

Layout: ``<root>/<name>/<version>/`` holding ``hypernet.safetensors`` (hypernetwork weights),
``tasks.safetensors`` (one task embedding per task), ``ancestry.safetensors`` (the ancestry
ViT, optional), ``text_ancestry.safetensors`` (the text ancestry GPT-2, optional) and
``manifest.json`` (config, tasks, the
sha256 of every file, and whatever the training job records). A version folder is written under
a temporary name and renamed when complete, so a killed job never leaves a checkpoint that looks
whole; :func:`verify` refuses a folder whose files are missing or do not match their hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
HYPERNET_FILE = "hypernet.safetensors"
TASKS_FILE = "tasks.safetensors"
ANCESTRY_FILE = "ancestry.safetensors"
TEXT_ANCESTRY_FILE = "text_ancestry.safetensors"
DEFAULT_NAME = "tal-default"
LATEST = "latest"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HASH_CHUNK_BYTES = 1 << 20
VERSION_DIR_MODE = 0o755


class StoreError(RuntimeError):
    """A checkpoint that is missing, partial, corrupt or outside the store."""


def default_root() -> Path:
    """``$TAL_MODEL_STORE``, else the repository's ``model_store/``."""
    env = os.environ.get("TAL_MODEL_STORE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "model_store"


def check_name(value: str, what: str) -> str:
    """Names and versions are single safe path components (no ``/``, ``..`` or hidden files)."""
    if not _SAFE_NAME.match(value) or value in (".", ".."):
        raise StoreError(
            f"invalid {what} {value!r}: use letters, digits, '.', '_' or '-' (max 128 chars), "
            "starting with a letter or digit"
        )
    return value


def _version_key(version: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[._-]", version))


def list_versions(name: str, root: Path | None = None) -> list[str]:
    """Complete versions of ``name``, oldest first."""
    folder = (root or default_root()) / check_name(name, "model name")
    if not folder.is_dir():
        return []
    versions = [
        p.name
        for p in folder.iterdir()
        if p.is_dir() and _SAFE_NAME.match(p.name) and (p / MANIFEST).is_file()
    ]
    return sorted(versions, key=_version_key)


def list_models(root: Path | None = None) -> list[str]:
    root = root or default_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _SAFE_NAME.match(p.name))


def resolve(name: str, version: str = LATEST, root: Path | None = None) -> Path:
    """The folder of ``name``/``version`` (``latest`` = newest complete version)."""
    root = root or default_root()
    check_name(name, "model name")
    if version == LATEST:
        versions = list_versions(name, root)
        if not versions:
            raise StoreError(f"no versions of model {name!r} in {root}")
        version = versions[-1]
    path = root / name / check_name(version, "version")
    if not (path / MANIFEST).is_file():
        raise StoreError(f"model {name!r} version {version!r} not found in {root}")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {path / MANIFEST}: {exc}") from exc


def verify(path: Path) -> dict[str, Any]:
    """Checks every file listed in the manifest against its sha256; returns the manifest."""
    manifest = read_manifest(path)
    files = manifest.get("files")
    if not isinstance(files, dict) or HYPERNET_FILE not in files:
        raise StoreError(f"{path}: manifest lists no files; the checkpoint is incomplete")
    for filename, expected in files.items():
        file = path / check_name(filename, "file name")
        if not file.is_file():
            raise StoreError(f"{path}: {filename} is missing; the checkpoint is partial")
        actual = sha256_file(file)
        if actual != expected:
            raise StoreError(
                f"{path}: {filename} is corrupt (sha256 {actual[:12]}..., manifest says "
                f"{expected[:12]}...); re-download or retrain this version"
            )
    return manifest


def write_version(
    name: str,
    version: str,
    files: dict[str, bytes],
    manifest: dict[str, Any],
    root: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Atomically creates ``<root>/<name>/<version>/`` with ``files`` and a hashed manifest."""
    root = root or default_root()
    folder = root / check_name(name, "model name")
    target = folder / check_name(version, "version")
    if target.exists() and not overwrite:
        raise StoreError(f"{target} already exists")
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{version}.", suffix=".partial"))
    staging.chmod(VERSION_DIR_MODE)  # mkdtemp makes it owner-only; readers may be other users
    try:
        for filename, data in files.items():
            (staging / check_name(filename, "file name")).write_bytes(data)
        hashes = {f: hashlib.sha256(data).hexdigest() for f, data in files.items()}
        text = json.dumps({**manifest, "files": hashes}, indent=2, sort_keys=True)
        (staging / MANIFEST).write_text(text + "\n")
        for file in staging.iterdir():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
