"""The built-in text tasks on the real Debian packages (scripts/setup installs them).

Every task is built once into the pytest temporary directory the image task tests share
(never into ~/.cache); the registry tests load nothing.
"""

from __future__ import annotations

import gzip
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from tal.tasks import (
    SPLITS,
    TextTaskData,
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
from tal.tasks.data import TaskInfo
from tal.tasks.text.suite import TEXT_SPECS_BY_NAME
from tal.tasks.text.tokenizer import END_OF_TEXT_ID, gpt2_tokenizer
from tal.tasks.text.wordnet import LEXNAMES

TEXT_TASKS = task_names("text")
SETUP_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "setup"
MIN_TRAINING_TEXT_TASKS = 4


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "tal-task-cache"
    root.mkdir(exist_ok=True)
    return root


def test_text_tasks_are_registered_apart_from_the_image_suite() -> None:
    text = list_tasks("text")
    assert {t.modality for t in text} == {"text"}
    assert {t.modality for t in list_tasks()} == {"image"}, "the default stays the image suite"
    assert list_tasks(None) == list_tasks("image") + text
    training = [t for t in text if not t.held_out_of_stage2]
    assert len(training) >= MIN_TRAINING_TEXT_TASKS
    assert held_out_task("text").name == "wordnet_verb_sense"
    assert held_out_task().name == "glyphs_greek"
    assert len({t.source for t in training}) >= 3, "training tasks come from different sources"
    for info in text:
        assert info.image_size == info.in_chans == 0 and info.max_tokens == 128
        assert len(set(info.class_names)) == info.num_classes >= 2


def test_task_info_checks_modality_fields() -> None:
    info = get_task_info("fortune_topic")
    with pytest.raises(ValueError, match="a text task has max_tokens > 0"):
        TaskInfo(**{**info.__dict__, "max_tokens": 0})
    with pytest.raises(ValueError, match="a text task has max_tokens > 0"):
        TaskInfo(**{**info.__dict__, "modality": "image"})


def test_setup_installs_every_required_package() -> None:
    script = SETUP_SCRIPT.read_text()
    match = re.search(r"^APT_PACKAGES=\((.*?)\)", script, re.MULTILINE | re.DOTALL)
    assert match is not None
    installed = set(shlex.split(match.group(1), comments=True))
    assert set(required_apt_packages()) <= installed
    assert {"fortunes", "wordnet-base", "manpages"} <= set(required_apt_packages("text"))
    assert "fortunes" not in required_apt_packages("image")


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_splits_have_declared_sizes_and_balanced_classes(name: str, task_root: Path) -> None:
    info = get_task_info(name)
    spec = TEXT_SPECS_BY_NAME[name]
    for split in SPLITS:
        data = load_task(name, split, root=task_root)
        assert isinstance(data, TextTaskData)
        size = info.split_sizes[split]
        assert data.input_ids.shape == (size, info.max_tokens)
        assert data.input_ids.dtype == data.lengths.dtype == data.labels.dtype == torch.int64
        assert (data.name, data.split, data.class_names) == (name, split, info.class_names)
        counts = torch.bincount(data.labels, minlength=info.num_classes)
        assert counts.tolist() == [spec.per_class[split]] * info.num_classes
        assert int(data.lengths.min()) >= 1
        assert (data.input_ids[~data.attention_mask] == END_OF_TEXT_ID).all()


@pytest.mark.parametrize("name", TEXT_TASKS)
def test_no_text_is_in_two_splits_or_twice_in_one(name: str, task_root: Path) -> None:
    rows: dict[bytes, str] = {}
    for split in SPLITS:
        data = load_text_task(name, split, root=task_root)
        for row in data.input_ids.numpy().astype(np.uint16):
            key = row.tobytes()
            assert key not in rows, f"a row of {split} is also in {rows.get(key)}"
            rows[key] = split


def test_held_out_task_shares_no_text_with_training_tasks(task_root: Path) -> None:
    unseen = {
        row.tobytes()
        for split in SPLITS
        for row in load_text_task("wordnet_verb_sense", split, root=task_root).input_ids.numpy()
    }
    for info in list_tasks("text"):
        if info.held_out_of_stage2:
            continue
        for split in SPLITS:
            ids = load_text_task(info.name, split, root=task_root).input_ids.numpy()
            assert not unseen & {row.tobytes() for row in ids}, info.name


def test_man_paragraphs_do_not_name_their_section(task_root: Path) -> None:
    data = load_text_task("man_section", "test", root=task_root, limit=200)
    tokenizer = gpt2_tokenizer()
    texts = [
        tokenizer.decode(row[:n].tolist())
        for row, n in zip(data.input_ids, data.lengths, strict=True)
    ]
    assert not [t for t in texts if re.search(r"\w\([1-8]\)", t)]
    assert not [t for t in texts if t.startswith((".", "\\"))], "roff requests leaked"


def test_limit_keeps_the_first_examples(task_root: Path) -> None:
    full = load_text_task("fortune_language", "val", root=task_root)
    head = load_text_task("fortune_language", "val", root=task_root, limit=7)
    assert torch.equal(head.input_ids, full.input_ids[:7])
    assert torch.equal(head.labels, full.labels[:7])


def test_fingerprint_is_deterministic_across_builds(task_root: Path, tmp_path: Path) -> None:
    cached = data_fingerprint("fortune_topic", root=task_root)
    clear_memory_cache()
    rebuilt = data_fingerprint("fortune_topic", root=tmp_path)  # a new build, no cache
    assert rebuilt == cached
    assert list(tmp_path.glob("fortune_topic-*.npz")), "the build was cached"
    assert data_fingerprint("wordnet_verb_sense", root=task_root) != cached


def test_load_text_task_refuses_image_tasks(task_root: Path) -> None:
    with pytest.raises(ValueError, match="image task"):
        load_text_task("glyphs_digits", "val", root=task_root, limit=1)


def test_lexicographer_names_match_wordnets_manual() -> None:
    # wordnet-base ships lexnames(5WN), the table of lexicographer files, but not the file
    manual = Path("/usr/share/man/man5/lexnames.5WN.gz")
    rows = gzip.decompress(manual.read_bytes()).decode().splitlines()
    table = [row.split()[1] for row in rows if re.match(r"^\d\d\t", row)]
    assert tuple(table) == LEXNAMES
