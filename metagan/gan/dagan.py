"""DAGAN-style augmentation (Antoniou et al. 2017): a GAN that turns a real image into another
plausible drawing of the same class, used to enlarge every support set the meta-learner sees.

The GAN is trained on meta-train episodes only: the discriminator judges pairs of drawings,
(real, another real of the same class) against (real, generated from it).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import Config
from ..data.episodes import Episode
from ..meta.base import MetaLearner, Method, Phase, PhaseOutput, register_method, required_learner
from .losses import LOSSES, gradient_penalty
from .nets import Discriminator, Generator, SeededNoise, SetEncoder, per_set

NOISE_SEED_OFFSET = 7_919


def first_of_each_class(x: torch.Tensor, y: torch.Tensor, ways: int) -> torch.Tensor:
    """The first image of every class in each task: x [B, n, ...], y [B, n] -> [B, ways, ...]."""
    match = y.unsqueeze(1) == torch.arange(ways, device=y.device).view(1, ways, 1)  # [B, ways, n]
    index = match.float().argmax(-1)  # [B, ways]
    return torch.gather(x, 1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(
        -1, -1, *x.shape[2:]))


class PairGenerator(nn.Module):
    """G(x, z): an image [n, 1, H, W] and noise [n, z_dim] -> another drawing of its class."""

    def __init__(self, z_dim: int, width: int, image_size: int = 28) -> None:
        super().__init__()
        self.encoder = SetEncoder(dim=4 * width, width=width, image_size=image_size)
        self.decoder = Generator(z_dim=z_dim, cond_dim=4 * width, width=width,
                                 image_size=image_size)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One new image per (x, z) row."""
        images: torch.Tensor = self.decoder(z, self.encoder(x.unsqueeze(1)))
        return images


