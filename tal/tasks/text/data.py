"""The container of one split of a text-classification task, ready for a GPT-2-style model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import END_OF_TEXT_ID, GPT2_VOCAB_SIZE

TEXT_MAX_TOKENS = 128
"""Tokens kept per example in the built-in text tasks (longer texts are truncated)."""


@dataclass
class TextTaskData:
    """One split of a text-classification task, tokenised with GPT-2's BPE.

    Attributes:
        input_ids: ``(N, L)`` int64 token ids in ``[0, 50257)``; row ``i`` holds
            ``lengths[i]`` tokens of its text, then ``pad_id`` up to ``L`` (``L`` is the task's
            maximum length, the same for every split). No end-of-text token is appended.
        lengths: ``(N,)`` int64 in ``[1, L]``, the number of real tokens of each row.
        labels: ``(N,)`` int64 in ``[0, num_classes)``.
        num_classes: size of the label space (some classes may have no example in a subset).
        class_names: one name per class, or empty when unknown.
        pad_id: the id in the padded positions (GPT-2's ``<|endoftext|>``, 50256).
    """

    input_ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] = ()
    name: str = ""
    split: str = ""
    pad_id: int = END_OF_TEXT_ID

    def __post_init__(self) -> None:
        ids, lengths, labels = self.input_ids, self.lengths, self.labels
        if ids.ndim != 2 or ids.dtype != torch.int64:
            raise ValueError(
                f"input_ids must be (N, L) int64, got shape {tuple(ids.shape)} dtype {ids.dtype}"
            )
        for what, tensor in (("lengths", lengths), ("labels", labels)):
            if tensor.ndim != 1 or tensor.dtype != torch.int64:
                raise ValueError(
                    f"{what} must be (N,) int64, got shape {tuple(tensor.shape)} "
                    f"dtype {tensor.dtype}"
                )
            if tensor.shape[0] != ids.shape[0]:
                raise ValueError(f"{ids.shape[0]} rows of input_ids but {tensor.shape[0]} {what}")
        if ids.shape[1] < 1:
            raise ValueError("input_ids must have at least one column (L >= 1)")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= GPT2_VOCAB_SIZE):
            raise ValueError(
                f"token ids must lie in [0, {GPT2_VOCAB_SIZE}), got "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > ids.shape[1]):
            raise ValueError(
                f"lengths must lie in [1, {ids.shape[1]}], got "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
        if bool((ids[~self.attention_mask] != self.pad_id).any()):
            raise ValueError(f"positions past a row's length must hold pad_id {self.pad_id}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def max_tokens(self) -> int:
        """``L``, the padded length of every row."""
        return int(self.input_ids.shape[1])

    @property
    def attention_mask(self) -> torch.Tensor:
        """``(N, L)`` bool, True on real tokens and False on padding."""
        positions = torch.arange(self.input_ids.shape[1])
        return positions[None, :] < self.lengths[:, None]
