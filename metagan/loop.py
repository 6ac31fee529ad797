"""The episode loop: one meta-iteration at a time, evaluation, and exact save/restore.

It knows nothing of Ray or the CLI: both only drive `step()`, `evaluate()` and the state dict.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from .config import Config, ConfigError
from .data import Splits, load_splits
from .data.episodes import TaskSampler
from .meta import MetaLearner, Method
from .meta.base import Diverged as Diverged  # raised by a phase update; callers catch it from here
from .meta.base import make_optimizer, update_phase
from .methods import check_reads, learner_of, method_of
from .models import Conv4

SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


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
        field, ways = ("task.ways", cfg.task.ways) if split == "train" else (
            ("task.eval_ways", cfg.task.eval_ways) if cfg.task.eval_ways else ("task.ways", cfg.task.ways))
        if ways > images.num_classes:
            raise ConfigError(f"{field}: {ways}-way tasks need {ways} "
                              f"classes but meta-{split} has {images.num_classes}")
        fewest = int(images.class_counts().min())
        if per_class > fewest:
            raise ConfigError(f"task.shots + task.queries: {per_class} images per class needed, "
                              f"but a meta-{split} class has only {fewest}")


def build_model(cfg: Config, learner_cls: type[MetaLearner]) -> Conv4:
    """The conv4 backbone, its head sized for the learner (and the method's extra classes)."""
    head = learner_cls.head_size(cfg.task.ways)
    if head is not None:
        head += method_of(cfg).extra_classes
    return Conv4(1, cfg.model.hidden, cfg.model.depth, cfg.data.image_size, head,
                 cfg.model.downsample)


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval."""
    n = values.numel()
    std = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


class EpisodeLoop:
    """Meta-training of one configuration: `step()`, `evaluate()`, `state_dict()`."""

    def __init__(self, cfg: Config, splits: Splits | None = None,
                 device: torch.device | str | None = None, *, restoring: bool = False) -> None:
        """`restoring`: the loop only restores a trained checkpoint (to evaluate or sample), so
        keys its config set that the method does not read, ignored when it trained, are not
        refused again; every other loop refuses them (methods.check_reads)."""
        if not restoring:
            check_reads(cfg)
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else resolve_device(
            cfg.train.device)
        self.splits = splits if splits is not None else load_splits(cfg.data)
        check_task_fits(cfg, self.splits)
        method_cls, learner_cls = method_of(cfg), learner_of(cfg)
        # Initialise from the run's seed without touching torch's global RNG: the learner (when
        # the method needs one), then the method's own weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            self.learner: MetaLearner | None = None
            if learner_cls is not None:
                self.learner = learner_cls(build_model(cfg, learner_cls), cfg.meta)
            self.method: Method = method_cls.build(cfg, self.learner).to(self.device)
        self.phases = self.method.phases()
        self.optimizers = {p.name: make_optimizer(p, cfg.optim) for p in self.phases}
        t = cfg.task
        self.sampler = TaskSampler(self.splits.train, t.ways, t.shots, t.queries,
                                   cfg.train.seed, self.device, cfg.data.affine_augment)
        self.iteration = 0
        self._embedding: nn.Module | None = None  # generation metrics' embedding, made when needed

    def lr_factor(self) -> float:
        """The learning-rate multiplier at the current iteration (derived, so nothing to save)."""
        o = self.cfg.optim
        return 0.5 ** (self.iteration // o.lr_halve_every) if o.lr_halve_every else 1.0

    def step(self) -> dict[str, float]:
        """One meta-iteration: a meta-batch of tasks, each phase's update; returns metrics."""
        start = time.perf_counter()
        self.method.train()
        episode = self.sampler.sample(self.cfg.task.meta_batch)
        factor = self.lr_factor()
        metrics: dict[str, float] = {}
        for phase in self.phases:
            if not phase.runs_at(self.iteration):
                continue
            out = update_phase(phase, self.optimizers[phase.name], episode,
                               (phase.lr or self.cfg.optim.lr) * factor, self.cfg.optim.grad_clip,
                               self.iteration)
            prefix = "" if len(self.phases) == 1 else f"{phase.name}/"
            metrics.update({prefix + k: v for k, v in out.items()})
        self.iteration += 1
        elapsed = time.perf_counter() - start
        metrics.update(iteration=self.iteration, lr=self.cfg.optim.lr * factor,
                       tasks_per_s=self.cfg.task.meta_batch / elapsed)
        return metrics

    @torch.no_grad()
    def evaluate(self, split: str = "val", episodes: int = 600, ways: int | None = None,
                 shots: int | None = None, queries: int | None = None) -> dict[str, float]:
        """Mean query accuracy over `episodes` tasks of a split, with its 95% interval.

        The tasks depend only on the run's seed and the split, so every evaluation of a run
        sees the same tasks and the training task sequence is left untouched.
        """
        if self.method.generates:  # declared: evaluated by generation metrics
            return self._evaluate_generation(split, characters=min(episodes, 20))
        t = self.cfg.task
        ways = ways or t.eval_ways or t.ways
        shots, queries = shots or t.shots, queries or t.queries
        sampler = TaskSampler(self.splits.get(split), ways, shots, queries,
                              self.cfg.train.seed + SPLIT_SEED_OFFSET[split], self.device)
        rng = torch.Generator().manual_seed(self.cfg.train.seed + SPLIT_SEED_OFFSET[split] + 1)
        accs = []
        remaining = episodes
        while remaining > 0:
            n = min(remaining, t.meta_batch)
            with torch.enable_grad():  # MAML-style learners differentiate while adapting
                accs.append(self.method.task_accuracy(sampler.sample(n), rng).cpu())
            remaining -= n
        mean, ci = mean_ci95(torch.cat(accs))
        return {"accuracy": mean, "ci95": ci, "episodes": episodes}

    def _evaluate_generation(self, split: str, characters: int) -> dict[str, float]:
        """Adapt to k drawings of held-out characters, sample, score in the metric embedding."""
        # Here, not at the top: only generating methods need the metrics (and scipy).
        from .gan.evaluation import evaluate_generation, metric_embedding

        if self._embedding is None:  # trained (or read from its cache) once per loop
            self._embedding = metric_embedding(self.cfg, self.splits, self.device)
        rng = torch.Generator().manual_seed(self.cfg.train.seed + SPLIT_SEED_OFFSET[split] + 1)
        steps = self.cfg.gan.eval_adapt_steps
        return evaluate_generation(
            self.cfg, self.splits, lambda s, n: self.method.adapt_and_sample(s, n, steps, rng),
            split, characters=characters, seed=self.cfg.train.seed, device=self.device,
            embed=self._embedding)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly: weights, optimisers, RNG, counter."""
        return {
            "iteration": self.iteration,
            "method": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict()`."""
        self.iteration = int(state["iteration"])
        self.method.load_state_dict(state["method"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.sampler.load_state_dict(state["sampler"])
