"""``tal train ancestry --modality text``: the text ancestry GPT-2 on the training text tasks,
then one task embedding per text task (the held-out one's from a few hundred training
examples only).

Each step takes a mixed-task batch and minimises next-token cross-entropy on a random subset
of its real positions (``tal.training.text_data.sample_lm_positions``) plus the union
classifier's cross-entropy on each row's last real token.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from tal.arch.specs import GPT2Spec
from tal.blobs.io import write_atomic
from tal.checkpoints import store
from tal.checkpoints.text_ancestry import TextAncestry
from tal.tasks import TextTaskData, data_fingerprint, held_out_task, load_task
from tal.tasks.text import GPT2_VOCAB_SIZE, TEXT_MAX_TOKENS
from tal.training.ancestry_trainer import task_accuracy
from tal.training.config import GuardConfig, TextAncestryTrainConfig
from tal.training.data import step_generator
from tal.training.distributed import DistInfo
from tal.training.loop import TrainLoop
from tal.training.text_data import TEXT, TextSuiteData, cut_rows, sample_lm_positions

TEXT_ARTIFACT_DIR = "text_ancestry"
TEXT_ANCESTRY_FILE = store.TEXT_ANCESTRY_FILE
TEXT_TASKS_FILE = "tasks.safetensors"
SUMMARY_FILE = "summary.json"
EVAL_BATCH = 64
EVAL_LM_POSITIONS = 4096  # next-token targets of the validation language-model loss, per task
EVAL_STREAM = 99


class TextAncestryTrainer(TrainLoop):
    name = TEXT_ARTIFACT_DIR

    def __init__(
        self, config: TextAncestryTrainConfig, dist: DistInfo, data_limit: int | None = None
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
        self.suite = TextSuiteData.load("train", limit=data_limit)
        self.val = TextSuiteData.load("val", limit=data_limit)
        spec = GPT2Spec(
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            n_head=config.n_head,
            vocab_size=GPT2_VOCAB_SIZE,
            n_positions=TEXT_MAX_TOKENS,
            num_classes=self.suite.num_classes,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.ancestry = TextAncestry.create(spec, self.suite.offsets)
        self.model = self.ancestry.model.to(dist.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"text_ancestry": self.model}

    def train_step(self, step: int) -> float:
        self.model.eval()  # no dropout: the hypernetwork's GPT-2s run without it too
        data_step = 1 if self.config.overfit_batch else step
        generator = step_generator(self.config.seed, data_step, self.dist.rank)
        share = max(1, self.config.batch_size // self.dist.world_size)
        batch = self.suite.union_batch(
            share, self.config.task_temperature, self.config.max_tokens, generator
        )
        rows, positions = sample_lm_positions(batch.lengths, self.config.lm_positions, generator)
        batch = batch.to(self.dist.device)
        hidden = self.ancestry.hidden_states(batch.input_ids)
        loss = F.cross_entropy(
            self.ancestry.class_logits(hidden, batch.lengths),
            batch.labels,
            label_smoothing=self.config.label_smoothing,
        )
        if len(rows):
            rows, positions = rows.to(self.dist.device), positions.to(self.dist.device)
            logits = self.ancestry.lm_logits(hidden[rows, positions])
            next_tokens = batch.input_ids[rows, positions + 1]
            loss = loss + self.config.lm_weight * F.cross_entropy(logits, next_tokens)
        (loss / self.dist.world_size).backward()
        return loss.item() / self.dist.world_size

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Per task: validation accuracy (union logits restricted to the task's classes) and the
        language-model loss in nats per token on a fixed sample of its next-token targets."""
        self.model.eval()
        results: dict[str, float] = {}
        for name, data in self.val.tasks.items():
            start, stop = self.suite.offsets[name]
            logits = []
            for index in torch.arange(len(data)).split(EVAL_BATCH):
                batch = cut_rows(data, index, self.config.max_tokens).to(self.dist.device)
                hidden = self.ancestry.hidden_states(batch.input_ids)
                logits.append(self.ancestry.class_logits(hidden, batch.lengths)[:, start:stop])
            results[f"val_acc/{name}"] = task_accuracy(torch.cat(logits).cpu(), data.labels)
            results[f"val_lm/{name}"] = self.lm_loss(data)
        accuracies = [v for k, v in results.items() if k.startswith("val_acc/")]
        lm = [v for k, v in results.items() if k.startswith("val_lm/")]
        results["val_acc_mean"] = sum(accuracies) / len(accuracies)
        results["val_lm_mean"] = sum(lm) / len(lm)
        return results

    def lm_loss(self, data: TextTaskData) -> float:
        """Nats per token on ``EVAL_LM_POSITIONS`` next-token targets drawn with a fixed seed."""
        generator = step_generator(self.config.seed, 0, EVAL_STREAM)
        lengths = data.lengths.clamp_max(self.config.max_tokens)
        rows, positions = sample_lm_positions(lengths, EVAL_LM_POSITIONS, generator)
        total = 0.0
        for chunk in torch.unique(rows).split(EVAL_BATCH):  # sorted row indices
            batch = cut_rows(data, chunk, self.config.max_tokens).to(self.dist.device)
            hidden = self.ancestry.hidden_states(batch.input_ids)
            inside = torch.isin(rows, chunk)
            local = torch.searchsorted(chunk, rows[inside]).to(self.dist.device)
            where = positions[inside].to(self.dist.device)
            logits = self.ancestry.lm_logits(hidden[local, where])
            targets = batch.input_ids[local, where + 1]
            total += float(F.cross_entropy(logits, targets, reduction="sum"))
        return total / max(1, len(rows))

    def task_embeddings(self) -> dict[str, torch.Tensor]:
        """Mean feature ``(width,)`` per text task (the held-out one included), from at most
        ``task_examples`` training examples each (the hypernetwork pads them to its
        ``task_dim``)."""
        names = [*self.suite.tasks, held_out_task(TEXT).name]
        embeddings = {}
        for name in names:
            data = load_task(name, "train", limit=self.config.task_examples)
            embeddings[name] = self.ancestry.embed_task(
                data.input_ids, data.lengths, self.ancestry.width
            )
        return embeddings

    def run_and_export(self) -> dict:
        metrics = self.run()
        if not self.dist.is_main:
            return metrics
        self.ancestry.freeze(self.config.token_basis_size)
        metrics = {**metrics, **self.evaluate()}  # of the stored (float16-rounded) weights
        embeddings = self.task_embeddings()
        write_atomic(self.dir / TEXT_ANCESTRY_FILE, self.ancestry.to_bytes())
        write_atomic(self.dir / TEXT_TASKS_FILE, safetensors.torch.save(embeddings))
        summary = {
            "metrics": metrics,
            "spec": json.loads(self.ancestry.spec.canonical_json()),
            "task_offsets": self.suite.offsets,
            "num_classes": {name: data.num_classes for name, data in self.suite.tasks.items()},
            "data_fingerprints": {name: data_fingerprint(name) for name in embeddings},
            "config": json.loads(self.config.model_dump_json()),
        }
        write_atomic(self.dir / SUMMARY_FILE, json.dumps(summary, indent=2).encode())
        return metrics


