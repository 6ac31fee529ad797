"""MetaGAN (Zhang et al. 2018): the few-shot classifier is the discriminator.

Each task's classifier has N real classes plus one "fake" class and adapts per task with a
gradient-based meta-learner (MAML, first-order MAML). A task-conditioned generator (conditioned
on the task's support set) produces fakes near the task's classes; classifying them as "fake"
after adaptation sharpens the decision boundaries. D and G play min-max summed over the tasks
of a meta-batch. The inner loop adapts on the real support set; the fake class is learned
through the meta-objective.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..config import Config
from ..data.episodes import Episode
from ..meta.base import (
    MetaLearner,
    Method,
    Phase,
    PhaseOutput,
    accuracy,
    register_method,
    required_learner,
)
from .nets import Generator, SeededNoise, SetEncoder, per_set

NOISE_SEED_OFFSET = 130_003


@register_method("metagan")
class MetaGan(SeededNoise, Method):
    """A meta-learner with a (ways + 1)-class head and a task-conditioned generator."""

    samples = True
    extra_classes = 1  # the "fake" class
    # D is the learner (its phase uses the run's optimiser); G has its own lr and betas.
    reads = frozenset({"gan.z_dim", "gan.width", "gan.g_lr", "gan.beta1", "gan.beta2"})

    def __init__(self, cfg: Config, learner: MetaLearner) -> None:
        super().__init__(cfg.train.seed + NOISE_SEED_OFFSET)
        g, size = cfg.gan, cfg.data.image_size
        self.cfg, self.learner = cfg, learner
        self.encoder = SetEncoder(dim=4 * g.width, width=g.width, image_size=size)
        self.generator = Generator(z_dim=g.z_dim, cond_dim=4 * g.width, width=g.width,
                                   image_size=size)

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        """The learner (with its fake output), then the encoder and G from the seeded RNG."""
        return cls(cfg, required_learner(learner, cfg))

    def _fakes(self, episode: Episode, per_task: int) -> torch.Tensor:
        """per_task generated images for each task, conditioned on its support set."""
        b = episode.num_tasks
        cond = self.encoder(episode.support_x)  # [B, c]
        z = torch.randn(b * per_task, self.cfg.gan.z_dim, generator=self.noise).to(cond.device)
        x: torch.Tensor = self.generator(z, cond.repeat_interleave(per_task, dim=0))
        return x.view(b, per_task, *episode.support_x.shape[2:])

    def _d_phase(self, episode: Episode) -> PhaseOutput:
        n_q = episode.query_x.shape[1]
        with torch.no_grad():
            fakes = self._fakes(episode, n_q)
        # Real and generated images are predicted separately. In the learner's support
        # batch-norm mode both are normalised by the same statistics, the real support set's
        # (predict runs each behind the support set); transductive, they are separate batches.
        # Mixed into one batch, the fakes would dominate the statistics and the real classes
        # collapse onto each other (measured: chance accuracy on real queries with fakes mixed
        # into the support set).
        adapted = self.learner.adapt(episode.support_x, episode.support_y, episode.ways + 1)
        real_logits = self.learner.predict(adapted, episode.query_x)  # [B, n_q, ways + 1]
        fake_logits = self.learner.predict(adapted, fakes)
        real_loss = F.cross_entropy(real_logits.flatten(0, 1), episode.query_y.flatten())
        fake_target = torch.full(fake_logits.shape[:2], episode.ways, device=fake_logits.device)
        fake_loss = F.cross_entropy(fake_logits.flatten(0, 1), fake_target.flatten())
        return PhaseOutput(real_loss + fake_loss, {
            "loss": real_loss.detach(), "fake_loss": fake_loss.detach(),
            "accuracy": accuracy(real_logits[..., :episode.ways], episode.query_y),
            "fake_detected": (fake_logits.argmax(-1) == episode.ways).float().mean()})

    def _g_phase(self, episode: Episode) -> PhaseOutput:
        fakes = self._fakes(episode, episode.query_x.shape[1])
        adapted = _detach(self.learner.adapt(episode.support_x, episode.support_y,
                                             episode.ways + 1))  # G must not move the classifier
        logits = self.learner.predict(adapted, fakes)
        # Non-saturating: maximise log P(real class) = log(1 - P(fake)) for generated images.
        log_real = torch.logsumexp(logits[..., :episode.ways], -1) - torch.logsumexp(logits, -1)
        loss = -log_real.mean()
        return PhaseOutput(loss, {"loss": loss.detach()})

    def phases(self) -> list[Phase]:
        """The classifier/discriminator update, then the generator update."""
        g = self.cfg.gan
        return [
            Phase("D", list(self.learner.parameters()), self._d_phase),
            Phase("G", list(self.encoder.parameters()) + list(self.generator.parameters()),
                  self._g_phase, g.g_lr, (g.beta1, g.beta2)),
        ]

    def task_accuracy(self, episode: Episode, rng: torch.Generator | None = None) -> torch.Tensor:
        """Accuracy over the N real classes after adapting to the real support set."""
        steps = self.learner.cfg.eval_inner_steps or self.learner.cfg.inner_steps
        # No fakes in the support set: ProtoNet builds `ways` prototypes, MAML's head keeps its
        # fake output, which is dropped before the argmax.
        adapted = self.learner.adapt(episode.support_x, episode.support_y, episode.ways, steps)
        logits = self.learner.predict(adapted, episode.query_x)[..., :episode.ways]
        return (logits.argmax(-1) == episode.query_y).float().mean(-1)

    @torch.no_grad()
    def generate_for(self, support: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        """n generated images conditioned on the set support [k, 1, H, W]."""
        cond = self.encoder(support.unsqueeze(0)).expand(n, -1)
        z = torch.randn(n, self.cfg.gan.z_dim, generator=rng).to(support.device)
        images: torch.Tensor = self.generator(z, cond)
        return images

    def adapt_and_sample(self, support: torch.Tensor, n: int, steps: int,
                         rng: torch.Generator) -> torch.Tensor:
        """generate_for each set [T, k, 1, H, W] (G conditions on the set instead of adapting:
        `steps` is unused)."""
        return per_set(self.generate_for, support, n, rng)


def _detach(adapted: Any) -> Any:
    if isinstance(adapted, dict):
        return {k: v.detach() for k, v in adapted.items()}
    if isinstance(adapted, tuple):
        return tuple(_detach(a) for a in adapted)
    return adapted.detach() if isinstance(adapted, torch.Tensor) else adapted
