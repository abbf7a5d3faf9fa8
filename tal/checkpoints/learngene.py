"""A learngene: a hypernetwork plus the task embeddings it knows, loadable from the store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from tal.arch.formats import OutputFormat, export_plan, parse_dtype
from tal.arch.parse import parse_arch
from tal.arch.specs import GPT2Spec, SpecLike, ViTSpec
from tal.checkpoints import store
from tal.checkpoints.ancestry import Ancestry, NoAncestryError
from tal.checkpoints.provenance import code_version, describe_environment
from tal.checkpoints.text_ancestry import TextAncestry
from tal.hypernet import HypernetConfig, TALHypernet
from tal.tasks.errors import UnknownTaskError
from tal.transfer.lift import TrainedRange, lift_into, lifted_matrices

UNTRAINED_NAME = "untrained"
CHECKPOINT_FORMAT = 1


@dataclass
class Learngene:
    """A hypernetwork with its task table and identity (``name``/``version``).

    With a text ancestry, the hypernetwork's token table (the row basis of GPT-2's token
    embedding for the ancestry's vocabulary) is set from it.
    """

    hypernet: TALHypernet
    tasks: dict[str, torch.Tensor] = field(default_factory=dict)
    name: str = UNTRAINED_NAME
    version: str = "0"
    manifest: dict[str, Any] = field(default_factory=dict)
    ancestry: Ancestry | None = None
    text_ancestry: TextAncestry | None = None

    def __post_init__(self) -> None:
        if self.text_ancestry is not None and self.hypernet.config.decoder.token_basis:
            self.hypernet.set_token_table(self.text_ancestry.token_table())

    @property
    def model_version(self) -> str:
        return f"{self.name}/{self.version}"

    @classmethod
    def fresh(cls, config: HypernetConfig | None = None) -> Learngene:
        """A freshly initialised (untrained, deterministic) learngene with no tasks."""
        return cls(TALHypernet(config).eval())

    def task_embedding(self, task: str | torch.Tensor | None) -> torch.Tensor | None:
        """Resolves a task name (or passes an embedding through); None = unconditioned."""
        if task is None or isinstance(task, torch.Tensor):
            return task
        if task not in self.tasks:
            raise UnknownTaskError(task, sorted(self.tasks))
        return self.tasks[task]

    def embed_task(self, images: torch.Tensor) -> torch.Tensor:
        """A new task's embedding ``(task_dim,)`` from its example images ``(N, C, H, W)``.

        Raises:
            NoAncestryError: the checkpoint carries no ancestry model.
        """
        if self.ancestry is None:
            raise NoAncestryError(
                f"checkpoint {self.model_version} has no ancestry model; register the task "
                "with an embedding vector instead"
            )
        return self.ancestry.embed_task(images)

    def embed_text_task(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A new text task's embedding ``(task_dim,)`` from its examples tokenised with the
        text ancestry's vocabulary (GPT-2's): ids ``(N, L)`` padded on the right, lengths
        ``(N,)`` (``TextTaskData.input_ids`` / ``.lengths``).

        Raises:
            NoAncestryError: the checkpoint carries no text ancestry.
        """
        if self.text_ancestry is None:
            raise NoAncestryError(
                f"checkpoint {self.model_version} has no text ancestry; register the task "
                "with an embedding vector instead"
            )
        task_dim = self.hypernet.config.encoder.task_dim
        return self.text_ancestry.embed_task(input_ids, lengths, task_dim)

    def add_task(self, name: str, embedding: torch.Tensor) -> None:
        """Makes ``name`` usable for prediction (in this process)."""
        expected = (self.hypernet.config.encoder.task_dim,)
        if tuple(embedding.shape) != expected:
            raise ValueError(
                f"task embedding must have shape {expected}, got {tuple(embedding.shape)}"
            )
        if not torch.isfinite(embedding).all():
            raise ValueError("task embedding contains NaN or infinite values")
        self.tasks[name] = embedding.detach().to(self.hypernet.device, torch.float32)

    @torch.inference_mode()
    def predict(
        self,
        arch: SpecLike,
        task: str | torch.Tensor | None = None,
        format: OutputFormat = "timm",
        dtype: str = "float32",
        out: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predicted weights of ``arch`` for ``task``, loadable with ``strict=True``.

        A ViT outside the trained range is predicted at its :meth:`proxy` and lifted to its
        shape and input format (``tal.transfer.lift``) in place of the prediction at its own
        shape, which keeps what has no source in the proxy.

        Args:
            out: the flat buffer the tensors are written into (``TALHypernet.forward``; e.g. a
                blob's payload); default: one from the output pool.
        """
        spec = parse_arch(arch)
        embedding = self.task_embedding(task)
        output_dtype = parse_dtype(dtype)
        proxy = self.proxy(spec)
        if proxy is None:
            return self.hypernet(spec, embedding, format, output_dtype, out=out)
        skipped = lifted_matrices(proxy, spec)  # written whole by the lift
        outputs = self.hypernet(spec, embedding, format, output_dtype, out, skipped)
        proxy_state = self.hypernet.factored(proxy, embedding, "timm", every_matrix=True)
        lift_into(proxy, proxy_state, spec, outputs, export_plan(spec, format))
        return outputs

    @property
    def trained_range(self) -> TrainedRange | None:
        """The ViT shapes and input format of the library the manifest names (None: unknown,
        every spec is predicted as it is)."""
        return TrainedRange.of_manifest(self.manifest)

    def proxy(self, spec: ViTSpec | GPT2Spec) -> ViTSpec | None:
        """The in-range spec predicted and lifted for ``spec`` (``tal.transfer.lift``); None
        when ``spec`` is predicted as it is (in range, a GPT-2, or no known range)."""
        trained = self.trained_range
        if not isinstance(spec, ViTSpec) or trained is None or trained.contains(spec):
            return None
        return trained.proxy(spec)

    def save(
        self,
        name: str,
        version: str,
        root: Path | None = None,
        extra_manifest: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Writes this learngene as ``<root>/<name>/<version>/`` (atomic, hashed)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.hypernet.state_dict().items()}
        config = self.hypernet.config.to_json()
        files = {
            store.HYPERNET_FILE: safetensors.torch.save(state, metadata={"config": config}),
            store.TASKS_FILE: safetensors.torch.save(
                {k: v.detach().cpu().float().contiguous() for k, v in self.tasks.items()}
            ),
        }
        if self.ancestry is not None:
            files[store.ANCESTRY_FILE] = self.ancestry.to_bytes()
        if self.text_ancestry is not None:
            files[store.TEXT_ANCESTRY_FILE] = self.text_ancestry.to_bytes()
        manifest = {
            "checkpoint_format": CHECKPOINT_FORMAT,
            "name": name,
            "version": version,
            "config": json.loads(config),
            "tasks": sorted(self.tasks),
            "code_version": code_version(),
            "environment": describe_environment(),
            **(extra_manifest or {}),
        }
        return store.write_version(name, version, files, manifest, root, overwrite)

    @classmethod
    def load(
        cls,
        name: str = store.DEFAULT_NAME,
        version: str = store.LATEST,
        root: Path | None = None,
        device: str | torch.device | None = None,
    ) -> Learngene:
        """Loads and verifies a stored learngene (hash-checked, safetensors only)."""
        path = store.resolve(name, version, root)
        manifest = store.verify(path)
        config = HypernetConfig.from_dict(manifest["config"])
        hypernet = TALHypernet(config)
        state = safetensors.torch.load_file(path / store.HYPERNET_FILE)
        try:
            hypernet.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise store.StoreError(
                f"{path}: weights do not match the manifest config: {exc}"
            ) from exc
        tasks = safetensors.torch.load_file(path / store.TASKS_FILE)
        target = torch.device(device) if device else default_device()
        ancestry = None
        if store.ANCESTRY_FILE in manifest["files"]:
            ancestry = Ancestry.from_bytes((path / store.ANCESTRY_FILE).read_bytes(), target)
        text_ancestry = None
        if store.TEXT_ANCESTRY_FILE in manifest["files"]:
            text_blob = (path / store.TEXT_ANCESTRY_FILE).read_bytes()
            text_ancestry = TextAncestry.from_bytes(text_blob, target)
        return cls(
            hypernet.eval().to(target),
            {k: v.to(target) for k, v in tasks.items()},
            manifest["name"],
            manifest["version"],
            manifest,
            ancestry,
            text_ancestry,
        )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_default(root: Path | None = None, device: str | torch.device | None = None) -> Learngene:
    """The shipped default learngene, or a fresh untrained one when the store has none."""
    if store.list_versions(store.DEFAULT_NAME, root):
        return Learngene.load(store.DEFAULT_NAME, store.LATEST, root, device)
    learngene = Learngene.fresh()
    return Learngene(learngene.hypernet.to(device or default_device()))
