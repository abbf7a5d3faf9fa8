"""The GPT-2 half of a hypernetwork stage (``tal train stage1`` / ``stage2`` with a
``text_library``).

A share of the steps (``text_share``, spread evenly and fixed by the step number, so a resumed
run takes the same steps) samples GPT-2 architectures from the text library instead of ViTs,
predicts their weights (token embedding as factors: ``tal.training.text_model``) and scores
them on text: next-token cross-entropy on a subset of positions, the sequence classifier's
cross-entropy (stage 1: the union of the text tasks' classes; stage 2: one task, conditioned
on its embedding), and distillation of the text ancestry's next-token and class distributions.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

from tal.arch.formats import HF_SEQUENCE_CLASSIFICATION
from tal.arch.libraries import build_library
from tal.arch.specs import GPT2Spec
from tal.checkpoints.text_ancestry import TextAncestry
from tal.hypernet import TALHypernet
from tal.training.config import ConfigError, HypernetTrainConfig
from tal.training.data import step_generator
from tal.training.distributed import DistInfo
from tal.training.text_ancestry_trainer import load_text_ancestry_artifacts
from tal.training.text_data import TextBatch, TextSuiteData, cut_rows, sample_lm_positions
from tal.training.text_model import (
    GPT2Runner,
    TeacherLM,
    TextTargets,
    predicted_norm,
    text_loss,
)

TEXT_DATA_STREAM, TEXT_ARCH_STREAM, TEXT_EVAL_STREAM = 2, 3, 4
RUNNER_CACHE_SIZE = 64
EVAL_BATCH = 64
EVAL_LM_POSITIONS = 1024  # next-token targets of the held-out LM loss, per task


def is_text_step(step: int, share: float) -> bool:
    """Whether 1-based ``step`` trains on text: ``share`` of the steps, spread evenly."""
    return math.floor(step * share) > math.floor((step - 1) * share)


class TextTraining:
    """Text steps and held-out text checks of one hypernetwork stage."""

    def __init__(
        self,
        config: HypernetTrainConfig,
        dist: DistInfo,
        task_dim: int,
        data_limit: int | None = None,
    ) -> None:
        assert config.text_library is not None
        self.config, self.dist = config, dist
        self.ancestry: TextAncestry
        self.ancestry, features, self.summary = load_text_ancestry_artifacts(
            config.run_dir, dist.device
        )
        if self.ancestry.width > task_dim:
            raise ConfigError(
                f"the text ancestry's width {self.ancestry.width} exceeds the task embedding "
                f"width {task_dim} (the image ancestry's): train a narrower text ancestry"
            )
        self.embeddings = {  # text task embeddings, zero-padded to the shared task width
            name: F.pad(value, (0, task_dim - value.numel())) for name, value in features.items()
        }
        self.suite = TextSuiteData.load("train", limit=data_limit)
        self.val = TextSuiteData.load("val", limit=config.text_eval_examples)
        if self.ancestry.task_offsets != self.suite.offsets:
            raise ConfigError(
                "the text ancestry's label space differs from the text suite's: ancestry "
                f"{self.ancestry.task_offsets}, suite {self.suite.offsets}; retrain it with "
                "`tal train ancestry --modality text`"
            )
        self.library = build_library(config.text_library, config.seed)
        if any(not isinstance(spec, GPT2Spec) for spec in self.library.train):
            raise ConfigError(f"text_library {config.text_library!r} is not a GPT-2 library")
        self._runners: OrderedDict[str, GPT2Runner] = OrderedDict()

    def is_text_step(self, step: int) -> bool:
        return is_text_step(step, self.config.text_share or 0.0)

    def runner(self, spec: GPT2Spec) -> GPT2Runner:
        key = spec.spec_hash()
        if key not in self._runners:
            self._runners[key] = GPT2Runner(spec)
            if len(self._runners) > RUNNER_CACHE_SIZE:
                self._runners.popitem(last=False)
        self._runners.move_to_end(key)
        return self._runners[key]

    def task_embedding(self, name: str | None, conditioning: bool) -> torch.Tensor | None:
        return self.embeddings[name].to(self.dist.device) if conditioning and name else None

    def _batch(self, step: int) -> tuple[str | None, TextBatch, int, torch.Generator]:
        config = self.config
        data_step = 1 if config.overfit_batch else step
        generator = step_generator(config.seed, data_step, TEXT_DATA_STREAM)
        if config.stage == 1:
            batch = self.suite.union_batch(
                config.text_batch_size, config.task_temperature, config.text_max_tokens, generator
            )
            return None, batch, self.suite.num_classes, generator
        name, batch = self.suite.task_batch(
            config.text_batch_size, config.task_temperature, config.text_max_tokens, generator
        )
        return name, batch, self.suite.tasks[name].num_classes, generator

    @torch.no_grad()
    def _teacher(
        self, task: str | None, batch: TextBatch, rows: torch.Tensor, positions: torch.Tensor
    ) -> tuple[TeacherLM, torch.Tensor]:
        """The text ancestry's next-token distributions at ``(rows, positions)`` and its class
        logits (the union in stage 1, ``task``'s slice in stage 2)."""
        hidden = self.ancestry.hidden_states(batch.input_ids)
        lm = TeacherLM.from_logits(self.ancestry.lm_logits(hidden[rows, positions]))
        classes = self.ancestry.class_logits(hidden, batch.lengths)
        if task is not None:
            start, stop = self.ancestry.task_offsets[task]
            classes = classes[:, start:stop]
        return lm, classes.float()

    def train_step(self, hypernet: TALHypernet, step: int, conditioning: bool) -> float:
        """Forward + backward of this rank's share of the text meta-batch; returns its loss."""
        config, device = self.config, self.dist.device
        task, batch, num_classes, generator = self._batch(step)
        rows, positions = sample_lm_positions(batch.lengths, config.text_lm_positions, generator)
        batch, rows, positions = batch.to(device), rows.to(device), positions.to(device)
        targets = TextTargets(batch.input_ids[rows, positions + 1], batch.labels)
        if config.distill_weight:
            teacher_lm, teacher_classes = self._teacher(task, batch, rows, positions)
            targets = TextTargets(targets.next_tokens, targets.labels, teacher_lm, teacher_classes)
        arch_step = 1 if config.overfit_batch else step
        arch_gen = step_generator(config.seed, arch_step, TEXT_ARCH_STREAM)
        picks = torch.randint(
            len(self.library.train), (config.text_meta_batch,), generator=arch_gen
        ).tolist()
        total = 0.0
        for slot in range(self.dist.rank, config.text_meta_batch, self.dist.world_size):
            base = self.library.train[picks[slot]]
            spec = base.model_copy(update={"num_classes": num_classes})
            params = hypernet.factored(
                spec, self.task_embedding(task, conditioning), HF_SEQUENCE_CLASSIFICATION
            )
            lm_logits, class_logits = self.runner(spec).outputs(params, batch, rows, positions)
            loss = text_loss(
                lm_logits,
                class_logits,
                targets,
                config.ce_weight or 0.0,
                config.distill_weight or 0.0,
                config.temperature,
                config.label_smoothing,
            )
            loss = loss + config.norm_penalty * predicted_norm(params, spec)
            (loss / config.text_meta_batch).backward()
            total += loss.item() / config.text_meta_batch
        return total

    @torch.no_grad()
    def evaluate(self, hypernet: TALHypernet, conditioning: bool) -> dict[str, float]:
        """Untrained accuracy and language-model loss (nats per token) of predicted weights on
        held-out GPT-2 architectures, validation rows of each text task."""
        results: dict[str, float] = {}
        archs = self.library.held_out[: self.config.eval_archs]
        for name, data in self.val.tasks.items():
            classes = self.suite.num_classes if self.config.stage == 1 else data.num_classes
            start, _ = self.suite.offsets[name] if self.config.stage == 1 else (0, 0)
            lengths = data.lengths.clamp_max(self.config.text_max_tokens)
            generator = step_generator(self.config.seed, 0, TEXT_EVAL_STREAM)
            rows, positions = sample_lm_positions(lengths, EVAL_LM_POSITIONS, generator)
            accuracy, lm = [], []
            for base in archs:
                spec = base.model_copy(update={"num_classes": classes})
                task = self.task_embedding(name, conditioning)
                params = hypernet.factored(spec, task, HF_SEQUENCE_CLASSIFICATION)
                correct, nats = 0, 0.0
                for index in torch.arange(len(data)).split(EVAL_BATCH):
                    part = cut_rows(data, index, self.config.text_max_tokens).to(self.dist.device)
                    inside = (rows >= index[0]) & (rows <= index[-1])
                    local = (rows[inside] - index[0]).to(self.dist.device)
                    where = positions[inside].to(self.dist.device)
                    lm_logits, class_logits = self.runner(spec).outputs(params, part, local, where)
                    class_logits = class_logits[:, start : start + data.num_classes]
                    correct += int((class_logits.argmax(1) == part.labels).sum())
                    next_tokens = part.input_ids[local, where + 1]
                    nats += float(F.cross_entropy(lm_logits, next_tokens, reduction="sum"))
                accuracy.append(correct / len(data))
                lm.append(nats / max(1, len(rows)))
            results[f"heldout_text_acc/{name}"] = sum(accuracy) / len(accuracy)
            results[f"heldout_text_lm/{name}"] = sum(lm) / len(lm)
        for metric in ("acc", "lm"):
            values = [v for k, v in results.items() if k.startswith(f"heldout_text_{metric}/")]
            results[f"heldout_text_{metric}_mean"] = sum(values) / len(values)
        return results
