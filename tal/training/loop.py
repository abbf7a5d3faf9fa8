"""The training loop shared by every stage: schedule, guard, all-reduce, checkpoints, resume,
progress bar and metric log. A stage subclasses :class:`TrainLoop` and implements
``train_step`` (forward + backward on this rank's share) and ``evaluate``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tal.training.config import GuardConfig, OptimConfig
from tal.training.distributed import DistInfo, all_sum, average_gradients, barrier
from tal.training.schedule import LossGuard, learning_rate
from tal.training.state import load_state, save_state

STATE_FILE = "last.safetensors"
METRICS_FILE = "metrics.jsonl"
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"  # the setting NVIDIA documents for reproducibility


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """PyTorch's deterministic kernels while training, so that a resumed run repeats the
    uninterrupted one bit for bit: the CPU's threaded accumulation of indexed rows (the
    backward of ``weight[ids]``, used by the text steps) otherwise adds in a different order
    in each process. Kernels without a deterministic version only warn; cuBLAS gets the
    workspace setting its deterministic mode needs unless one is set. The previous setting is
    restored afterwards."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)


class TrainLoop:
    """Runs ``total_steps`` steps with resume from ``<run_dir>/<name>/last.safetensors``."""

    name = "stage"

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        optim: OptimConfig,
        guard: GuardConfig,
        checkpoint_every: int,
        eval_every: int,
        dist: DistInfo,
    ) -> None:
        self.dir = Path(run_dir) / self.name
        self.total_steps = total_steps
        self.optim_config = optim
        self.guard = LossGuard(guard)
        self.checkpoint_every, self.eval_every = checkpoint_every, eval_every
        self.dist = dist
        self.wall_seconds = 0.0
        self.last_eval: dict[str, float] = {}

    # Implemented by stages -------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def train_step(self, step: int) -> float:
        """Forward + backward of this rank's share; returns its loss / world size."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        return {}

    def loss_stream(self, step: int) -> str:
        """The kind of ``step`` whose running loss the guard compares it with ("" by default;
        a stage that mixes kinds of steps names them)."""
        return ""

    # ------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    def _parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules().values() for p in m.parameters() if p.requires_grad]

    def _save(self, step: int) -> None:
        if self.dist.is_main:
            extra = {
                "guard": self.guard.to_dict(),
                "wall_seconds": self.wall_seconds,
                "last_eval": self.last_eval,
            }
            save_state(self.state_path, self.modules(), self.optimizer, step, extra)
        barrier(self.dist)

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            with (self.dir / METRICS_FILE).open("a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    def resume(self) -> int:
        """Loads the last state if there is one; returns the last completed step."""
        if not self.state_path.exists():
            return 0
        step, extra = load_state(self.state_path, self.modules(), self.optimizer)
        self.guard.load(extra.get("guard", {}))
        self.wall_seconds = extra.get("wall_seconds", 0.0)
        self.last_eval = extra.get("last_eval", {})
        return step

    def run(self) -> dict[str, float]:
        with deterministic_kernels():
            return self._run()

    def _run(self) -> dict[str, float]:
        self.optimizer: torch.optim.Optimizer
        params = self._parameters()
        start = self.resume()
        progress = tqdm(
            total=self.total_steps,
            initial=start,
            desc=self.name,
            disable=not self.dist.is_main,
            dynamic_ncols=True,
        )
        for step in range(start + 1, self.total_steps + 1):
            began = time.perf_counter()
            lr = learning_rate(step, self.total_steps, self.optim_config, self.guard.lr_scale)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss = all_sum(self.train_step(step), self.dist)
            if self.guard.check(loss, step, self.loss_stream(step)):
                average_gradients(params, self.dist)
                torch.nn.utils.clip_grad_norm_(params, self.optim_config.grad_clip)
                self.optimizer.step()
            elif self.guard.needs_rollback:
                progress.write(f"{self.name}: bad loss {loss} at step {step}; rolling back")
                if self.state_path.exists():
                    load_state(self.state_path, self.modules(), self.optimizer)
                self.guard.rolled_back()
            self.wall_seconds += time.perf_counter() - began
            record: dict[str, Any] = {"step": step, "loss": loss, "lr": lr}
            if self.dist.is_main and (step % self.eval_every == 0 or step == self.total_steps):
                self.last_eval = self.evaluate()
                record.update(self.last_eval)
            self._log(record)
            if step % self.checkpoint_every == 0 or step == self.total_steps:
                self._save(step)
            progress.set_postfix(
                loss=f"{loss:.3f}",
                lr=f"{lr:.1e}",
                steps_per_s=f"{1 / max(1e-9, time.perf_counter() - began):.2f}",
            )
            progress.update(1)
        progress.close()
        return {**self.last_eval, "wall_seconds": self.wall_seconds}
