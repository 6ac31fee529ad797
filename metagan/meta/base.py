"""The meta-learner interface, the phases the episode loop runs and how one updates, a registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..config import Config, ConfigError, MetaConfig, OptimConfig, register_method_name
from ..data.episodes import Episode
from ..models import INSTANCE, Statistics, context_statistics

# model.batch_norm: where a learner's batch-norm layers take their statistics (MetaLearner).
BatchNorm = Literal["support", "transductive", "instance"]


@dataclass
class PhaseOutput:
    """What one phase hands back: the scalar to differentiate and metrics to log."""

    objective: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Phase:
    """One optimiser update per meta-iteration: `loss(episode)` -> backward -> step on `params`.

    lr / betas override the run's optimiser settings for this phase (GAN phases use their own);
    `active(iteration)` says whether the phase runs at a (0-based) iteration, e.g. only after
    a GAN pre-training period.
    """

    name: str
    params: list[nn.Parameter]
    loss: Callable[[Episode], PhaseOutput]
    lr: float | None = None
    betas: tuple[float, float] | None = None
    active: Callable[[int], bool] | None = None
    after_step: Callable[[], None] | None = None  # e.g. update an EMA of the weights

    def runs_at(self, iteration: int) -> bool:
        """Whether this phase updates at `iteration`."""
        return self.active is None or self.active(iteration)


class Diverged(RuntimeError):
    """A non-finite loss: the run stops with a recorded reason instead of crashing."""


def make_optimizer(phase: Phase, optim: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser of one phase: Adam when the phase sets betas or the run uses adam, else SGD."""
    lr = phase.lr or optim.lr
    if phase.betas is not None or optim.name == "adam":
        return torch.optim.Adam(phase.params, lr=lr, betas=phase.betas or (0.9, 0.999),
                                weight_decay=optim.weight_decay)
    return torch.optim.SGD(phase.params, lr=lr, weight_decay=optim.weight_decay)


def update_phase(phase: Phase, optimizer: torch.optim.Optimizer, episode: Episode, lr: float,
                 grad_clip: float, iteration: int) -> dict[str, float]:
    """One update of `phase` at learning rate `lr`: loss, backward, gradient norm, step.

    Returns the phase's metrics and its gradient norm. A non-finite objective raises Diverged
    before any weight changes (`iteration` is 0-based; the message counts from 1).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    out = phase.loss(episode)
    if not torch.isfinite(out.objective):
        raise Diverged(f"non-finite {phase.name} objective at iteration {iteration + 1}")
    torch.autograd.backward(out.objective)  # = objective.backward(), which torch leaves untyped
    # With max_norm = inf this only measures; a finite grad_clip also clips.
    grad_norm = torch.nn.utils.clip_grad_norm_(phase.params, grad_clip or float("inf"))
    optimizer.step()
    if phase.after_step is not None:
        phase.after_step()
    metrics = {k: float(v) for k, v in out.metrics.items()}
    metrics["grad_norm"] = float(grad_norm)
    return metrics


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean accuracy over all leading dimensions; logits [..., C], labels [...]."""
    return (logits.argmax(-1) == labels).float().mean()


