"""Training on text no task uses: does a served GPT-2 start ever end worse than Hugging Face's?

The text is the licence texts every Debian system ships (``/usr/share/common-licenses``,
package ``base-files``); no text task reads them. It is cut into rows of ``max_tokens`` tokens,
once with GPT-2's vocabulary (the served token embedding comes from the text ancestry) and once
as bytes (vocabulary 257, which the text ancestry's token table does not cover: the served
token rows are then decoded on rows drawn with the table's covariance,
``tal.hypernet.decoder.rows_like``).
Every start is trained with the same AdamW recipe on the same rows and scored on held-out
rows.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tal.arch.specs import GPT2Spec
from tal.arch.target_models import build_model
from tal.evaluation.finetune import warmup_cosine_schedule
from tal.evaluation.text_measure import LMPositions
from tal.tasks import TextTaskData
from tal.tasks.text import gpt2_tokenizer
from tal.training.data import step_generator
from tal.training.text_data import cut_rows, sample_lm_positions

FOREIGN_TEXT_DIR = Path("/usr/share/common-licenses")
BYTE_VOCAB = 257  # 256 byte values and one id for padding / end of text
VALIDATION_SHARE = 0.1
FOREIGN_STREAM = 9
WARMUP_SHARE = 0.1
VOCABULARIES = ("gpt2", "bytes")


def foreign_text(root: Path = FOREIGN_TEXT_DIR) -> str:
    """The licence texts, each file once (the folder holds symlinks such as GPL -> GPL-3)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is missing (Debian package base-files)")
    files = sorted({path.resolve() for path in root.iterdir() if path.is_file()})
    return "\n\n".join(path.read_text(encoding="utf-8", errors="replace") for path in files)


def text_rows(ids: list[int], max_tokens: int, pad_id: int) -> TextTaskData:
    """Consecutive rows of ``max_tokens`` ids (the last one padded), label 0."""
    rows = [ids[start : start + max_tokens] for start in range(0, len(ids), max_tokens)]
    lengths = torch.tensor([len(row) for row in rows])
    tensor = torch.full((len(rows), max_tokens), pad_id, dtype=torch.long)
    for index, row in enumerate(rows):
        tensor[index, : len(row)] = torch.tensor(row)
    keep = lengths > 1
    return TextTaskData(
        tensor[keep],
        lengths[keep],
        torch.zeros(int(keep.sum()), dtype=torch.long),
        1,
        pad_id=pad_id,
    )


def foreign_splits(vocabulary: str, max_tokens: int) -> tuple[TextTaskData, TextTaskData, int]:
    """Training and held-out rows of the foreign text, and the vocabulary size."""
    text = foreign_text()
    if vocabulary == "gpt2":
        vocab_size = gpt2_tokenizer().get_vocab_size()
        data = text_rows(gpt2_tokenizer().encode(text).ids, max_tokens, vocab_size - 1)
    else:
        vocab_size = BYTE_VOCAB
        data = text_rows(list(text.encode("utf-8")), max_tokens, BYTE_VOCAB - 1)
    data = _subset(data, _first_of_each_row(data.input_ids))  # licences share paragraphs
    held_out = max(1, int(len(data) * VALIDATION_SHARE))
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=generator)
    return _subset(data, order[held_out:]), _subset(data, order[:held_out]), vocab_size


def _first_of_each_row(input_ids: torch.Tensor) -> torch.Tensor:
    """Indices ``(M,)`` of the first occurrence of each distinct row of ``(N, L)`` ids, in
    order, so that no held-out row is also a training row."""
    seen: set[tuple[int, ...]] = set()
    keep = []
    for index, row in enumerate(input_ids.tolist()):
        if tuple(row) not in seen:
            seen.add(tuple(row))
            keep.append(index)
    return torch.tensor(keep, dtype=torch.long)


def _subset(data: TextTaskData, index: torch.Tensor) -> TextTaskData:
    return TextTaskData(
        data.input_ids[index], data.lengths[index], data.labels[index], 1, pad_id=data.pad_id
    )


def lm_eval_loss(model: nn.Module, data: TextTaskData, positions: LMPositions) -> float:
    """Nats per token of a ``GPT2LMHeadModel`` on fixed next-token targets."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for chunk in torch.unique(positions.rows).split(64):
            batch = cut_rows(data, chunk, positions.max_tokens)
            logits = model(input_ids=batch.input_ids).logits
            inside = torch.isin(positions.rows, chunk)
            local = torch.searchsorted(chunk, positions.rows[inside])
            where = positions.positions[inside]
            targets = batch.input_ids[local, where + 1]
            total += float(F.cross_entropy(logits[local, where], targets, reduction="sum"))
    return total / max(1, len(positions.rows))


def train_on_foreign_text(
    spec: GPT2Spec,
    state: dict[str, torch.Tensor] | None,
    train: TextTaskData,
    held_out: TextTaskData,
    steps: int,
    seed: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    lm_positions: int = 256,
    eval_positions: int = 2048,
) -> tuple[float, float]:
    """``GPT2LMHeadModel`` of ``spec`` from ``state`` (None: Hugging Face's init seeded by
    ``seed``) trained ``steps`` AdamW steps (10% linear warm-up, then cosine) on next-token
    cross-entropy at ``lm_positions`` sampled targets per batch; returns the held-out loss
    (nats per token) before and after."""
    torch.manual_seed(seed)
    model = build_model(spec, "hf")
    if state is not None:
        model.load_state_dict(state, strict=True)
    positions = LMPositions.draw(held_out, eval_positions, held_out.max_tokens)
    before = lm_eval_loss(model, held_out, positions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = warmup_cosine_schedule(optimizer, steps, int(steps * WARMUP_SHARE))
    for step in range(1, steps + 1):
        model.eval()  # no dropout, as everywhere in the evaluation
        generator = step_generator(seed, step, FOREIGN_STREAM)
        index = torch.randint(len(train), (batch_size,), generator=generator)
        batch = cut_rows(train, index, train.max_tokens)
        rows, where = sample_lm_positions(batch.lengths, lm_positions, generator)
        hidden = model.transformer(input_ids=batch.input_ids).last_hidden_state
        logits = model.lm_head(hidden[rows, where])
        loss = F.cross_entropy(logits, batch.input_ids[rows, where + 1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return before, lm_eval_loss(model, held_out, positions)
