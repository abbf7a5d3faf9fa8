"""``tal train ancestry``: the ancestry ViT on the union of the training tasks, then one task
embedding per task (the held-out task's from a few hundred training images only)."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from tal.arch.specs import ViTSpec
from tal.blobs.io import write_atomic
from tal.checkpoints import store
from tal.checkpoints.ancestry import Ancestry
from tal.tasks import SUITE_IMAGE_SIZE, SUITE_IN_CHANS, data_fingerprint, load_task
from tal.training.config import AncestryTrainConfig, GuardConfig
from tal.training.data import SuiteData, step_generator
from tal.training.distributed import DistInfo
from tal.training.loop import TrainLoop

ARTIFACT_DIR = "ancestry"
SUMMARY_FILE = "summary.json"
EVAL_BATCH = 512


def task_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


class AncestryTrainer(TrainLoop):
    name = ARTIFACT_DIR

    def __init__(
        self, config: AncestryTrainConfig, dist: DistInfo, data_limit: int | None = None
    ) -> None:
        super().__init__(
            config.run_dir,
            config.steps,
            config.optim,
            GuardConfig(),
            config.checkpoint_every,
            config.eval_every,
            dist,
        )
        self.config = config
        self.data_limit = data_limit
        self.suite = SuiteData.load("train", config.data_root, limit=data_limit)
        self.val = SuiteData.load("val", config.data_root, limit=data_limit)
        spec = ViTSpec(
            depth=config.depth,
            embed_dim=config.embed_dim,
            num_heads=config.num_heads,
            img_size=SUITE_IMAGE_SIZE,
            patch_size=config.patch_size,
            in_chans=SUITE_IN_CHANS,
            num_classes=self.suite.num_classes,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.ancestry = Ancestry.create(spec, self.suite.offsets)
        self.model = self.ancestry.model.to(dist.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"ancestry": self.model}

    def train_step(self, step: int) -> float:
        self.model.train()
        data_step = 1 if self.config.overfit_batch else step
        generator = step_generator(self.config.seed, data_step, self.dist.rank)
        share = max(1, self.config.batch_size // self.dist.world_size)
        images, labels = self.suite.union_batch(share, self.config.task_temperature, generator)
        logits = self.model(images.to(self.dist.device))
        loss = F.cross_entropy(
            logits, labels.to(self.dist.device), label_smoothing=self.config.label_smoothing
        )
        (loss / self.dist.world_size).backward()
        return loss.item() / self.dist.world_size

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation accuracy per task, logits restricted to the task's own classes."""
        self.model.eval()
        results = {}
        for name, data in self.val.tasks.items():
            start, stop = self.suite.offsets[name]
            logits = torch.cat(
                [
                    self.model(batch.to(self.dist.device))[:, start:stop].cpu()
                    for batch in data.images.split(EVAL_BATCH)
                ]
            )
            results[f"val_acc/{name}"] = task_accuracy(logits, data.labels)
        results["val_acc_mean"] = sum(results.values()) / len(results)
        return results

    def task_embeddings(self) -> dict[str, torch.Tensor]:
        """Mean CLS feature per task (all tasks, the held-out one included), from at most
        ``task_examples`` training images each."""
        embeddings = {}
        for info_name in [*list(self.suite.tasks), self._held_out_name()]:
            data = load_task(
                info_name, "train", root=self.config.data_root, limit=self.config.task_examples
            )
            embeddings[info_name] = (
                self.ancestry.features(data.images.to(self.dist.device)).mean(0).cpu()
            )
        return embeddings

    @staticmethod
    def _held_out_name() -> str:
        from tal.tasks import held_out_task

        return held_out_task().name

    def run_and_export(self) -> dict:
        metrics = self.run()
        if not self.dist.is_main:
            return metrics
        embeddings = self.task_embeddings()
        write_atomic(self.dir / "ancestry.safetensors", self.ancestry.to_bytes())
        write_atomic(self.dir / "tasks.safetensors", safetensors.torch.save(embeddings))
        summary = {
            "metrics": metrics,
            "spec": json.loads(self.ancestry.spec.canonical_json()),
            "task_offsets": self.suite.offsets,
            "num_classes": {name: data.num_classes for name, data in self.suite.tasks.items()},
            "data_fingerprints": {
                name: data_fingerprint(name, self.config.data_root) for name in embeddings
            },
            "config": json.loads(self.config.model_dump_json()),
        }
        write_atomic(self.dir / SUMMARY_FILE, json.dumps(summary, indent=2).encode())
        return metrics


def load_ancestry_artifacts(
    run_dir: Path, device: torch.device | str = "cpu"
) -> tuple[Ancestry, dict[str, torch.Tensor], dict]:
    """The trained ancestry, task embeddings and summary written by ``tal train ancestry``."""
    folder = Path(run_dir) / ARTIFACT_DIR
    missing = [
        f
        for f in ("ancestry.safetensors", "tasks.safetensors", SUMMARY_FILE)
        if not (folder / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing}: run `tal train ancestry --run-dir {run_dir}` first"
        )
    ancestry = Ancestry.from_bytes((folder / "ancestry.safetensors").read_bytes(), device)
    embeddings = safetensors.torch.load_file(folder / "tasks.safetensors")
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    return ancestry, embeddings, summary


def import_ancestry_artifacts(checkpoint: Path, run_dir: Path) -> dict:
    """Copies the ancestry model and task embeddings of a model-store version (its hashes
    verified first) into ``run_dir`` as ``tal train ancestry`` would have written them, so the
    hypernetwork stages can be retrained on an existing ancestry. Returns its ancestry metrics
    as recorded in the version's manifest."""
    manifest = store.verify(checkpoint)
    if store.ANCESTRY_FILE not in manifest["files"]:
        raise store.StoreError(
            f"{checkpoint} has no {store.ANCESTRY_FILE}; train one with `tal train ancestry`"
        )
    folder = Path(run_dir) / ARTIFACT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {
        name: (checkpoint / name).read_bytes() for name in (store.ANCESTRY_FILE, store.TASKS_FILE)
    }
    for filename, blob in blobs.items():
        write_atomic(folder / filename, blob)
    ancestry = Ancestry.from_bytes(blobs[store.ANCESTRY_FILE])
    summary = {
        "metrics": manifest["ancestry_metrics"],
        "spec": json.loads(ancestry.spec.canonical_json()),
        "num_classes": manifest["task_classes"],
        "data_fingerprints": manifest["data_fingerprints"],
        "imported_from": f"{manifest['name']}:{manifest['version']}",
    }
    write_atomic(folder / SUMMARY_FILE, json.dumps(summary, indent=2).encode())
    return manifest["ancestry_metrics"]
