"""Batches from the task suite, fully determined by ``(seed, step)`` so a resumed run sees
exactly the data an uninterrupted run would have seen."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tal.tasks import (
    SUITE_IMAGE_SIZE,
    SUITE_IN_CHANS,
    TaskData,
    held_out_task,
    list_tasks,
    load_task,
)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator for one step; ``stream`` separates independent uses (data, archs, ranks)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7_919 + stream)


def task_weights(sizes: dict[str, int], temperature: float) -> dict[str, float]:
    """Sampling probability of each task, proportional to ``(n_i / N) ** temperature``."""
    total = sum(sizes.values())
    raw = {name: (n / total) ** temperature for name, n in sizes.items()}
    norm = sum(raw.values())
    return {name: value / norm for name, value in raw.items()}


@dataclass
class SuiteData:
    """The training tasks of the suite (the held-out task excluded) in one label space.

    Only the tasks stored as 32x32 grey (``SUITE_IMAGE_SIZE``, ``SUITE_IN_CHANS``) take part,
    so every batch has one image format and the union label space is the one the shipped
    ancestry was trained on; tasks in other formats (the colour ``emoji_groups``) are left out.

    Attributes:
        tasks: name -> train split; offsets: name -> ``(start, stop)`` in the union label space.
    """

    tasks: dict[str, TaskData]
    offsets: dict[str, tuple[int, int]]

    @classmethod
    def load(
        cls,
        split: str = "train",
        root: object = None,
        include_held_out: bool = False,
        limit: int | None = None,
    ) -> SuiteData:
        unseen = held_out_task().name
        suite = list_tasks(image_size=SUITE_IMAGE_SIZE, in_chans=SUITE_IN_CHANS)
        names = [t.name for t in suite if include_held_out or t.name != unseen]
        tasks = {name: load_task(name, split, root=root, limit=limit) for name in names}
        offsets, start = {}, 0
        for name, data in tasks.items():
            offsets[name] = (start, start + data.num_classes)
            start += data.num_classes
        return cls(tasks, offsets)

    @property
    def num_classes(self) -> int:
        return max(stop for _, stop in self.offsets.values())

    def sizes(self) -> dict[str, int]:
        return {name: len(data.labels) for name, data in self.tasks.items()}

    def union_batch(
        self, batch_size: int, temperature: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed-task batch: images ``(B, C, H, W)``, union labels ``(B,)``."""
        names = list(self.tasks)
        weights = task_weights(self.sizes(), temperature)
        probs = torch.tensor([weights[n] for n in names])
        picks = torch.multinomial(probs, batch_size, replacement=True, generator=generator)
        images, labels = [], []
        for task_index in range(len(names)):
            count = int((picks == task_index).sum())
            if count:
                data = self.tasks[names[task_index]]
                idx = torch.randint(len(data.labels), (count,), generator=generator)
                images.append(data.images[idx])
                labels.append(data.labels[idx] + self.offsets[names[task_index]][0])
        return torch.cat(images), torch.cat(labels)

    def task_batch(
        self, batch_size: int, temperature: float, generator: torch.Generator
    ) -> tuple[str, torch.Tensor, torch.Tensor]:
        """One task sampled by temperature; its images ``(B, C, H, W)`` and own labels ``(B,)``."""
        names = list(self.tasks)
        weights = task_weights(self.sizes(), temperature)
        probs = torch.tensor([weights[n] for n in names])
        name = names[int(torch.multinomial(probs, 1, generator=generator))]
        data = self.tasks[name]
        idx = torch.randint(len(data.labels), (batch_size,), generator=generator)
        return name, data.images[idx], data.labels[idx]
