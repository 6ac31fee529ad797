"""MetaGAN (Zhang, Che, Ghahramani, Bengio & Song, NeurIPS 2018, "MetaGAN: An Adversarial
Approach to Few-Shot Learning"): the few-shot classifier is the discriminator.

Each task's classifier has N real classes plus one "fake" class and adapts per task with a
gradient-based meta-learner (MAML, first-order MAML). A task-conditioned generator (conditioned
on the task's support set through a set encoder) produces fakes near the task's classes. As in
the paper's algorithm, for every task of a meta-batch:

  inner loop   the classifier adapts on the real support set AND a set of generated images of
               the task labelled "fake" (class N):
                   CE_{N+1}(support, y) + fake_weight * CE_{N+1}(fakes, N)
  outer loss   the adapted classifier on the real queries and on fresh fakes of the task:
                   CE_{N+1}(queries, y) + fake_weight * CE_{N+1}(fresh fakes, N)
  generator    feature matching (gan.generator_loss: feature_matching): the mean penultimate
               features of the task's fakes match those of its real queries, under the adapted
               classifier; or nonsaturating: -log P(not fake) of the fakes.

The paper's discriminator loss is the semi-supervised GAN's (Salimans et al. 2016): a
supervised term -log p(y | x, y <= N) on labelled real data, an unsupervised term
-log p(y <= N | x) on real data and -log p(N+1 | x) on generated data. With the labelled real
images also serving as the real unlabelled ones (Omniglot tasks have no others),
CE_{N+1}(x, y) = -log p(y | x, y <= N) - log p(y <= N | x) exactly, so the real terms are one
(N+1)-way cross-entropy and fake_weight weighs the generated-image term (1: the paper's sum;
0: first-order MAML / MAML with an (N+1)-way head, the fakes having no effect).

Batch norm (model.batch_norm): the fakes share the network's batch with the real support set
(inner loop) and the queries (outer loss) without moving anything real: in support mode they
are normalised with the real support images' statistics and never enter them; in instance mode
every image is normalised by itself; in transductive mode they are a batch of their own.

At meta-test the classifier adapts as in training (support set and generated fakes, drawn from
the evaluation's own random generator) and predicts among the N real classes.
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
from ..meta.maml import MAML, Adapted
from .nets import Generator, SeededNoise, SetEncoder, per_set

NOISE_SEED_OFFSET = 130_003


def feature_matching(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Salimans et al. 2016's generator loss per task: the squared difference of the mean
    features of real and generated images ([B, n, D], [B, m, D]), averaged over features and
    tasks."""
    return (real.mean(1) - fake.mean(1)).pow(2).mean()


def not_fake_loss(logits: torch.Tensor, ways: int) -> torch.Tensor:
    """Non-saturating generator loss: -log P(one of the N real classes) = -log(1 - P(fake))
    of generated images' (N+1)-way logits [..., N + 1]."""
    log_real = torch.logsumexp(logits[..., :ways], -1) - torch.logsumexp(logits, -1)
    return -log_real.mean()