def task_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over every task and query: logits [B, n, C], labels [B, n]."""
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten())


class Method(nn.Module):
    """What the episode loop trains: a module whose meta-iteration is a list of phases.

    A method is registered by name (`register_method`) and declares, as class attributes, what
    it needs and what it can do; the loop, the search layer and the API ask these declarations
    and never probe for methods:

      needs_learner  it is built around the run's meta-learner (else the loop builds none)
      classifies     task_logits() (and so task_accuracy()) scores few-shot tasks
      samples        adapt_and_sample() draws new images of a character (and generate_for()
                     of one set, for callers that still probe for it)
      generates      a generative model: evaluated by generation metrics, not by accuracy
      extra_classes  outputs it adds to the learner's classifier head
      reads          the dotted config keys it reads beyond its learner's and the loop's
                     ("section.*" for a whole section)
    """

    needs_learner: ClassVar[bool] = True
    classifies: ClassVar[bool] = True
    samples: ClassVar[bool] = False
    generates: ClassVar[bool] = False
    extra_classes: ClassVar[int] = 0
    reads: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        """The method of run config `cfg` around `learner` (None unless needs_learner), with
        its initial weights drawn from torch's (seeded) RNG."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        """The updates of one meta-iteration, in order."""
        raise NotImplementedError

    def task_logits(self, episode: Episode, rng: torch.Generator | None = None) -> torch.Tensor:
        """Query logits [B, m, ways] over each task's real classes after adapting to its support
        set (when classifies); `rng` drives any sampling the method does while adapting. What
        evaluation scores and what `FewShotModel.predict` returns."""
        raise NotImplementedError(f"{type(self).__name__} does not classify")

    def task_accuracy(self, episode: Episode, rng: torch.Generator | None = None) -> torch.Tensor:
        """Per-task query accuracy [B]: the share of queries whose task_logits argmax is their
        label."""
        logits = self.task_logits(episode, rng)
        return (logits.argmax(-1) == episode.query_y).float().mean(-1)

    def adapt_and_sample(self, support: torch.Tensor, n: int, steps: int,
                         rng: torch.Generator) -> torch.Tensor:
        """Adapt to each set of drawings [T, k, C, H, W] for `steps` (methods that condition on
        the set instead ignore them), then draw n per set: [T, n, C, H, W] in [0, 1] (when
        samples)."""
        raise NotImplementedError(f"{type(self).__name__} does not sample")


class MetaLearner(Method):
    """A few-shot learner over a `torch.nn.Module`.

    adapt(support) -> per-task state; predict(state, query) -> logits; meta_loss(episode) ->
    PhaseOutput whose objective's gradient is the meta-gradient. All methods take a meta-batch:
    tensors carry a leading task dimension B.

    Batch norm (`batch_norm`, the config's model.batch_norm), in training as at meta-test:

      "support"       (default, non-transductive) every batch-norm layer normalises every image
                      of a task (support, queries, generated images) with the statistics of the
                      task's real support images only, so a query's prediction depends only on
                      itself and the support set: MetaBN of Bronskill et al. 2020, "TaskNorm:
                      Rethinking Batch Normalization for Meta-Learning". The network runs on
                      [support; others] with the statistics of the first `context` rows
                      (models.context_statistics), and the outputs are sliced.
      "transductive"  batch statistics of what each learner feeds the network together:
                      ProtoNet support and queries of a task jointly; MAML and Reptile the
                      support set while adapting and the queries alone when predicting
                      (Reptile's meta-training adapts on support and queries jointly).
      "instance"      (non-transductive) no batch statistics at all: every image is normalised
                      per channel over its own pixels (instance normalisation, keeping the
                      layers' affine parameters), so an image's output depends on itself alone,
                      whatever it is batched with (support, queries, generated images).
                      Every learner supports it; the network's last blocks must keep a spatial
                      side above 1 (a 1x1 map normalises to its bias).

    `context` (adapt, meta_loss, task_logits): how many leading support images of each task
    are its real support set, when a method appends generated ones after them (DAGAN, and
    MetaGAN's fakes in MAML's inner loop, see maml.MAML.adapt's `extra`); None: all of them.
    Only the support mode uses it: generated images are normalised with the real support
    images' statistics and never enter them. The instance mode needs no context, and in
    transductive mode generated images are a batch of their own wherever a learner keeps them
    apart (MAML's `extra`) and part of the support batch where a method appends them (DAGAN).
    """

    name: ClassVar[str]
    # Every learner reads its name, the backbone's settings (model.batch_norm among them) and
    # the run's optimiser (its phase has no betas of its own); gradient-based learners add
    # their inner loop.
    reads = frozenset({"meta.algorithm", "model.*", "optim.name"})

    def __init__(self, model: nn.Module, cfg: MetaConfig, batch_norm: BatchNorm = "support"
                 ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.batch_norm: BatchNorm = batch_norm

    def statistics_rows(self, support: int, context: int | None = None) -> Statistics:
        """The leading rows of a task's batch (which starts with its `support` support images)
        whose batch-norm statistics normalise the whole batch: the real support images in
        support mode, None (the whole batch) in transductive mode; models.INSTANCE (each image
        by itself) in instance mode."""
        if self.batch_norm == "transductive":
            return None
        if self.batch_norm == "instance":
            return INSTANCE
        return support if context is None else context

    def call_model(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                   rows: Statistics, penultimate: bool = False) -> torch.Tensor:
        """The model under `params` on one task's images x [n, ...], batch norm taking its
        statistics from x[:rows] (None: all of x; INSTANCE: each image its own). `penultimate`:
        the features the classifier head reads instead of the logits."""
        kwargs = {"penultimate": True} if penultimate else {}
        with context_statistics(self.model, rows):
            out: torch.Tensor = functional_call(self.model, params, (x,), kwargs)
        return out

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, ways: int,
              steps: int | None = None, context: int | None = None) -> Any:
        """Per-task adapted state from support sets [B, n, ...]."""
        raise NotImplementedError

    def predict(self, adapted: Any, query_x: torch.Tensor) -> torch.Tensor:
        """Query logits [B, m, ways] under the adapted state."""
        raise NotImplementedError

    def meta_loss(self, episode: Episode, context: int | None = None) -> PhaseOutput:
        """The meta-training objective on one meta-batch (default: query loss after adapt)."""
        adapted = self.adapt(episode.support_x, episode.support_y, episode.ways, context=context)
        logits = self.predict(adapted, episode.query_x)
        loss = task_cross_entropy(logits, episode.query_y)
        return PhaseOutput(loss, {"loss": loss.detach(), "accuracy": accuracy(logits, episode.query_y)})

    def phases(self) -> list[Phase]:
        """The updates of one meta-iteration: a single meta-update for plain meta-learners."""
        return [Phase("meta", list(self.parameters()), self.meta_loss)]

    def task_logits(self, episode: Episode, rng: torch.Generator | None = None,
                    context: int | None = None) -> torch.Tensor:
        """Query logits [B, m, ways] after adapting to each support set with the evaluation
        inner steps (plain learners draw nothing from `rng`)."""
        adapted = self.adapt(episode.support_x, episode.support_y, episode.ways,
                             self.cfg.eval_inner_steps or self.cfg.inner_steps, context)
        logits: torch.Tensor = self.predict(adapted, episode.query_x)
        return logits

    @classmethod
    def head_size(cls, ways: int) -> int | None:
        """Size of the model's classifier head, or None for metric-based learners."""
        return ways

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        """Method "meta": the run's learner itself."""
        return required_learner(learner, cfg)


