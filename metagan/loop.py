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
from .data import ImageSet, Splits, load_splits
from .data.alphabets import alphabet_offset, alphabet_set, alphabets
from .data.episodes import TaskSampler
from .data.preprocess import jitter_padding
from .meta import MetaLearner, Method
from .meta.base import Diverged as Diverged  # raised by a phase update; callers catch it from here
from .meta.base import adaptation_steps, make_optimizer, update_phase
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
    return Conv4(cfg.data.channels, cfg.model.hidden, cfg.model.depth, cfg.data.image_size, head,
                 cfg.model.downsample)


def build_method(cfg: Config, device: torch.device | str = "cpu"
                 ) -> tuple[MetaLearner | None, Method]:
    """The run's learner (when its method needs one) and method, initialised from the run's
    seed without touching torch's global RNG; no data is read (what `metagan.api` loads a
    trained model into)."""
    method_cls, learner_cls = method_of(cfg), learner_of(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        learner: MetaLearner | None = None
        if learner_cls is not None:
            learner = learner_cls(build_model(cfg, learner_cls), cfg.meta)
        method: Method = method_cls.build(cfg, learner).to(device)
    return learner, method


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
        self.learner, self.method = build_method(cfg, self.device)
        self.phases = self.method.phases()
        self.optimizers = {p.name: make_optimizer(p, cfg.optim) for p in self.phases}
        t = cfg.task
        self.sampler = TaskSampler(self.splits.train, t.ways, t.shots, t.queries,
                                   cfg.train.seed, self.device, cfg.data.affine_augment,
                                   jitter_padding(cfg.data.source))
        self.iteration = 0
        # Each phase's own updates so far: its learning-rate schedule counts these, not loop
        # iterations (a meta-learner after GAN pre-training starts at its first update).
        self.updates = dict.fromkeys(self.optimizers, 0)
        self._embedding: nn.Module | None = None  # generation metrics' embedding, made when needed

    def lr_factor(self, phase: str) -> float:
        """The learning-rate multiplier of a phase after its own updates so far."""
        o = self.cfg.optim
        return 0.5 ** (self.updates[phase] // o.lr_halve_every) if o.lr_halve_every else 1.0

    def main_phase(self) -> str:
        """The phase whose rate is the run's `optim.lr` (the meta-learner's): reported as `lr`."""
        return next((p.name for p in self.phases if p.lr is None), self.phases[0].name)

    def step(self) -> dict[str, float]:
        """One meta-iteration: a meta-batch of tasks, each phase's update; returns metrics."""
        start = time.perf_counter()
        self.method.train()
        episode = self.sampler.sample(self.cfg.task.meta_batch)
        metrics: dict[str, float] = {}
        lr = self.cfg.optim.lr * self.lr_factor(self.main_phase())
        for phase in self.phases:
            if not phase.runs_at(self.iteration):
                continue
            out = update_phase(phase, self.optimizers[phase.name], episode,
                               (phase.lr or self.cfg.optim.lr) * self.lr_factor(phase.name),
                               self.cfg.optim.grad_clip, self.iteration)
            self.updates[phase.name] += 1
            prefix = "" if len(self.phases) == 1 else f"{phase.name}/"
            metrics.update({prefix + k: v for k, v in out.items()})
        self.iteration += 1
        elapsed = time.perf_counter() - start
        metrics.update(iteration=self.iteration, lr=lr, tasks_per_s=self.cfg.task.meta_batch / elapsed)
        return metrics

    @torch.no_grad()
    def evaluate(self, split: str = "val", episodes: int = 600, ways: int | None = None,
                 shots: int | None = None, queries: int | None = None,
                 group: str | None = None, adapt_steps: int | None = None) -> dict[str, float]:
        """Mean query accuracy over `episodes` tasks of a split, with its 95% interval.

        The tasks depend only on the run's seed and the split, so every evaluation of a run
        sees the same tasks and the training task sequence is left untouched. `group`: tasks of
        that alphabet's classes only (its rotations included when data.rotations), seeded also
        by the alphabet's name. `adapt_steps`: a generating method's adaptation steps per
        character (default gan.eval_adapt_steps), so the length can be selected on meta-val.
        """
        if adapt_steps is not None and not self.method.generates:
            raise ConfigError(f"adapt_steps: method {self.cfg.method!r} does not generate; "
                              "only a few-shot generator is adapted per character")
        if self.method.generates:  # declared: evaluated by generation metrics
            if group is not None:
                raise ConfigError(f"method {self.cfg.method!r} generates: it is scored on "
                                  "generation, not per-alphabet accuracy")
            return self._evaluate_generation(split, min(episodes, 20), adapt_steps)
        mean, ci = mean_ci95(self._split_task_accuracies(split, episodes, ways, shots, queries, group))
        return {"accuracy": mean, "ci95": ci, "episodes": episodes}

    @torch.no_grad()
    def task_accuracies(self, split: str = "val", episodes: int = 600, ways: int | None = None,
                        shots: int | None = None, queries: int | None = None) -> torch.Tensor:
        """Query accuracy [episodes] of each task `evaluate(split, episodes, ways, shots,
        queries)` scores, in order: runs of one seed and split given the same task shape see
        the same tasks, so their difference is paired."""
        self._require_classifier("per-task accuracy")
        return self._split_task_accuracies(split, episodes, ways, shots, queries)

    def _split_task_accuracies(self, split: str, episodes: int, ways: int | None,
                               shots: int | None, queries: int | None,
                               group: str | None = None) -> torch.Tensor:
        """Query accuracy [episodes] of a split's seeded evaluation tasks of this shape (the
        config's where None), of one alphabet's classes given `group`."""
        t = self.cfg.task
        images = self.splits.get(split)
        if group is not None:
            images = alphabet_set(images, group)
        seed = self._eval_seed(split, group)
        sampler = TaskSampler(images, ways or t.eval_ways or t.ways, shots or t.shots,
                              queries or t.queries, seed, self.device)
        return self._task_accuracies(sampler, episodes, seed)

    def _eval_seed(self, split: str, group: str | None = None) -> int:
        """The seed of a split's evaluation tasks (of one alphabet's, given `group`)."""
        seed = self.cfg.train.seed + SPLIT_SEED_OFFSET[split]
        return seed if group is None else seed + alphabet_offset(group)

    def _task_accuracies(self, sampler: TaskSampler, episodes: int, seed: int) -> torch.Tensor:
        """Query accuracy [episodes] of the sampler's next tasks, the method's own randomness
        seeded from `seed` + 1."""
        rng = torch.Generator().manual_seed(seed + 1)
        accs = []
        remaining = episodes
        while remaining > 0:
            n = min(remaining, self.cfg.task.meta_batch)
            with torch.enable_grad():  # MAML-style learners differentiate while adapting
                accs.append(self.method.task_accuracy(sampler.sample(n), rng).cpu())
            remaining -= n
        return torch.cat(accs)

    def _alphabet_sets(self, split: str, ways: int, per_class: int, rotated: bool
                       ) -> tuple[dict[str, ImageSet], dict[str, str]]:
        """The split's alphabets that can supply `ways`-way tasks of `per_class` images per
        class (their class sets), and why each of the others cannot."""
        images = self.splits.get(split)
        usable: dict[str, ImageSet] = {}
        skipped: dict[str, str] = {}
        what = "classes" if rotated else "unrotated characters"
        for name in alphabets(images):
            subset = alphabet_set(images, name, rotated)
            fewest = int(subset.class_counts().min()) if subset.num_classes else 0
            if subset.num_classes < ways:
                skipped[name] = f"{subset.num_classes} {what}, fewer than {ways}"
            elif fewest < per_class:
                skipped[name] = f"a class has {fewest} images, fewer than {per_class}"
            else:
                usable[name] = subset
        return usable, skipped

    def _require_classifier(self, what: str) -> None:
        if self.method.generates or not self.method.classifies:
            raise ConfigError(f"{what}: method {self.cfg.method!r} generates; it is scored on "
                              "generation, not on classification accuracy")

    @torch.no_grad()
    def evaluate_per_group(self, split: str = "val", episodes: int = 100) -> dict[str, Any]:
        """`evaluate(split, episodes, group=A)` for every alphabet A of the split that has
        enough classes for the evaluation tasks (`episodes` per alphabet).

        Returns {"episodes_per_alphabet", "ways", "alphabets": {A: {"accuracy", "ci95",
        "episodes"}}, "skipped": {A: why}}.
        """
        self._require_classifier("per-alphabet accuracy")
        t = self.cfg.task
        ways = t.eval_ways or t.ways
        usable, skipped = self._alphabet_sets(split, ways, t.shots + t.queries, rotated=True)
        return {"episodes_per_alphabet": episodes, "ways": ways,
                "alphabets": {name: self.evaluate(split, episodes, group=name) for name in usable},
                "skipped": skipped}

    def within_alphabet_tasks(self, split: str, alphabet: str, ways: int = 20
                              ) -> tuple[ImageSet, TaskSampler]:
        """One alphabet's unrotated characters and the seeded sampler of the `ways`-way
        one-shot one-query tasks `evaluate_within_alphabet` scores on them (an episode's
        `classes` index the returned set's classes)."""
        images = alphabet_set(self.splits.get(split), alphabet,
                              rotated=not self.cfg.data.rotations)
        return images, TaskSampler(images, ways, 1, 1, self._eval_seed(split, alphabet),
                                   self.device)

    @torch.no_grad()
    def evaluate_within_alphabet(self, split: str = "test", episodes: int = 100,
                                 ways: int = 20) -> dict[str, Any]:
        """Within-alphabet one-shot classification (Lake et al. 2015, approximated): each task
        takes `ways` unrotated characters of ONE alphabet, one drawing of each as its support
        and another drawing of each as its query; `episodes` tasks per alphabet.

        Alphabets with fewer than `ways` unrotated characters are skipped and named. Returns the
        overall accuracy, error (1 - accuracy), ci95 and episodes over every task, and
        {"alphabets": {A: {"accuracy", "ci95", "error", "episodes"}}, "skipped": {A: why}}.
        """
        self._require_classifier("within-alphabet evaluation")
        if ways < 2:
            raise ConfigError(f"within-alphabet evaluation: a task needs at least 2 classes, "
                              f"got {ways}")
        if episodes <= 0:
            raise ConfigError(f"within-alphabet evaluation: episodes must be positive, "
                              f"got {episodes}")
        trained = self.cfg.task.ways
        if (self.learner is not None and type(self.learner).head_size(ways) is not None
                and ways != trained):
            raise ConfigError(f"{self.cfg.meta.algorithm} has a {trained}-way classifier head: "
                              f"--within-alphabet needs {ways}-way tasks; train with "
                              f"task.ways: {ways}")
        usable, skipped = self._alphabet_sets(split, ways, 2, rotated=not self.cfg.data.rotations)
        if not usable:
            why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
            raise ConfigError(f"within-alphabet evaluation: no alphabet of meta-{split} can "
                              f"supply {ways}-way tasks ({why})")
        per: dict[str, dict[str, float]] = {}
        every = []
        for name in usable:
            _, sampler = self.within_alphabet_tasks(split, name, ways)
            accs = self._task_accuracies(sampler, episodes, self._eval_seed(split, name))
            mean, ci = mean_ci95(accs)
            per[name] = {"accuracy": mean, "error": 1 - mean, "ci95": ci, "episodes": episodes}
            every.append(accs)
        mean, ci = mean_ci95(torch.cat(every))
        return {"accuracy": mean, "error": 1 - mean, "ci95": ci,
                "episodes": episodes * len(per), "episodes_per_alphabet": episodes,
                "ways": ways, "shots": 1, "queries": 1, "alphabets": per, "skipped": skipped}

    def _evaluate_generation(self, split: str, characters: int,
                             steps: int | None = None) -> dict[str, float]:
        """Adapt to k drawings of held-out characters, sample, score in the metric embedding."""
        # Here, not at the top: only generating methods need the metrics (and scipy).
        from .gan.evaluation import evaluate_generation, metric_embedding

        if self._embedding is None:  # trained (or read from its cache) once per loop
            self._embedding = metric_embedding(self.cfg, self.splits, self.device)
        rng = torch.Generator().manual_seed(self.cfg.train.seed + SPLIT_SEED_OFFSET[split] + 1)
        steps = adaptation_steps(self.cfg, self.method, steps)
        return evaluate_generation(
            self.cfg, self.splits, lambda s, n: self.method.adapt_and_sample(s, n, steps, rng),
            split, characters=characters, seed=self.cfg.train.seed, device=self.device,
            embed=self._embedding)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly: weights, optimisers, RNG, counter."""
        return {
            "iteration": self.iteration,
            "updates": dict(self.updates),
            "method": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict()`."""
        self.iteration = int(state["iteration"])
        if "updates" in state:
            self.updates = {name: int(n) for name, n in state["updates"].items()}
        else:  # a checkpoint from before per-phase counts: the same numbers, derived
            self.updates = {p.name: sum(p.runs_at(i) for i in range(self.iteration))
                            for p in self.phases}
        self.method.load_state_dict(state["method"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.sampler.load_state_dict(state["sampler"])
