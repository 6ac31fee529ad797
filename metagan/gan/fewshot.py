"""A meta-learned GAN for few-shot generation (FIGR, Clouatre & Demers 2019, "FIGR: Few-shot
Image Generation with Reptile").

Generator and discriminator are meta-trained over tasks, a task being the drawings of one
character: each task adapts a copy of (G, D) with a few SGD steps of GAN training (one D step,
then one G step, per inner step), and the initialisation moves towards the adapted weights
(Reptile, as the paper) or along the first-order MAML gradient. At meta-test the pair adapts to
k drawings of an unseen character and generates new ones. Every task of a meta-batch runs
together under torch.func.vmap: the inner loop is a pure function of weights, images and noise.

FIGR's settings (configs/fewshot_gan.yaml; the authors' code, LuEE-C/FIGR):
  loss         Wasserstein with a gradient penalty (weight 10) in the inner loop: the penalty is
               written with torch.func.grad (losses.functional_gradient_penalty), so each
               task's critic is differentiated w.r.t. its own interpolates inside the vmap
  norm         LayerNorm in G and D (gan.norm: layer); none, or the original networks' batch
               statistics in G (batch), are the alternatives
  upsample     nearest resize + convolution (gan.upsample: resize), no checkerboard; or the
               original stride-2 transposed convolutions (transposed)
  range        G ends in tanh and D sees images in [-1, 1]: real drawings are mapped there on
               the way in and samples back to [0, 1] on the way out (all callers see [0, 1])
  schedule     inner SGD, lr 1e-3, 10 steps; outer Adam, lr 1e-4, on theta - mean(phi)
Conditioning (gan.condition): weights (FIGR: the adapted weights are all G knows of the
character) or set (G also reads the mean SetEncoder code of the task's drawings, as MetaGAN's
generator does; the encoder is part of G, adapted and meta-learned with it).

Noise: every draw comes from the method's own seeded generator (or the caller's), on the CPU,
and is moved to the images' device, so runs are reproducible and resume exactly on any device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..config import Config, ModelConfig
from ..data.episodes import Episode
from ..meta.base import MetaLearner, Method, Phase, PhaseOutput, register_method
from ..meta.reptile import reptile_objective
from ..models import Conv4
from .losses import LOSSES, functional_gradient_penalty
from .nets import Discriminator, Generator, Norm, SeededNoise, SetEncoder, Upsample

Params = dict[str, torch.Tensor]
NOISE_SEED_OFFSET = 104_729


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """Drawings in [0, 1] -> [-1, 1], the range G's tanh produces and D reads."""
    return images * 2 - 1


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """G's [-1, 1] -> [0, 1], the range the rest of the package reads."""
    return ((images + 1) / 2).clamp(0, 1)


class SetGenerator(nn.Module):
    """G conditioned on a set of drawings too: z [n, z_dim] and drawings [k, C, S, S] (in
    [-1, 1]) -> images [n, C, S, S] in [-1, 1]. The set's mean SetEncoder code (as MetaGAN's
    generator, joint.py) is appended to every z."""

    def __init__(self, z_dim: int, width: int, image_size: int, norm: Norm,
                 upsample: Upsample, channels: int = 1) -> None:
        super().__init__()
        self.encoder = SetEncoder(dim=4 * width, width=width, image_size=image_size,
                                  image_channels=channels)
        self.net = Generator(z_dim=z_dim, cond_dim=4 * width, width=width,
                             image_channels=channels, image_size=image_size, norm=norm,
                             upsample=upsample, output="tanh")

    def forward(self, z: torch.Tensor, drawings: torch.Tensor) -> torch.Tensor:
        """One image per row of z, every one conditioned on the same set."""
        code = self.encoder(drawings.unsqueeze(0)).expand(z.shape[0], -1)
        images: torch.Tensor = self.net(z, code)
        return images


