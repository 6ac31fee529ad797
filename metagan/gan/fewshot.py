"""A meta-learned GAN for few-shot generation (FIGR, Clouatre & Demers 2019).

Generator and discriminator are meta-trained over tasks, a task being the drawings of one
character: each task adapts a copy of (G, D) with a few SGD steps of GAN training, and the
initialisation moves towards the adapted weights (Reptile) or along the first-order MAML
gradient. At meta-test time the pair adapts to k drawings of an unseen character and generates
new ones. The tasks of a meta-batch run together under torch.func.vmap.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from ..config import Config, ModelConfig
from ..data.episodes import Episode
from ..meta.base import MetaLearner, Method, Phase, PhaseOutput, register_method
from ..meta.reptile import reptile_objective
from ..models import Conv4
from .losses import LOSSES
from .nets import Discriminator, Generator, SeededNoise

Params = dict[str, torch.Tensor]
NOISE_SEED_OFFSET = 104_729


def class_sets(episode: Episode) -> torch.Tensor:
    """Every class of every task as one task of its drawings: [B*ways, shots+queries, 1, H, W]."""
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
    # Its one phase has betas but no lr (so the run's optim.lr); gp_weight is read to refuse a
    # penalty its inner loop does not have (config.validate).
    reads = frozenset({f"gan.{k}" for k in (
        "loss", "gp_weight", "z_dim", "width", "beta1", "beta2", "meta_algorithm", "inner_steps",
        "inner_lr", "eval_adapt_steps")})

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.train.seed + NOISE_SEED_OFFSET)
        g, size = cfg.gan, cfg.data.image_size
        self.cfg = cfg
        self.generator = Generator(z_dim=g.z_dim, width=g.width, image_size=size)
        self.discriminator = Discriminator(width=g.width, image_size=size)
        self.d_loss, self.g_loss = LOSSES[g.loss]

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        """G and D from the seeded RNG, after the draws of a meta-learner it does not use.

        Before methods declared whether they need a learner, the loop built the default conv4
        ProtoNet for this method too and never used it; drawing (and dropping) the same initial
        weights first keeps every seed's G and D bit-identical to those runs, and to the
        figures in BENCHMARKS.md.
        """
        m = ModelConfig()
        Conv4(1, m.hidden, m.depth, cfg.data.image_size, None, m.downsample)
        return cls(cfg)

    # -- the inner loop: a pure function of weights, images and noise -----------------------------
    def _adapt_one(self, g_params: Params, d_params: Params, images: torch.Tensor,
                   z: torch.Tensor) -> tuple[Params, Params]:
        """SGD on one task's GAN losses: images [m, 1, H, W], z [steps, m, z_dim]."""
        lr = self.cfg.gan.inner_lr
        G, D = self.generator, self.discriminator

        def d_objective(dp: Params, gp: Params, zs: torch.Tensor) -> torch.Tensor:
            fake = functional_call(G, gp, (zs,)).detach()
            return self.d_loss(functional_call(D, dp, (images,)), functional_call(D, dp, (fake,)))

        def g_objective(gp: Params, dp: Params, zs: torch.Tensor) -> torch.Tensor:
            return self.g_loss(functional_call(D, dp, (functional_call(G, gp, (zs,)),)))

        for step in range(z.shape[0]):
            d_grads = grad(d_objective)(d_params, g_params, z[step])
            d_params = {k: d_params[k] - lr * d_grads[k].detach() for k in d_params}
            g_grads = grad(g_objective)(g_params, d_params, z[step])
            g_params = {k: g_params[k] - lr * g_grads[k].detach() for k in g_params}
        return g_params, d_params

    def adapt(self, images: torch.Tensor, steps: int, rng: torch.Generator
              ) -> tuple[Params, Params]:
        """Adapted (G, D) weights per task for image sets [T, m, 1, H, W]: dicts of [T, ...]."""
        t, m = images.shape[:2]
        z = torch.randn(t, steps, m, self.cfg.gan.z_dim, generator=rng).to(images.device)
        g0 = {k: p.detach() for k, p in self.generator.named_parameters()}
        d0 = {k: p.detach() for k, p in self.discriminator.named_parameters()}
        if steps == 0:  # the unadapted pair, once per task
            return ({k: v.unsqueeze(0).expand(t, *v.shape) for k, v in g0.items()},
                    {k: v.unsqueeze(0).expand(t, *v.shape) for k, v in d0.items()})
        return vmap(lambda x, zz: self._adapt_one(g0, d0, x, zz))(images, z)

    def sample(self, g_params: Params, n: int, rng: torch.Generator) -> torch.Tensor:
        """n drawings per task from adapted generators: [T, n, 1, H, W]."""
        t = next(iter(g_params.values())).shape[0]
        z = torch.randn(t, n, self.cfg.gan.z_dim, generator=rng).to(
            next(iter(g_params.values())).device)
        images: torch.Tensor = vmap(lambda p, zz: functional_call(self.generator, p, (zz,)))(
            g_params, z)
        return images

    # -- meta-training ------------------------------------------------------------------------------
    def _meta_phase(self, episode: Episode) -> PhaseOutput:
        gan = self.cfg.gan
        tasks = class_sets(episode)  # [T, shots+queries, 1, H, W]
        if gan.meta_algorithm == "reptile":
            g_ad, d_ad = self.adapt(tasks, gan.inner_steps, self.noise)
            objective = (reptile_objective(dict(self.generator.named_parameters()), g_ad)
                         + reptile_objective(dict(self.discriminator.named_parameters()), d_ad))
            with torch.no_grad():
                fake = self.sample(g_ad, tasks.shape[1], self.noise)
                d_fake = vmap(lambda p, x: functional_call(self.discriminator, p, (x,)))(d_ad, fake)
                d_real = vmap(lambda p, x: functional_call(self.discriminator, p, (x,)))(d_ad, tasks)
            return PhaseOutput(objective, {"d_loss": self.d_loss(d_real, d_fake),
                                           "g_loss": self.g_loss(d_fake)})
        # First-order MAML: adapt on the support drawings, then differentiate the GAN losses
        # on the query drawings at the adapted weights (first order: d(phi)/d(theta) = I).
        k = episode.shots
        g_ad, d_ad = self.adapt(tasks[:, :k], gan.inner_steps, self.noise)
        g_theta = dict(self.generator.named_parameters())
        d_theta = dict(self.discriminator.named_parameters())
        g_phi = {n: g_theta[n] + (g_ad[n] - g_theta[n].detach()).detach() for n in g_theta}
        d_phi = {n: d_theta[n] + (d_ad[n] - d_theta[n].detach()).detach() for n in d_theta}
        query = tasks[:, k:]
        z = torch.randn(*query.shape[:2], gan.z_dim, generator=self.noise).to(query.device)

        def losses(gp: Params, dp: Params, x: torch.Tensor, zz: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            fake = functional_call(self.generator, gp, (zz,))
            dp_fixed = {n: v.detach() for n, v in dp.items()}
            d_loss = self.d_loss(functional_call(self.discriminator, dp, (x,)),
                                 functional_call(self.discriminator, dp, (fake.detach(),)))
            g_loss = self.g_loss(functional_call(self.discriminator, dp_fixed, (fake,)))
            return d_loss, g_loss

        d_losses, g_losses = vmap(losses)(g_phi, d_phi, query, z)
        d_loss, g_loss = d_losses.mean(), g_losses.mean()
        return PhaseOutput(d_loss + g_loss, {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()})

    def phases(self) -> list[Phase]:
        """One meta-update of G and D together."""
        g = self.cfg.gan
        return [Phase("meta", list(self.parameters()), self._meta_phase, betas=(g.beta1, g.beta2))]

    def adapt_and_sample(self, support: torch.Tensor, n: int, steps: int,
                         rng: torch.Generator) -> torch.Tensor:
        """Adapt to each set of drawings [T, k, 1, H, W] for `steps`, then draw n: [T, n, ...]."""
        with torch.enable_grad():  # the inner loop differentiates the GAN losses
            g_ad, _ = self.adapt(support, steps, rng)
        with torch.no_grad():
            return self.sample({k: v.detach() for k, v in g_ad.items()}, n, rng)

    def generate_for(self, support: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        """n new drawings after gan.eval_adapt_steps of adaptation to support [k, 1, H, W]."""
        return self.adapt_and_sample(support.unsqueeze(0), n, self.cfg.gan.eval_adapt_steps,
                                     rng)[0]