@register_method("metagan")
class MetaGan(SeededNoise, Method):
    """A MAML-family meta-learner with a (ways + 1)-class head and a task-conditioned
    generator whose fakes enter the inner loop as the extra class."""

    samples = True
    extra_classes = 1  # the "fake" class
    # D is the learner (its phase uses the run's optimiser); G has its own lr and betas.
    reads = frozenset({"gan.z_dim", "gan.width", "gan.g_lr", "gan.beta1", "gan.beta2",
                       "gan.fake_weight", "gan.generator_loss"})

    def __init__(self, cfg: Config, learner: MAML) -> None:
        super().__init__(cfg.train.seed + NOISE_SEED_OFFSET)
        g, size = cfg.gan, cfg.data.image_size
        self.cfg, self.learner = cfg, learner
        self.encoder = SetEncoder(dim=4 * g.width, width=g.width, image_size=size,
                                  image_channels=cfg.data.channels)
        self.generator = Generator(z_dim=g.z_dim, cond_dim=4 * g.width, width=g.width,
                                   image_size=size, image_channels=cfg.data.channels)

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        """The learner (with its fake output), then the encoder and G from the seeded RNG."""
        learner = required_learner(learner, cfg)
        if not isinstance(learner, MAML):
            raise TypeError(f"metagan adapts its classifier with fakes in a MAML inner loop; "
                            f"got {type(learner).__name__}")
        return cls(cfg, learner)

    def _fakes(self, episode: Episode, per_task: int, rng: torch.Generator | None = None
               ) -> torch.Tensor:
        """per_task generated images [B, per_task, C, S, S] for each task, conditioned on its
        support set, the noise drawn from `rng` (default: the method's own generator, never
        torch's global one)."""
        b = episode.num_tasks
        cond = self.encoder(episode.support_x)  # [B, c]
        z = torch.randn(b * per_task, self.cfg.gan.z_dim,
                        generator=self.noise if rng is None else rng).to(cond.device)
        x: torch.Tensor = self.generator(z, cond.repeat_interleave(per_task, dim=0))
        return x.view(b, per_task, *episode.support_x.shape[2:])

    def _adapt(self, episode: Episode, fakes: torch.Tensor, steps: int | None = None) -> Adapted:
        """The inner loop: the real support set plus `fakes` [B, m, ...] labelled fake."""
        fake_y = torch.full(fakes.shape[:2], episode.ways, dtype=episode.support_y.dtype,
                            device=episode.support_y.device)
        return self.learner.adapt(episode.support_x, episode.support_y, episode.ways + 1, steps,
                                  extra=(fakes, fake_y, self.cfg.gan.fake_weight))

    def _d_phase(self, episode: Episode) -> PhaseOutput:
        n_s, n_q = episode.support_x.shape[1], episode.query_x.shape[1]
        with torch.no_grad():  # one generator batch: the inner loop's fakes, then fresh ones
            fakes = self._fakes(episode, n_s + n_q)
        adapted = self._adapt(episode, fakes[:, :n_s])
        real_logits = self.learner.predict(adapted, episode.query_x)  # [B, n_q, ways + 1]
        fake_logits = self.learner.predict(adapted, fakes[:, n_s:])
        real_loss = F.cross_entropy(real_logits.flatten(0, 1), episode.query_y.flatten())
        fake_target = torch.full(fake_logits.shape[:2], episode.ways, device=fake_logits.device)
        fake_loss = F.cross_entropy(fake_logits.flatten(0, 1), fake_target.flatten())
        return PhaseOutput(real_loss + self.cfg.gan.fake_weight * fake_loss, {
            "loss": real_loss.detach(), "fake_loss": fake_loss.detach(),
            "accuracy": accuracy(real_logits[..., :episode.ways], episode.query_y),
            "fake_detected": (fake_logits.argmax(-1) == episode.ways).float().mean()})

    def _g_phase(self, episode: Episode) -> PhaseOutput:
        n_s = episode.support_x.shape[1]
        fakes = self._fakes(episode, n_s + episode.query_x.shape[1])
        # The classifier adapted as in its own phase; G must not move it.
        adapted = _detach(self._adapt(episode, fakes[:, :n_s].detach()))
        fresh = fakes[:, n_s:]
        if self.cfg.gan.generator_loss == "feature_matching":
            with torch.no_grad():
                real = self.learner.features(adapted, episode.query_x)
            loss = feature_matching(real, self.learner.features(adapted, fresh))
        else:
            loss = not_fake_loss(self.learner.predict(adapted, fresh), episode.ways)
        return PhaseOutput(loss, {"loss": loss.detach()})

    def phases(self) -> list[Phase]:
        """The classifier/discriminator update, then the generator update."""
        g = self.cfg.gan
        return [
            Phase("D", list(self.learner.parameters()), self._d_phase),
            Phase("G", list(self.encoder.parameters()) + list(self.generator.parameters()),
                  self._g_phase, g.g_lr, (g.beta1, g.beta2)),
        ]

    def task_logits(self, episode: Episode, rng: torch.Generator | None = None) -> torch.Tensor:
        """Logits over the N real classes after the training inner loop (real support set and
        fakes drawn from `rng`, so evaluating leaves the training noise untouched)."""
        steps = self.learner.cfg.eval_inner_steps or self.learner.cfg.inner_steps
        with torch.no_grad():
            fakes = self._fakes(episode, episode.support_x.shape[1],
                                rng if rng is not None else torch.Generator().manual_seed(0))
        adapted = self._adapt(episode, fakes, steps)
        logits: torch.Tensor = self.learner.predict(adapted, episode.query_x)[..., :episode.ways]
        return logits

    @torch.no_grad()
    def generate_for(self, support: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        """n generated images conditioned on the set support [k, C, H, W]."""
        cond = self.encoder(support.unsqueeze(0)).expand(n, -1)
        z = torch.randn(n, self.cfg.gan.z_dim, generator=rng).to(support.device)
        images: torch.Tensor = self.generator(z, cond)
        return images

    def adapt_and_sample(self, support: torch.Tensor, n: int, steps: int,
                         rng: torch.Generator) -> torch.Tensor:
        """generate_for each set [T, k, C, H, W] (G conditions on the set instead of adapting:
        `steps` is unused)."""
        return per_set(self.generate_for, support, n, rng)


def _detach(adapted: Any) -> Any:
    if isinstance(adapted, dict):
        return {k: v.detach() for k, v in adapted.items()}
    if isinstance(adapted, tuple):
        return tuple(_detach(a) for a in adapted)
    return adapted.detach() if isinstance(adapted, torch.Tensor) else adapted
