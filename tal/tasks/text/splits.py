"""Fixed, seeded, class-balanced train/val/test splits of labelled texts, without repeats.

A text that occurs under two labels is dropped; a text that occurs twice under one label is
kept once; two texts whose first ``max_tokens`` tokens are equal count as one (the model would
see the same input). Examples that share a group (the paragraphs of one man page) all land in
one split: groups are taken in a seeded random order, filling test, then val, then train; the
part of a group that does not fit in a split is dropped rather than moved to the next split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..data import SPLITS, Split, SplitSizes
from .sources import SourceText

FILL_ORDER: tuple[Split, ...] = ("test", "val", "train")
"""Evaluation splits are filled first, so they are complete whenever any split is."""
ENCODE_CHUNK = 64
"""Texts tokenised per call while walking a class's candidates (only what is used is)."""

Encoder = Callable[[list[str]], list[list[int]]]


class NotEnoughExamplesError(RuntimeError):
    """A class has fewer distinct examples than its splits need."""


@dataclass(frozen=True)
class SplitExample:
    """One chosen example: its token ids (truncated to ``max_tokens``) and label."""

    ids: tuple[int, ...]
    label: int


def distinct_texts(examples: Sequence[SourceText]) -> list[SourceText]:
    """Examples sorted by (label, group, text), each text once; texts seen under two labels
    are dropped."""
    labels_of: dict[str, set[int]] = defaultdict(set)
    for example in examples:
        labels_of[example.text].add(example.label)
    kept: dict[str, SourceText] = {}
    for example in sorted(examples, key=lambda e: (e.label, e.group, e.text)):
        if len(labels_of[example.text]) == 1:
            kept.setdefault(example.text, example)
    return list(kept.values())


def _ordered_groups(
    examples: Sequence[SourceText], rng: np.random.Generator, max_per_group: int
) -> list[list[SourceText]]:
    """Examples of one class as groups in a seeded random order, members shuffled and capped."""
    groups: dict[str, list[SourceText]] = defaultdict(list)
    for example in examples:
        groups[example.group or example.text].append(example)
    keys = sorted(groups)
    ordered = []
    for index in rng.permutation(len(keys)):
        members = groups[keys[index]]
        if len(members) > 1:
            members = [members[i] for i in rng.permutation(len(members))]
        ordered.append(members[:max_per_group] if max_per_group else members)
    return ordered


def _encoded(
    groups: list[list[SourceText]], encode: Encoder, max_tokens: int
) -> Iterator[tuple[int, tuple[int, ...]]]:
    """``(group index, truncated ids)`` for every member of ``groups`` in order, tokenising
    ``ENCODE_CHUNK`` texts at a time."""
    flat = [(g, example.text) for g, members in enumerate(groups) for example in members]
    for start in range(0, len(flat), ENCODE_CHUNK):
        chunk = flat[start : start + ENCODE_CHUNK]
        for (group, _), ids in zip(chunk, encode([text for _, text in chunk]), strict=True):
            yield group, tuple(ids[:max_tokens])


def balanced_splits(
    examples: Sequence[SourceText],
    class_names: Sequence[str],
    per_class: SplitSizes,
    seed: int,
    encode: Encoder,
    max_tokens: int,
    max_per_group: int = 0,
) -> dict[Split, list[SplitExample]]:
    """Pick ``per_class[split]`` examples of every class for every split, shuffled.

    Raises ``NotEnoughExamplesError`` naming the class if it runs out of distinct examples.
    """
    by_class: dict[int, list[SourceText]] = defaultdict(list)
    for example in distinct_texts(examples):
        by_class[example.label].append(example)
    seen: set[tuple[int, ...]] = set()
    chosen: dict[Split, list[SplitExample]] = {split: [] for split in SPLITS}
    for label, name in enumerate(class_names):
        rng = np.random.default_rng([seed, label])
        groups = _ordered_groups(by_class[label], rng, max_per_group)
        counts = dict.fromkeys(SPLITS, 0)
        pending = [split for split in FILL_ORDER if per_class[split]]
        current_group = -1
        for group, ids in _encoded(groups, encode, max_tokens):
            if group != current_group:
                current_group = group
                if pending and counts[pending[0]] == per_class[pending[0]]:
                    pending.pop(0)
            if not pending:
                break
            target = pending[0]
            if counts[target] == per_class[target] or not ids or ids in seen:
                continue
            seen.add(ids)
            chosen[target].append(SplitExample(ids, label))
            counts[target] += 1
        if any(counts[split] < per_class[split] for split in SPLITS):
            raise NotEnoughExamplesError(
                f"class {name!r} has too few distinct examples for {per_class.total} "
                f"({per_class.test} test, {per_class.val} val, {per_class.train} train)"
                + (f" with at most {max_per_group} per group" if max_per_group else "")
            )
    for index, split in enumerate(SPLITS):
        order = np.random.default_rng([seed, len(class_names), index]).permutation(
            len(chosen[split])
        )
        chosen[split] = [chosen[split][i] for i in order]
    return chosen
