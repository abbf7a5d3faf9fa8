"""The colour emoji task: parsing Unicode's emoji list, rendering, splits by emoji, caching.

A small fixture (a few real emoji per group from a hand-written ``emoji-test.txt``, rendered with
the real colour font) checks the generator; the registered task is checked for its splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from tal.tasks import SPLITS, SplitSizes, TaskSourceMissingError, get_task_info, load_task
from tal.tasks import emoji as em
from tal.tasks.fonts import FONT_DIRS_ENV, clear_font_index
from tal.tasks.registry import EMOJI_GROUPS, EMOJI_SPEC

FIXTURE_GROUPS = {
    "Smileys & Emotion": "1F600 1F603 1F604 1F601 1F606 1F605",
    "Animals & Nature": "1F435 1F412 1F98D 1F9A7 1F436 1F415",
    "Food & Drink": "1F347 1F348 1F349 1F34A 1F34B 1F34C",
}
FIXTURE_TEXT = "\n".join(
    [
        "# emoji-test.txt (fixture)",
        "# group: Smileys & Emotion",
        "263A FE0F ; fully-qualified # smiling face (FE0F does not count)",
        "263A ; unqualified # smiling face (not fully qualified: skipped)",
        "1F44B 1F3FB ; fully-qualified # waving hand: light skin tone (a sequence: skipped)",
        *[f"{p} ; fully-qualified # e" for p in FIXTURE_GROUPS["Smileys & Emotion"].split()],
        "# group: Animals & Nature",
        *[f"{p} ; fully-qualified # e" for p in FIXTURE_GROUPS["Animals & Nature"].split()],
        "# group: Food & Drink",
        *[f"{p} ; fully-qualified # e" for p in FIXTURE_GROUPS["Food & Drink"].split()],
        "# group: Component",
        "1F3FB ; component # light skin tone",
    ]
)
FIXTURE_PER_CLASS = SplitSizes(train=8, val=4, test=6)
GREY_TOLERANCE = 4.0
"""Mean absolute difference between RGB channels (8-bit levels) below which an image is grey."""


@pytest.fixture
def fixture_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> em.EmojiTaskSpec:
    path = tmp_path / "emoji-test.txt"
    path.write_text(FIXTURE_TEXT, encoding="utf-8")
    monkeypatch.setenv(em.EMOJI_TEST_ENV, str(path))
    return em.EmojiTaskSpec(
        name="emoji_fixture",
        description="three groups, six emoji each",
        groups=tuple(FIXTURE_GROUPS),
        per_class=FIXTURE_PER_CLASS,
        seed=7,
        emoji_fractions=(0.5, 0.25, 0.25),
    )


def _row_hashes(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(row.tobytes()).hexdigest() for row in images}


def test_parse_keeps_single_fully_qualified_emoji_with_their_group() -> None:
    entries = em.parse_emoji_test(FIXTURE_TEXT)
    assert entries[0] == em.Emoji("\u263a", "Smileys & Emotion")
    assert len(entries) == 1 + sum(len(v.split()) for v in FIXTURE_GROUPS.values())
    assert {e.group for e in entries} == set(FIXTURE_GROUPS)
    assert all(len(e.char) == 1 for e in entries)


def test_fixture_shapes_balance_and_dtype(fixture_spec: em.EmojiTaskSpec, tmp_path: Path) -> None:
    splits = em.load_emoji_task_raw(fixture_spec, tmp_path / "cache")
    size = em.EMOJI_IMAGE_SIZE
    for split in SPLITS:
        images, labels = splits[split]
        count = FIXTURE_PER_CLASS[split] * len(FIXTURE_GROUPS)
        assert images.shape == (count, 3, size, size)
        assert images.dtype == np.uint8
        assert labels.dtype == np.int64
        assert np.bincount(labels, minlength=3).tolist() == [FIXTURE_PER_CLASS[split]] * 3
        colour_spread = np.abs(np.diff(images.astype(np.float32), axis=1)).mean(axis=(1, 2, 3))
        assert (colour_spread > GREY_TOLERANCE).all(), "every image should be in colour"


def test_fixture_splits_use_disjoint_emoji(fixture_spec: em.EmojiTaskSpec, tmp_path: Path) -> None:
    assignment = em.split_emoji(fixture_spec)
    entries = em.parse_emoji_test(FIXTURE_TEXT)
    for label, group in enumerate(fixture_spec.groups):
        per_split = [set(assignment[split][label]) for split in SPLITS]
        assert all(per_split), "every split needs at least one emoji of every class"
        listed = {e.char for e in entries if e.group == group}
        assert sum(len(s) for s in per_split) == len(set.union(*per_split)) == len(listed)
        assert set.union(*per_split) == listed
    splits = em.load_emoji_task_raw(fixture_spec, tmp_path / "cache")
    hashes = {split: _row_hashes(splits[split][0]) for split in SPLITS}
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_fixture_is_deterministic_and_cached(
    fixture_spec: em.EmojiTaskSpec, tmp_path: Path
) -> None:
    first = em.load_emoji_task_raw(fixture_spec, tmp_path / "a")
    second = em.load_emoji_task_raw(fixture_spec, tmp_path / "b")  # rendered again
    for split in SPLITS:
        assert np.array_equal(first[split][0], second[split][0])
        assert np.array_equal(first[split][1], second[split][1])
    (cached,) = (tmp_path / "a").glob("emoji_fixture-*.npz")
    from_cache = em.load_emoji_task_raw(fixture_spec, tmp_path / "a")
    assert np.array_equal(from_cache["test"][0], first["test"][0])
    reseeded = dataclasses.replace(fixture_spec, seed=fixture_spec.seed + 1)
    other = em.load_emoji_task_raw(reseeded, tmp_path / "a")
    assert len(list((tmp_path / "a").glob("emoji_fixture-*.npz"))) == 2
    assert not np.array_equal(other["train"][0], first["train"][0])
    assert cached.is_file()


def test_generator_fingerprint_tracks_the_spec_and_the_emoji_list(
    fixture_spec: em.EmojiTaskSpec, tmp_path: Path
) -> None:
    font = tmp_path / "font.ttf"
    font.write_bytes(b"0" * 10)
    listing = tmp_path / "emoji-test.txt"
    base = em.generator_fingerprint(fixture_spec, font, listing)
    assert base == em.generator_fingerprint(fixture_spec, font, listing)
    fewer = dataclasses.replace(fixture_spec, per_class=SplitSizes(1, 1, 1))
    assert em.generator_fingerprint(fewer, font, listing) != base
    listing.write_text(FIXTURE_TEXT + "\n# an edit", encoding="utf-8")
    assert em.generator_fingerprint(fixture_spec, font, listing) != base


def test_too_few_emoji_in_a_group_is_a_clear_error(
    fixture_spec: em.EmojiTaskSpec, tmp_path: Path
) -> None:
    tiny = dataclasses.replace(fixture_spec, max_emoji_per_group=2)
    with pytest.raises(RuntimeError, match="need at least 3"):
        em.load_emoji_task_raw(tiny, tmp_path)


def test_missing_sources_name_the_apt_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(em.EMOJI_TEST_ENV, str(tmp_path / "absent.txt"))
    with pytest.raises(TaskSourceMissingError, match="apt-get install -y unicode-data"):
        em.load_emoji_task_raw(EMOJI_SPEC, tmp_path)
    monkeypatch.delenv(em.EMOJI_TEST_ENV)
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    monkeypatch.setenv(FONT_DIRS_ENV, str(empty))
    clear_font_index()
    with pytest.raises(TaskSourceMissingError, match="fonts-noto-color-emoji"):
        em.load_emoji_task_raw(EMOJI_SPEC, tmp_path)
    monkeypatch.delenv(FONT_DIRS_ENV)
    clear_font_index()


def test_registered_task_splits_every_emoji_of_eight_groups_once() -> None:
    info = get_task_info(EMOJI_GROUPS)
    assert (info.num_classes, info.in_chans, info.image_size) == (8, 3, em.EMOJI_IMAGE_SIZE)
    assert "Flags" not in info.class_names
    assignment = em.split_emoji(EMOJI_SPEC)
    for label in range(info.num_classes):
        per_split = [set(assignment[split][label]) for split in SPLITS]
        assert all(per_split)
        assert not per_split[0] & per_split[1]
        assert not per_split[0] & per_split[2]
        assert not per_split[1] & per_split[2]
    test_counts = [len(assignment["test"][label]) for label in range(info.num_classes)]
    assert min(test_counts) >= 10, "enough unseen emoji per class for a meaningful test split"


def test_registered_task_loads_as_rgb(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.getbasetemp() / "tal-task-cache"
    data = load_task(EMOJI_GROUPS, "val", root=root)
    assert data.images.shape == (get_task_info(EMOJI_GROUPS).split_sizes.val, 3, 64, 64)
    assert data.norm.channels == 3
    assert len(set(data.norm.mean)) == 3, "colour channels have their own statistics"