@register_method("dagan")
class DaganAugmented(SeededNoise, Method):
    """A meta-learner whose support sets are augmented by a DAGAN generator."""

    samples = True
    reads = frozenset({f"gan.{k}" for k in (
        "loss", "gp_weight", "z_dim", "width", "spectral_norm", "ema", "g_lr", "d_lr", "beta1",
        "beta2", "augment", "pretrain_steps", "schedule", "augment_at_test")})

    def __init__(self, cfg: Config, learner: MetaLearner) -> None:
        super().__init__(cfg.train.seed + NOISE_SEED_OFFSET)
        g = cfg.gan
        self.cfg, self.learner = cfg, learner
        self.generator = PairGenerator(g.z_dim, g.width, cfg.data.image_size)
        self.discriminator = Discriminator(width=g.width, image_channels=2,
                                           spectral=g.spectral_norm,
                                           image_size=cfg.data.image_size)
        # Samples for augmentation come from the EMA of G's weights when enabled.
        # get_ema_multi_avg_fn is unannotated in torch; it returns the EMA update function.
        self.ema = (AveragedModel(self.generator,
                                  multi_avg_fn=get_ema_multi_avg_fn(g.ema),  # type: ignore[no-untyped-call]
                                  use_buffers=True) if g.ema > 0 else None)
        self.d_loss, self.g_loss = LOSSES[g.loss]

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        """The learner, then G and D drawn from the seeded RNG."""
        return cls(cfg, required_learner(learner, cfg))

    # -- sampling ---------------------------------------------------------------------------
    def _z(self, n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
        # Drawn on the CPU from an explicit generator: the same noise on every device.
        return torch.randn(n, self.cfg.gan.z_dim, generator=rng).to(device)

    @torch.no_grad()
    def augment(self, episode: Episode, rng: torch.Generator) -> Episode:
        """The episode with `gan.augment` generated samples per real support sample added."""
        m = self.cfg.gan.augment
        b, n = episode.support_y.shape
        source = episode.support_x.repeat_interleave(m, dim=1).flatten(0, 1)  # [B*n*m, 1, H, W]
        g = self.ema.module if self.ema is not None else self.generator
        fake = g(source, self._z(source.shape[0], rng, source.device)).view(
            b, n * m, *episode.support_x.shape[2:])
        return replace(episode,
                       support_x=torch.cat([episode.support_x, fake], dim=1),
                       support_y=torch.cat([episode.support_y,
                                            episode.support_y.repeat_interleave(m, dim=1)], dim=1),
                       shots=episode.shots * (1 + m))

    # -- phases -----------------------------------------------------------------------------
    def _pairs(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, target) real drawings of the same class, [B*ways, 1, H, W] each."""
        source = first_of_each_class(episode.support_x, episode.support_y, episode.ways)
        target = first_of_each_class(episode.query_x, episode.query_y, episode.ways)
        return source.flatten(0, 1), target.flatten(0, 1)

    def _d_phase(self, episode: Episode) -> PhaseOutput:
        source, target = self._pairs(episode)
        with torch.no_grad():
            fake = self.generator(source, self._z(source.shape[0], self.noise, source.device))
        real_pair, fake_pair = torch.cat([source, target], 1), torch.cat([source, fake], 1)
        real_s, fake_s = self.discriminator(real_pair), self.discriminator(fake_pair)
        loss = self.d_loss(real_s, fake_s)
        metrics = {"loss": loss.detach(), "real_score": real_s.mean().detach(),
                   "fake_score": fake_s.mean().detach()}
        if self.cfg.gan.loss == "wasserstein" and self.cfg.gan.gp_weight > 0:
            w = torch.rand(real_pair.shape[0], generator=self.noise).to(real_pair.device)
            gp = gradient_penalty(self.discriminator, real_pair, fake_pair, w)
            loss = loss + self.cfg.gan.gp_weight * gp
            metrics["gradient_penalty"] = gp.detach()
        return PhaseOutput(loss, metrics)

    def _g_phase(self, episode: Episode) -> PhaseOutput:
        source, _ = self._pairs(episode)
        fake = self.generator(source, self._z(source.shape[0], self.noise, source.device))
        loss = self.g_loss(self.discriminator(torch.cat([source, fake], 1)))
        return PhaseOutput(loss, {"loss": loss.detach()})

    def _meta_phase(self, episode: Episode) -> PhaseOutput:
        # The real support images lead the augmented support set; in the learner's support
        # batch-norm mode only they give the statistics (the generated ones do not).
        return self.learner.meta_loss(self.augment(episode, self.noise),
                                      context=episode.support_x.shape[1])

    def phases(self) -> list[Phase]:
        """D and G updates (pre-training, then per the schedule), then the augmented meta-update."""
        g = self.cfg.gan
        pre = g.pretrain_steps
        gan_active = (lambda it: it < pre) if g.schedule == "frozen" else None
        betas = (g.beta1, g.beta2)
        return [
            Phase("D", list(self.discriminator.parameters()), self._d_phase, g.d_lr, betas,
                  gan_active),
            Phase("G", list(self.generator.parameters()), self._g_phase, g.g_lr, betas,
                  gan_active, self._update_ema),
            Phase("meta", list(self.learner.parameters()), self._meta_phase,
                  active=lambda it: it >= pre),
        ]

    def _update_ema(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.generator)

    def task_accuracy(self, episode: Episode, rng: torch.Generator | None = None) -> torch.Tensor:
        """Per-task accuracy, with the support sets augmented too when gan.augment_at_test
        (batch-norm statistics from the real support images in support mode, as in training)."""
        real = episode.support_x.shape[1]
        if self.cfg.gan.augment_at_test:
            episode = self.augment(episode, rng if rng is not None else self.noise)
        return self.learner.task_accuracy(episode, context=real)

    @torch.no_grad()
    def generate_for(self, support: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        """n new drawings of the character in support [k, 1, H, W], cycling over its images."""
        source = support[torch.arange(n) % support.shape[0]]
        g = self.ema.module if self.ema is not None else self.generator
        images: torch.Tensor = g(source, self._z(n, rng, support.device))
        return images

    def adapt_and_sample(self, support: torch.Tensor, n: int, steps: int,
                         rng: torch.Generator) -> torch.Tensor:
        """generate_for each set [T, k, 1, H, W] (G does not adapt: `steps` is unused)."""
        return per_set(self.generate_for, support, n, rng)
