"""Learning-rate schedule and the NaN / explosion guard."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tal.training.config import GuardConfig, OptimConfig

GUARD_MEAN_DECAY = 0.9


def learning_rate(step: int, total: int, config: OptimConfig, scale: float = 1.0) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` (1-based step)."""
    if config.warmup_steps and step <= config.warmup_steps:
        return scale * config.lr * step / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return scale * config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


class TrainingDiverged(RuntimeError):
    """The guard rolled back ``max_rollbacks`` times and the loss is still bad."""


@dataclass
class LossGuard:
    """Flags a loss that is non-finite or ``explode_factor`` x above its running mean.

    Steps of different kinds (``stream``: image and text steps of one stage) keep separate
    running means, since their losses have different scales.
    """

    config: GuardConfig
    running_mean: float | None = None  # of the default stream ""
    bad_steps: int = 0
    rollbacks: int = 0
    lr_scale: float = 1.0
    history: list[int] = field(default_factory=list)  # steps that were skipped
    stream_means: dict[str, float] = field(default_factory=dict)  # of the other streams

    def check(self, loss: float, step: int, stream: str = "") -> bool:
        """True if the step may be applied."""
        mean = self.running_mean if stream == "" else self.stream_means.get(stream)
        bad = not math.isfinite(loss) or (
            mean is not None and loss > self.config.explode_factor * mean
        )
        if bad:
            self.bad_steps += 1
            self.history.append(step)
            return False
        self.bad_steps = 0
        mean = loss if mean is None else GUARD_MEAN_DECAY * mean + (1 - GUARD_MEAN_DECAY) * loss
        if stream == "":
            self.running_mean = mean
        else:
            self.stream_means[stream] = mean
        return True

    @property
    def needs_rollback(self) -> bool:
        return self.bad_steps >= self.config.max_bad_steps

    def rolled_back(self) -> None:
        self.rollbacks += 1
        self.bad_steps = 0
        self.lr_scale *= self.config.rollback_lr_factor
        if self.rollbacks > self.config.max_rollbacks:
            raise TrainingDiverged(
                f"loss stayed non-finite or exploding after {self.config.max_rollbacks} "
                f"rollbacks (skipped steps {self.history[-10:]}); lower the learning rate"
            )

    def to_dict(self) -> dict:
        return {
            "running_mean": self.running_mean,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "history": self.history[-100:],
            "stream_means": dict(self.stream_means),
        }

    def load(self, data: dict) -> None:
        self.running_mean = data.get("running_mean")
        self.rollbacks = data.get("rollbacks", 0)
        self.lr_scale = data.get("lr_scale", 1.0)
        self.history = list(data.get("history", []))
        self.stream_means = dict(data.get("stream_means", {}))
