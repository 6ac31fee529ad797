"""The episode loop: one meta-iteration at a time, evaluation, and exact save/restore.

It knows nothing of Ray or the CLI: both only drive `step()`, `evaluate()` and the state dict.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from .config import Config, ConfigError
from .data import Splits, load_splits
from .data.episodes import TaskSampler
from .meta import MetaLearner
from .models import Conv4

SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


class Diverged(RuntimeError):
    """A non-finite loss: the run stops with a recorded reason instead of crashing."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available")
    return device


def check_task_fits(cfg: Config, splits: Splits) -> None:
    """ConfigError naming the field when a split cannot supply the configured tasks."""
    per_class = cfg.task.shots + cfg.task.queries
    for split in ("train", "val", "test"):
        images = splits.get(split)
        if cfg.task.ways > images.num_classes:
            raise ConfigError(f"task.ways: {cfg.task.ways}-way tasks need {cfg.task.ways} "
                              f"classes but meta-{split} has {images.num_classes}")
        fewest = int(images.class_counts().min())
        if per_class > fewest:
            raise ConfigError(f"task.shots + task.queries: {per_class} images per class needed, "
                              f"but a meta-{split} class has only {fewest}")


def build_model(cfg: Config, learner_cls: type[MetaLearner]) -> Conv4:
    """The conv4 backbone, its head sized for the learner."""
    return Conv4(1, cfg.model.hidden, cfg.model.depth, cfg.data.image_size,
                 learner_cls.head_size(cfg.task.ways), cfg.model.downsample)


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval."""
    n = values.numel()
    std = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


class EpisodeLoop:
    """Meta-training of one configuration: `step()`, `evaluate()`, `state_dict()`."""

    def __init__(self, cfg: Config, splits: Splits | None = None,
                 device: torch.device | str | None = None) -> None:
        from .meta import REGISTRY

        self.cfg = cfg
        self.device = torch.device(device) if device is not None else resolve_device(
            cfg.train.device)
        self.splits = splits if splits is not None else load_splits(cfg.data)
        check_task_fits(cfg, self.splits)
        learner_cls = REGISTRY[cfg.meta.algorithm]
        # Initialise from the run's seed without touching torch's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            self.learner = learner_cls(build_model(cfg, learner_cls), cfg.meta).to(self.device)
        self.phases = self.learner.phases()
        self.optimizers = {p.name: self._optimizer(p.params) for p in self.phases}
        t = cfg.task
        self.sampler = TaskSampler(self.splits.train, t.ways, t.shots, t.queries,
                                   cfg.train.seed, self.device)
        self.iteration = 0

    def _optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        o = self.cfg.optim
        if o.name == "adam":
            return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay)

    def learning_rate(self) -> float:
        """The outer learning rate at the current iteration (derived, so nothing to save)."""
        o = self.cfg.optim
        halvings = self.iteration // o.lr_halve_every if o.lr_halve_every else 0
        return o.lr * 0.5**halvings

    def step(self) -> dict[str, float]:
        """One meta-iteration: a meta-batch of tasks, each phase's update; returns metrics."""
        start = time.perf_counter()
        self.learner.train()
        episode = self.sampler.sample(self.cfg.task.meta_batch)
        lr = self.learning_rate()
        metrics: dict[str, float] = {}
        for phase in self.phases:
            opt = self.optimizers[phase.name]
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            out = phase.loss(episode)
            if not torch.isfinite(out.objective):
                raise Diverged(f"non-finite {phase.name} objective at iteration "
                               f"{self.iteration + 1}")
            out.objective.backward()
            opt.step()
            prefix = "" if len(self.phases) == 1 else f"{phase.name}/"
            metrics.update({prefix + k: float(v) for k, v in out.metrics.items()})
        self.iteration += 1
        elapsed = time.perf_counter() - start
        metrics.update(iteration=self.iteration, lr=lr,
                       tasks_per_s=self.cfg.task.meta_batch / elapsed)
        return metrics

    @torch.no_grad()
    def evaluate(self, split: str = "val", episodes: int = 600, ways: int | None = None,
                 shots: int | None = None, queries: int | None = None) -> dict[str, float]:
        """Mean query accuracy over `episodes` tasks of a split, with its 95% interval.

        The tasks depend only on the run's seed and the split, so every evaluation of a run
        sees the same tasks and the training task sequence is left untouched.
        """
        t = self.cfg.task
        ways, shots, queries = ways or t.ways, shots or t.shots, queries or t.queries
        sampler = TaskSampler(self.splits.get(split), ways, shots, queries,
                              self.cfg.train.seed + SPLIT_SEED_OFFSET[split], self.device)
        accs = []
        remaining = episodes
        while remaining > 0:
            n = min(remaining, t.meta_batch)
            with torch.enable_grad():  # MAML-style learners differentiate while adapting
                accs.append(self.learner.task_accuracy(sampler.sample(n)).cpu())
            remaining -= n
        mean, ci = mean_ci95(torch.cat(accs))
        return {"accuracy": mean, "ci95": ci, "episodes": episodes}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly: weights, optimisers, RNG, counter."""
        return {
            "iteration": self.iteration,
            "learner": self.learner.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict()`."""
        self.iteration = int(state["iteration"])
        self.learner.load_state_dict(state["learner"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.sampler.load_state_dict(state["sampler"])
