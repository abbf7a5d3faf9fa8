"""``tal train stage1`` / ``stage2``: the hypernetwork trained through real timm ViTs.

Stage 1 (union label space, no task): each step samples a meta-batch of architectures from
the library, predicts their weights, runs the same images through each (``functional_call``, so
gradients reach the hypernetwork) and minimises
``ce_weight * CE + distill_weight * T^2 * KL(softmax(a / T) || softmax(P s / T))`` between the
ancestry's CLS feature ``a`` and the student's projected CLS feature ``P s``, plus a penalty on
predicted-weight norms. Stage 2 samples one task per step (probability ~ (n_i / N)^(1/2)),
sizes the head to that task and conditions on its embedding. Baselines are switches: the
``ghn3`` / ``logah`` decoder presets with ``distill_weight=0`` and no task conditioning.

With a ``text_library``, a share of the steps trains on GPT-2 graphs and the text tasks instead
(``tal.training.text_hypernet``), so one hypernetwork serves both families.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tal.arch.functional import forward_with
from tal.arch.graph import VECTOR_KINDS, build_graph
from tal.arch.libraries import build_library
from tal.arch.specs import ViTSpec
from tal.arch.target_models import build_model
from tal.checkpoints.learngene import Learngene
from tal.hypernet import TALHypernet, preset
from tal.tasks.preprocess import to_input_format
from tal.training.ancestry_trainer import load_ancestry_artifacts
from tal.training.config import ConfigError, HypernetTrainConfig
from tal.training.data import SuiteData, step_generator
from tal.training.distributed import DistInfo
from tal.training.loop import TrainLoop
from tal.training.state import load_state
from tal.training.text_data import TEXT
from tal.training.text_hypernet import TextTraining

MODEL_CACHE_SIZE = 64
EVAL_BATCH = 256
DATA_STREAM, ARCH_STREAM = 0, 1


class _FeaturesAndLogits(nn.Module):
    """Wraps a timm ViT so one functional call returns pooled features and logits."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.vit.forward_head(self.vit.forward_features(images), pre_logits=True)
        return features, self.vit.head(features)

    def run(
        self, params: dict[str, torch.Tensor], images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(B, width)`` and logits ``(B, classes)`` with the ViT's weights replaced by
        ``params`` (timm names), differentiably."""
        return forward_with(self, {f"vit.{k}": v for k, v in params.items()}, images)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``; both ``(B, width)``."""
    return (
        F.kl_div(
            F.log_softmax(student / temperature, dim=-1),
            F.log_softmax(teacher / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )


def as_input_of(spec: ViTSpec, images: torch.Tensor) -> torch.Tensor:
    """The suite's ``(B, C, H, W)`` images in ``spec``'s input format (resized, grey repeated
    to RGB); unchanged when the spec takes them as they are. The ancestry sees them as stored,
    so the task, not one input format, is what the hypernetwork learns."""
    return to_input_format(images, spec.img_size, spec.in_chans)


def predicted_norm(params: dict[str, torch.Tensor], spec: ViTSpec) -> torch.Tensor:
    """Mean Frobenius norm of the predicted matrices (GHN-3's weight-norm penalty)."""
    names = [s.name for s in build_graph(spec).params if s.kind not in VECTOR_KINDS]
    return torch.stack([params[n].norm() for n in names]).mean()


class HypernetTrainer(TrainLoop):
    def __init__(
        self, config: HypernetTrainConfig, dist: DistInfo, data_limit: int | None = None
    ) -> None:
        self.name = f"stage{config.stage}"
        super().__init__(
            config.run_dir,
            config.steps,
            config.optim,
            config.guard,
            config.checkpoint_every,
            config.eval_every,
            dist,
        )
        self.config = config
        self.ancestry, self.embeddings, self.ancestry_summary = load_ancestry_artifacts(
            config.run_dir, dist.device
        )
        self.suite = SuiteData.load("train", config.data_root, limit=data_limit)
        self.val = SuiteData.load("val", config.data_root, limit=config.eval_examples)
        if config.distill_target == "logits" and self.ancestry.task_offsets != self.suite.offsets:
            raise ConfigError(
                "distill_target 'logits' needs the ancestry's label space to match the task "
                f"suite's: ancestry {self.ancestry.task_offsets}, suite {self.suite.offsets}; "
                "retrain the ancestry on this suite or use distill_target 'features'"
            )
        self.library = build_library(config.library, config.seed)
        # what every step's draw needs (draw_architectures), computed once
        self.draw_weights = self.library.sampling_weights()
        self.corner = torch.tensor(self.library.corner_indices(), dtype=torch.long)
        modulated = config.task_conditioning and preset(config.preset).encoder.task_conditioning
        hyper_config = preset(
            config.preset,
            task_dim=self.ancestry.width,
            task_conditioning=modulated,
            head_features=config.head_features,
        )
        hyper_config = dataclasses.replace(
            hyper_config,
            decoder=dataclasses.replace(hyper_config.decoder, **config.decoder),
            init_seed=config.seed,
        )
        self.conditioning = modulated and config.stage == 2
        self.hypernet = TALHypernet(hyper_config).to(dist.device)
        self.text = (
            TextTraining(config, dist, self.ancestry.width, data_limit)
            if config.text_library
            else None
        )
        if self.text is not None and hyper_config.decoder.token_basis:
            self.hypernet.set_token_table(self.text.ancestry.token_table())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.projection = nn.Linear(self.library.max_width, self.ancestry.width)
        self.projection.to(dist.device)
        self.optimizer = torch.optim.AdamW(
            list(self.hypernet.parameters()) + list(self.projection.parameters()),
            lr=config.optim.lr,
            weight_decay=config.optim.weight_decay,
        )
        if config.init_from is not None and not self.state_path.exists():
            load_state(config.init_from, self.modules(), None)
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self.autocast = dist.device.type == "cuda"

    def modules(self) -> dict[str, nn.Module]:
        return {"hypernet": self.hypernet, "projection": self.projection}

    def _model(self, spec: ViTSpec) -> _FeaturesAndLogits:
        key = spec.spec_hash()
        if key not in self._models:
            self._models[key] = _FeaturesAndLogits(build_model(spec, "timm")).to(self.dist.device)
            if len(self._models) > MODEL_CACHE_SIZE:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        return self._models[key]

    def _batch(self, step: int) -> tuple[str | None, torch.Tensor, torch.Tensor, int]:
        step = 1 if self.config.overfit_batch else step
        generator = step_generator(self.config.seed, step, DATA_STREAM)
        temperature = self.config.task_temperature
        if self.config.stage == 1:
            images, labels = self.suite.union_batch(self.config.batch_size, temperature, generator)
            return None, images, labels, self.suite.num_classes
        name, images, labels = self.suite.task_batch(self.config.batch_size, temperature, generator)
        return name, images, labels, self.suite.tasks[name].num_classes

    def _task(self, name: str | None) -> torch.Tensor | None:
        return self.embeddings[name].to(self.dist.device) if self.conditioning and name else None

    def _teacher(self, task: str | None, images: torch.Tensor) -> torch.Tensor:
        """The ancestry's distillation target for ``images``: ``(B, ancestry width)`` CLS
        features, or ``(B, classes)`` logits (the union in stage 1, ``task``'s slice in 2)."""
        if self.config.distill_target == "features":
            return self.ancestry.features(images).float()
        logits = self.ancestry.features(images, logits=True).float()
        if task is None:
            return logits
        start, stop = self.ancestry.task_offsets[task]
        return logits[:, start:stop]

    def _student(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """What :meth:`_teacher` is matched against: the student's ``(B, classes)`` logits, or
        its ``(B, width)`` CLS features zero-padded and projected to the ancestry width."""
        if self.config.distill_target == "logits":
            return logits.float()
        padded = F.pad(features.float(), (0, self.library.max_width - features.shape[-1]))
        return self.projection(padded)

    def loss_stream(self, step: int) -> str:
        return TEXT if self.text is not None and self.text.is_text_step(step) else ""

    def train_step(self, step: int) -> float:
        if self.text is not None and self.text.is_text_step(step):
            return self.text.train_step(self.hypernet, step, self.conditioning)
        device = self.dist.device
        task, images, labels, num_classes = self._batch(step)
        images, labels = images.to(device), labels.to(device)
        teacher = self._teacher(task, images) if self.config.distill_weight else None
        arch_step = 1 if self.config.overfit_batch else step
        arch_gen = step_generator(self.config.seed, arch_step, ARCH_STREAM)
        picks = self.draw_architectures(arch_gen)
        total = 0.0
        for slot in range(self.dist.rank, self.config.meta_batch, self.dist.world_size):
            spec = self.library.train[picks[slot]].model_copy(update={"num_classes": num_classes})
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast):
                params = self.hypernet(spec, self._task(task), "timm")
                features, logits = self._model(spec).run(params, as_input_of(spec, images))
                loss = self.config.ce_weight * F.cross_entropy(
                    logits.float(), labels, label_smoothing=self.config.label_smoothing
                )
                if teacher is not None:
                    loss = loss + self.config.distill_weight * distillation_loss(
                        self._student(features, logits), teacher, self.config.temperature
                    )
                loss = loss + self.config.norm_penalty * predicted_norm(params, spec)
            (loss / self.config.meta_batch).backward()
            total += loss.item() / self.config.meta_batch
        return total

    def draw_architectures(self, generator: torch.Generator) -> list[int]:
        """Indices of a step's ``meta_batch`` training architectures: each slot, with the
        probability of the library's corner share (:class:`Corner`), uniformly from its corner,
        and otherwise uniformly or weighted by the library's cost rule
        (:meth:`ModelLibrary.sampling_weights`)."""
        size = self.config.meta_batch
        if self.draw_weights is None:
            drawn = torch.randint(len(self.library.train), (size,), generator=generator)
        else:
            drawn = torch.multinomial(self.draw_weights, size, True, generator=generator)
        if not len(self.corner):
            return drawn.tolist()
        from_corner = torch.rand(size, generator=generator) < self.library.corner_share
        cornered = self.corner[torch.randint(len(self.corner), (size,), generator=generator)]
        return torch.where(from_corner, cornered, drawn).tolist()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Untrained accuracy of predicted weights on held-out architectures (val split)."""
        results: dict[str, float] = {}
        archs = self.library.held_out[: self.config.eval_archs]
        for name, data in self.val.tasks.items():
            accuracies = []
            for base in archs:
                spec = base.model_copy(update={"num_classes": self._eval_classes(name)})
                params = self.hypernet(spec, self._task(name), "timm")
                model = self._model(spec)
                logits = torch.cat(
                    [
                        model.run(params, as_input_of(spec, batch.to(self.dist.device)))[1].cpu()
                        for batch in data.images.split(EVAL_BATCH)
                    ]
                )
                if self.config.stage == 1:
                    start, stop = self.suite.offsets[name]
                    logits = logits[:, start:stop]
                accuracies.append(float((logits.argmax(1) == data.labels).float().mean()))
            results[f"heldout_acc/{name}"] = sum(accuracies) / len(accuracies)
        results["heldout_acc_mean"] = sum(results.values()) / len(results)
        if self.text is not None:
            results.update(self.text.evaluate(self.hypernet, self.conditioning))
        return results

    def _eval_classes(self, task: str) -> int:
        return (
            self.suite.num_classes if self.config.stage == 1 else self.suite.tasks[task].num_classes
        )

    def export(
        self, name: str, version: str, root: Path | None, extra: dict[str, Any] | None = None
    ) -> Path:
        """Writes the trained learngene (hypernet, task embeddings, ancestry) to the store."""
        text_embeddings = self.text.embeddings if self.text is not None else {}
        learngene = Learngene(
            self.hypernet.eval().cpu(),
            {k: v.cpu() for k, v in {**self.embeddings, **text_embeddings}.items()},
            ancestry=self.ancestry,
            text_ancestry=self.text.ancestry if self.text is not None else None,
        )
        manifest = {
            "library": {
                "name": self.library.name,
                "train": len(self.library.train),
                "held_out": len(self.library.held_out),
            },
            "task_classes": self.ancestry_summary["num_classes"],
            "held_out_task": [t for t in self.embeddings if t not in self.suite.tasks],
            "data_fingerprints": self.ancestry_summary["data_fingerprints"],
            "ancestry_metrics": self.ancestry_summary["metrics"],
            "training": {self.name: json.loads(self.config.model_dump_json())},
            "metrics": self.last_eval,
            **(self._text_manifest() if self.text is not None else {}),
            **(extra or {}),
        }
        return learngene.save(name, version, root, manifest)

    def _text_manifest(self) -> dict[str, Any]:
        """What the manifest records of the GPT-2 half."""
        assert self.text is not None
        summary = self.text.summary
        unseen = [t for t in self.text.embeddings if t not in self.text.suite.tasks]
        return {
            "text_library": {
                "name": self.text.library.name,
                "train": len(self.text.library.train),
                "held_out": len(self.text.library.held_out),
            },
            "text_task_classes": summary["num_classes"],
            "text_held_out_task": unseen,
            "text_data_fingerprints": summary["data_fingerprints"],
            "text_ancestry_metrics": summary["metrics"],
            "text_ancestry_spec": summary["spec"],
        }