def required_learner(learner: MetaLearner | None, cfg: Config) -> MetaLearner:
    """The learner a method with needs_learner is built around (the loop always passes one),
    set to the run's batch-norm convention, model.batch_norm."""
    if learner is None:
        raise TypeError(f"method {cfg.method!r} is built around a meta-learner; got None")
    learner.batch_norm = cfg.model.batch_norm
    return learner


REGISTRY: dict[str, type[MetaLearner]] = {}


def register(name: str) -> Callable[[type[MetaLearner]], type[MetaLearner]]:
    """Class decorator adding a meta-learner to the registry under `name`."""

    def wrap(cls: type[MetaLearner]) -> type[MetaLearner]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


METHODS: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type[Method])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator adding a method (what `method:` in a config names) to METHODS."""

    def wrap(cls: M) -> M:
        METHODS[name] = cls
        register_method_name(name)  # configs may now name it
        return cls

    return wrap


register_method("meta")(MetaLearner)


def adaptation_steps(cfg: Config, method: Method, steps: int | None) -> int:
    """A sampling call's adaptation steps: the config's gan.eval_adapt_steps unless given; only
    a few-shot generator (a method that `generates`) adapts, and never a negative number."""
    if steps is None:
        return cfg.gan.eval_adapt_steps
    if not method.generates:
        raise ConfigError(f"adapt_steps: method {cfg.method!r} conditions its generator on the "
                          "drawings; only a few-shot generator is adapted")
    if steps < 0:
        raise ConfigError(f"adapt_steps: must be 0 or more, got {steps}")
    return steps