def class_sets(episode: Episode) -> torch.Tensor:
    """Every class of every task as one task of its drawings: [B*ways, shots+queries, C, H, W]."""
    per_class = []
    for x, y in ((episode.support_x, episode.support_y), (episode.query_x, episode.query_y)):
        order = y.argsort(dim=1, stable=True)  # group the drawings by label, class-major
        idx = order.view(*order.shape, 1, 1, 1).expand(-1, -1, *x.shape[2:])
        per_class.append(torch.gather(x, 1, idx).view(x.shape[0], episode.ways, -1, *x.shape[2:]))
    return torch.cat(per_class, dim=2).flatten(0, 1)


@register_method("fewshot_gan")
class FewShotGan(SeededNoise, Method):
    """Meta-learned (G, D) pair: `adapt(images, steps)` then `sample(n)` for a new character."""

    needs_learner = False
    classifies = False
    samples = True
    generates = True  # evaluated by generation metrics
    # Its one phase has betas but no lr (so the run's optim.lr).
    reads = frozenset({f"gan.{k}" for k in (
        "loss", "gp_weight", "z_dim", "width", "beta1", "beta2", "meta_algorithm", "inner_steps",
        "inner_lr", "eval_adapt_steps", "norm", "upsample", "condition")})

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.train.seed + NOISE_SEED_OFFSET)
        g, size = cfg.gan, cfg.data.image_size
        self.cfg = cfg
        self.generator: nn.Module
        if g.condition == "set":
            self.generator = SetGenerator(g.z_dim, g.width, size, g.norm, g.upsample,
                                          cfg.data.channels)
        else:
            self.generator = Generator(z_dim=g.z_dim, width=g.width, image_size=size,
                                       image_channels=cfg.data.channels,
                                       norm=g.norm, upsample=g.upsample, output="tanh")
        # A critic with batch statistics would break the per-image gradient penalty: "batch"
        # keeps the original, unnormalised D.
        self.discriminator = Discriminator(width=g.width, image_size=size,
                                           image_channels=cfg.data.channels,
                                           norm="none" if g.norm == "batch" else g.norm)
        self.d_loss, self.g_loss = LOSSES[g.loss]
        # WGAN-GP's penalty weight: wasserstein only (the other losses need none).
        self.gp_weight = g.gp_weight if g.loss == "wasserstein" else 0.0

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        """G and D from the seeded RNG, after the draws of a meta-learner it does not use.

        Before methods declared whether they need a learner, the loop built the default conv4
        ProtoNet for this method too and never used it; drawing (and dropping) the same initial
        weights first keeps every seed's G and D what they were with those runs' settings.
        """
        m = ModelConfig()
        Conv4(1, m.hidden, m.depth, cfg.data.image_size, None, m.downsample)
        return cls(cfg)

    # -- the networks as pure functions of their weights ------------------------------------------
    def _generate(self, g_params: Params, z: torch.Tensor, drawings: torch.Tensor) -> torch.Tensor:
        """G under g_params: z [n, z_dim] -> [n, C, H, W] in [-1, 1]; `drawings` [k, C, H, W]
        (in [-1, 1]) are the task's set, read only when gan.condition is set."""
        args = (z, drawings) if self.cfg.gan.condition == "set" else (z,)
        images: torch.Tensor = functional_call(self.generator, g_params, args)
        return images

    def _critic(self, d_params: Params) -> Callable[[torch.Tensor], torch.Tensor]:
        """D under d_params: images [n, C, H, W] in [-1, 1] -> scores [n]."""
        return lambda x: functional_call(self.discriminator, d_params, (x,))

    def critic_objective(self, d_params: Params, real: torch.Tensor, fake: torch.Tensor,
                         weight: torch.Tensor) -> torch.Tensor:
        """D's loss on one task's (or any one batch's) real and fake images in [-1, 1], with the
        gradient penalty at interpolates of weight [n] (WGAN-GP; one interpolate per real image,
        the fakes as many as the reals)."""
        critic = self._critic(d_params)
        loss = self.d_loss(critic(real), critic(fake))
        if self.gp_weight:
            loss = loss + self.gp_weight * functional_gradient_penalty(critic, real, fake, weight)
        return loss

    # -- the inner loop: a pure function of weights, images and noise -----------------------------
    def _adapt_one(self, g_params: Params, d_params: Params, images: torch.Tensor,
                   z: torch.Tensor, eps: torch.Tensor | None = None,
                   context: int | None = None) -> tuple[Params, Params]:
        """SGD on one task's GAN losses: images [m, C, H, W] in [0, 1], z [steps, m, z_dim],
        eps [steps, m] the gradient penalty's interpolation weights (needed with a penalty);
        G's set (gan.condition: set) is the first `context` images (None: all)."""
        if self.gp_weight and eps is None:
            raise ValueError("the gradient penalty needs its interpolation weights (eps)")
        lr = self.cfg.gan.inner_lr
        real = to_signed(images)
        drawings = real if context is None else real[:context]

        def d_objective(dp: Params, gp: Params, zs: torch.Tensor, w: torch.Tensor
                        ) -> torch.Tensor:
            fake = self._generate(gp, zs, drawings).detach()
            return self.critic_objective(dp, real, fake, w)

        def g_objective(gp: Params, dp: Params, zs: torch.Tensor) -> torch.Tensor:
            return self.g_loss(self._critic(dp)(self._generate(gp, zs, drawings)))

        for step in range(z.shape[0]):
            w = eps[step] if eps is not None else z.new_zeros(z.shape[1])
            d_grads = grad(d_objective)(d_params, g_params, z[step], w)
            d_params = {k: d_params[k] - lr * d_grads[k].detach() for k in d_params}
            g_grads = grad(g_objective)(g_params, d_params, z[step])
            g_params = {k: g_params[k] - lr * g_grads[k].detach() for k in g_params}
        return g_params, d_params

    def _noise(self, shape: tuple[int, ...], like: torch.Tensor, rng: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """z [*shape, z_dim] then the penalty's interpolation weights [*shape] (drawn only when
        there is a penalty: zeros otherwise), from `rng` on the CPU, moved to like's device and
        dtype."""
        z = torch.randn(*shape, self.cfg.gan.z_dim, generator=rng).to(like)
        eps = (torch.rand(*shape, generator=rng) if self.gp_weight else torch.zeros(shape)
               ).to(like)
        return z, eps

    def adapt(self, images: torch.Tensor, steps: int, rng: torch.Generator,
              context: int | None = None) -> tuple[Params, Params]:
        """Adapted (G, D) weights per task for image sets [T, m, C, H, W] in [0, 1]: dicts of
        [T, ...]. Every task in one vmap; `context`: G's set is each task's first `context`
        images (gan.condition: set; None: all of them)."""
        t, m = images.shape[:2]
        z, eps = self._noise((t, steps, m), images, rng)
        g0 = {k: p.detach() for k, p in self.generator.named_parameters()}
        d0 = {k: p.detach() for k, p in self.discriminator.named_parameters()}
        if steps == 0:  # the unadapted pair, once per task
            return ({k: v.unsqueeze(0).expand(t, *v.shape) for k, v in g0.items()},
                    {k: v.unsqueeze(0).expand(t, *v.shape) for k, v in d0.items()})
        adapted: tuple[Params, Params] = vmap(
            lambda x, zz, ee: self._adapt_one(g0, d0, x, zz, ee, context))(images, z, eps)
        return adapted

    def _sample_signed(self, g_params: Params, n: int, rng: torch.Generator,
                       drawings: torch.Tensor) -> torch.Tensor:
        """n drawings per task in [-1, 1]: [T, n, C, H, W]; drawings [T, k, C, H, W] in [-1, 1]
        are each task's set (read under gan.condition: set)."""
        t = drawings.shape[0]
        z = torch.randn(t, n, self.cfg.gan.z_dim, generator=rng).to(drawings)
        images: torch.Tensor = vmap(self._generate)(g_params, z, drawings)
        return images

    def sample(self, g_params: Params, n: int, rng: torch.Generator,
               drawings: torch.Tensor | None = None) -> torch.Tensor:
        """n drawings per task from adapted generators: [T, n, C, H, W] in [0, 1]. drawings
        [T, k, C, H, W] in [0, 1]: each task's set, which G reads under gan.condition: set."""
        first = next(iter(g_params.values()))
        if drawings is None:
            if self.cfg.gan.condition == "set":
                raise ValueError("gan.condition set: sampling needs each task's drawings")
            drawings = first.new_zeros(first.shape[0], 1, 1, 1, 1)  # unread
        return to_unit(self._sample_signed(g_params, n, rng, to_signed(drawings)))

    # -- meta-training ------------------------------------------------------------------------------
    def _meta_phase(self, episode: Episode) -> PhaseOutput:
        gan = self.cfg.gan
        tasks = class_sets(episode)  # [T, shots+queries, C, H, W] in [0, 1]
        k = episode.shots  # G's set: a task's first k drawings (its support), as at meta-test
        if gan.meta_algorithm == "reptile":
            g_ad, d_ad = self.adapt(tasks, gan.inner_steps, self.noise, context=k)
            objective = (reptile_objective(dict(self.generator.named_parameters()), g_ad)
                         + reptile_objective(dict(self.discriminator.named_parameters()), d_ad))
            with torch.no_grad():
                real = to_signed(tasks)
                fake = self._sample_signed(g_ad, tasks.shape[1], self.noise, real[:, :k])
                d_fake = vmap(lambda p, x: self._critic(p)(x))(d_ad, fake)
                d_real = vmap(lambda p, x: self._critic(p)(x))(d_ad, real)
            return PhaseOutput(objective, {"d_loss": self.d_loss(d_real, d_fake),
                                           "g_loss": self.g_loss(d_fake)})
        # First-order MAML: adapt on the support drawings, then differentiate the GAN losses
        # on the query drawings at the adapted weights (first order: d(phi)/d(theta) = I).
        g_ad, d_ad = self.adapt(tasks[:, :k], gan.inner_steps, self.noise)
        g_theta = dict(self.generator.named_parameters())
        d_theta = dict(self.discriminator.named_parameters())
        g_phi = {n: g_theta[n] + (g_ad[n] - g_theta[n].detach()).detach() for n in g_theta}
        d_phi = {n: d_theta[n] + (d_ad[n] - d_theta[n].detach()).detach() for n in d_theta}
        support, query = to_signed(tasks[:, :k]), to_signed(tasks[:, k:])
        z, eps = self._noise(query.shape[:2], query, self.noise)

        def losses(gp: Params, dp: Params, x: torch.Tensor, s: torch.Tensor, zz: torch.Tensor,
                   w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            fake = self._generate(gp, zz, s)
            d_loss = self.critic_objective(dp, x, fake.detach(), w)
            g_loss = self.g_loss(self._critic({n: v.detach() for n, v in dp.items()})(fake))
            return d_loss, g_loss

        d_losses, g_losses = vmap(losses)(g_phi, d_phi, query, support, z, eps)
        d_loss, g_loss = d_losses.mean(), g_losses.mean()
        return PhaseOutput(d_loss + g_loss, {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()})

    def phases(self) -> list[Phase]:
        """One meta-update of G and D together."""
        g = self.cfg.gan
        return [Phase("meta", list(self.parameters()), self._meta_phase, betas=(g.beta1, g.beta2))]

    def adapt_and_sample(self, support: torch.Tensor, n: int, steps: int,
                         rng: torch.Generator) -> torch.Tensor:
        """Adapt to each set of drawings [T, k, C, H, W] for `steps`, then draw n: [T, n, ...]
        in [0, 1] (G's set, under gan.condition: set, is the support set)."""
        with torch.enable_grad():  # the inner loop differentiates the GAN losses
            g_ad, _ = self.adapt(support, steps, rng)
        with torch.no_grad():
            return self.sample({k: v.detach() for k, v in g_ad.items()}, n, rng, support)

    def generate_for(self, support: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        """n new drawings after gan.eval_adapt_steps of adaptation to support [k, C, H, W]."""
        return self.adapt_and_sample(support.unsqueeze(0), n, self.cfg.gan.eval_adapt_steps,
                                     rng)[0]
