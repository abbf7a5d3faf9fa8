"""Batches from the text task suite, fully determined by ``(seed, step)`` like the image ones.

A batch holds token rows cut to at most ``max_tokens`` (and to the batch's longest row), their
real lengths and labels. The language-model loss is estimated on a random subset of the
batch's next-token targets (:func:`sample_lm_positions`): the full-vocabulary output layer is
most of a GPT-2 step's cost on a CPU, and a uniform subset is an unbiased estimate of the mean
loss per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tal.tasks import TextTaskData, held_out_task, list_tasks, load_task
from tal.training.data import task_weights

TEXT = "text"


@dataclass(frozen=True)
class TextBatch:
    """Token rows padded on the right: ``input_ids (B, T)``, ``lengths (B,)`` in ``[1, T]``,
    ``labels (B,)``."""

    input_ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(self.input_ids.to(device), self.lengths.to(device), self.labels.to(device))


def cut_rows(data: TextTaskData, index: torch.Tensor, max_tokens: int) -> TextBatch:
    """Rows ``index`` of ``data`` cut to ``min(max_tokens, longest row)`` tokens."""
    lengths = data.lengths[index].clamp_max(max_tokens)
    width = int(lengths.max())
    return TextBatch(data.input_ids[index, :width], lengths, data.labels[index])


def sample_lm_positions(
    lengths: torch.Tensor, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` next-token targets drawn uniformly (with replacement) from a batch's real ones:
    row ``b``, position ``t`` (``t + 1 < lengths[b]``) predicts token ``t + 1``. Returns
    ``(rows, positions)``, both ``(count,)`` int64 (empty when no row has two tokens)."""
    targets = (lengths - 1).clamp_min(0)  # next-token targets per row
    total = int(targets.sum())
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    flat = torch.randint(total, (count,), generator=generator)
    ends = targets.cumsum(0)
    rows = torch.searchsorted(ends, flat, right=True)
    positions = flat - (ends[rows] - targets[rows])
    return rows, positions


@dataclass
class TextSuiteData:
    """The training text tasks (the held-out one excluded) in one label space.

    Attributes:
        tasks: name -> split; offsets: name -> ``(start, stop)`` in the union label space.
    """

    tasks: dict[str, TextTaskData]
    offsets: dict[str, tuple[int, int]]

    @classmethod
    def load(cls, split: str = "train", limit: int | None = None) -> TextSuiteData:
        unseen = held_out_task(TEXT).name
        names = [t.name for t in list_tasks(TEXT) if t.name != unseen]
        tasks = {name: load_task(name, split, limit=limit) for name in names}
        offsets, start = {}, 0
        for name, data in tasks.items():
            offsets[name] = (start, start + data.num_classes)
            start += data.num_classes
        return cls(tasks, offsets)  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int:
        return max(stop for _, stop in self.offsets.values())

    def _weights(self, temperature: float) -> torch.Tensor:
        sizes = {name: len(data) for name, data in self.tasks.items()}
        weights = task_weights(sizes, temperature)
        return torch.tensor([weights[name] for name in self.tasks])

    def union_batch(
        self, batch_size: int, temperature: float, max_tokens: int, generator: torch.Generator
    ) -> TextBatch:
        """A mixed-task batch with union labels; tasks sampled ``~ (n_i / N)^T``."""
        names = list(self.tasks)
        picks = torch.multinomial(
            self._weights(temperature), batch_size, replacement=True, generator=generator
        )
        ids, lengths, labels = [], [], []
        for task_index, name in enumerate(names):
            count = int((picks == task_index).sum())
            if count:
                data = self.tasks[name]
                index = torch.randint(len(data), (count,), generator=generator)
                ids.append(data.input_ids[index])
                lengths.append(data.lengths[index])
                labels.append(data.labels[index] + self.offsets[name][0])
        merged = TextTaskData(
            torch.cat(ids), torch.cat(lengths), torch.cat(labels), num_classes=self.num_classes
        )
        return cut_rows(merged, torch.arange(batch_size), max_tokens)

    def task_batch(
        self, batch_size: int, temperature: float, max_tokens: int, generator: torch.Generator
    ) -> tuple[str, TextBatch]:
        """One task sampled ``~ (n_i / N)^T``; a batch of its rows with its own labels."""
        names = list(self.tasks)
        name = names[int(torch.multinomial(self._weights(temperature), 1, generator=generator))]
        data = self.tasks[name]
        index = torch.randint(len(data), (batch_size,), generator=generator)
        return name, cut_rows(data, index, max_tokens)