def load_text_ancestry_artifacts(
    run_dir: Path, device: torch.device | str = "cpu"
) -> tuple[TextAncestry, dict[str, torch.Tensor], dict]:
    """The text ancestry, text task embeddings and summary written by ``tal train ancestry
    --modality text``."""
    folder = Path(run_dir) / TEXT_ARTIFACT_DIR
    missing = [
        f for f in (TEXT_ANCESTRY_FILE, TEXT_TASKS_FILE, SUMMARY_FILE) if not (folder / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing}: run `tal train ancestry --modality text --run-dir "
            f"{run_dir}` first (or train without GPT-2: text_library null)"
        )
    ancestry = TextAncestry.from_bytes((folder / TEXT_ANCESTRY_FILE).read_bytes(), device)
    embeddings = safetensors.torch.load_file(folder / TEXT_TASKS_FILE)
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    return ancestry, embeddings, summary


def has_text_ancestry(checkpoint: Path) -> bool:
    """Whether a model-store version carries a text ancestry."""
    return store.TEXT_ANCESTRY_FILE in store.verify(checkpoint)["files"]


def import_text_ancestry_artifacts(checkpoint: Path, run_dir: Path) -> dict:
    """Copies a model-store version's text ancestry and its text tasks' embeddings (hashes
    verified first) into ``run_dir`` as ``tal train ancestry --modality text`` would have
    written them; returns its text ancestry metrics as the version's manifest records them."""
    manifest = store.verify(checkpoint)
    if store.TEXT_ANCESTRY_FILE not in manifest["files"]:
        raise store.StoreError(
            f"{checkpoint} has no {store.TEXT_ANCESTRY_FILE}; train one with "
            "`tal train ancestry --modality text`"
        )
    blob = (checkpoint / store.TEXT_ANCESTRY_FILE).read_bytes()
    ancestry = TextAncestry.from_bytes(blob)
    tasks = safetensors.torch.load_file(checkpoint / store.TASKS_FILE)
    names = [*manifest["text_task_classes"], *manifest["text_held_out_task"]]
    embeddings = {name: tasks[name][: ancestry.width].contiguous() for name in names}
    folder = Path(run_dir) / TEXT_ARTIFACT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / TEXT_ANCESTRY_FILE, blob)
    write_atomic(folder / TEXT_TASKS_FILE, safetensors.torch.save(embeddings))
    summary = {
        "metrics": manifest["text_ancestry_metrics"],
        "spec": json.loads(ancestry.spec.canonical_json()),
        "task_offsets": ancestry.task_offsets,
        "num_classes": manifest["text_task_classes"],
        "data_fingerprints": manifest["text_data_fingerprints"],
        "imported_from": f"{manifest['name']}:{manifest['version']}",
    }
    write_atomic(folder / SUMMARY_FILE, json.dumps(summary, indent=2).encode())
    return manifest["text_ancestry_metrics"]
