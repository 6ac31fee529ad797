"""DAGAN-style augmentation (Antoniou, Storkey & Edwards 2017): a GAN that turns a real drawing
into another plausible drawing of the same character, used to enlarge every support set the
meta-learner sees.

The GAN (gan/pretrained.py: a UResNet G from the source drawing with noise injected in its
decoder, a DenseNet-style critic on (source, drawing) pairs, WGAN-GP in configs/dagan.yaml) is
pre-trained once per (data, GAN settings, seed), outside the episode loop's iterations, and
loaded from the cache by every run that shares that key. The loop's iterations are then all
meta-learner updates (ASHA compares trials at equal meta-learner updates); with
`gan.schedule: alternate` G and D keep training beside the meta-learner, D every iteration and
G every `gan.critic_steps`-th (Phase.active).

How the fakes enter an episode: `gan.augment` per real support image, after the real ones
(0: none, and the method is its plain learner exactly); they never give batch-norm statistics
(support mode: `context` = the real support images); `gan.fake_weight` weighs each fake against
a real image: ProtoNet's prototypes are weighted means, MAML's and FOMAML's inner-loop loss a
weighted cross-entropy. Reptile meta-trains on a joint support+query objective that has no
support-set loss to weight, so config validation refuses a fake_weight other than 1 with it.

Beyond the paper: `gan.mismatch_weight` makes the critic matching-aware, `gan.class_weight`
and `gan.diversity_weight` add a class-keeping and a mode-seeking term to G's objective
(gan/pretrained.py), and
`gan.generator: affine` draws each fake as its source under random affine jitter instead of
from G: no GAN at all, the control whose fakes keep their class by construction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..config import Config, ConfigError
from ..data import Splits
from ..data.episodes import Episode, random_affine
from ..data.preprocess import jitter_padding
from ..meta.base import (
    MetaLearner,
    Method,
    Phase,
    PhaseOutput,
    accuracy,
    register_method,
    required_learner,
    task_cross_entropy,
)
from ..meta.maml import MAML, Params
from ..meta.protonet import ProtoNet, squared_distance_logits
from ..meta.reptile import Reptile
from ..models import Statistics, context_statistics
from .evaluation import evaluate_generation
from .nets import SeededNoise, per_set
from .pretrained import CLASSIFIER_BETAS, CLASSIFIER_LR, PairGan, pretrained_state
from .uresnet import UResNetGenerator

NOISE_SEED_OFFSET = 7_919
PairGenerator = UResNetGenerator  # DAGAN's generator under its older name


def first_of_each_class(x: torch.Tensor, y: torch.Tensor, ways: int) -> torch.Tensor:
    """The first image of every class in each task: x [B, n, ...], y [B, n] -> [B, ways, ...]."""
    match = y.unsqueeze(1) == torch.arange(ways, device=y.device).view(1, ways, 1)  # [B, ways, n]
    index = match.float().argmax(-1)  # [B, ways]
    return torch.gather(x, 1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(
        -1, -1, *x.shape[2:]))


# -- weighted support sets ------------------------------------------------------------------------
def support_weights(real: int, fakes: int, fake_weight: float, device: torch.device
                    ) -> torch.Tensor:
    """[real + fakes]: 1 for each real support image (they lead), fake_weight for each fake."""
    return torch.cat([torch.ones(real, device=device),
                      torch.full((fakes,), fake_weight, device=device)])


def weighted_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                        ways: int) -> torch.Tensor:
    """Weighted class means: embeddings [n, D], labels [n], weights [n] -> [ways, D]."""
    onehot = F.one_hot(labels, ways).to(embeddings.dtype) * weights.unsqueeze(1)  # [n, ways]
    return (onehot.T @ embeddings) / onehot.sum(0).unsqueeze(1)


def weighted_protonet_logits(learner: ProtoNet, adapted: Any, query_x: torch.Tensor,
                             weights: torch.Tensor) -> torch.Tensor:
    """ProtoNet's query logits [B, m, ways] with weighted-mean prototypes; `adapted` is
    learner.adapt's state (so batch norm takes the statistics it chose)."""
    support_x, support_y, ways, rows = adapted
    params: dict[str, torch.Tensor] = dict(learner.model.named_parameters())
    n = support_x.shape[1]

    def one_task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
        z = learner.call_model(params, torch.cat([sx, qx]), rows)
        return squared_distance_logits(z[n:], weighted_prototypes(z[:n], sy, weights, ways))

    logits: torch.Tensor = vmap(one_task)(support_x, support_y, query_x)
    return logits


def weighted_sgd_adapt(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                       weights: torch.Tensor, lr: float, steps: int, first_order: bool,
                       rows: Statistics) -> Params:
    """maml.sgd_adapt with the cross-entropy of each image weighted: sum w_i CE_i / sum w_i."""

    def loss(p: Params) -> torch.Tensor:
        with context_statistics(model, rows):
            logits = functional_call(model, p, (x,))
        per_image = F.cross_entropy(logits, y, reduction="none")
        return (weights * per_image).sum() / weights.sum()

    for _ in range(steps):
        grads = grad(loss)(params)
        params = {k: params[k] - lr * (grads[k].detach() if first_order else grads[k])
                  for k in params}
    return params


def weighted_maml_adapt(learner: MAML, support_x: torch.Tensor, support_y: torch.Tensor,
                        weights: torch.Tensor, steps: int | None, context: int | None) -> Any:
    """MAML.adapt with a weighted inner-loop loss: the same adapted state (fast weights, support
    set, statistics rows), for learner.predict."""
    params: Params = dict(learner.model.named_parameters())
    steps = steps or learner.cfg.inner_steps
    rows = learner.statistics_rows(support_x.shape[1], context)

    def one_task(x: torch.Tensor, y: torch.Tensor) -> Params:
        return weighted_sgd_adapt(learner.model, params, x, y, weights, learner.cfg.inner_lr,
                                  steps, learner.first_order, rows)

    fast: Params = vmap(one_task, randomness="same")(support_x, support_y)
    return fast, support_x, rows


def weighs_fakes(learner: MetaLearner) -> bool:
    """Whether `learner` can weigh generated support images (ProtoNet, MAML, FOMAML)."""
    return isinstance(learner, ProtoNet) or (isinstance(learner, MAML)
                                             and not isinstance(learner, Reptile))


# -- the method -------------------------------------------------------------------------------------
@register_method("dagan")
class DaganAugmented(SeededNoise, Method):
    """A meta-learner whose support sets are augmented by a pre-trained DAGAN generator."""

    samples = True
    reads = frozenset({f"gan.{k}" for k in (
        "loss", "gp_weight", "z_dim", "width", "spectral_norm", "ema", "g_lr", "d_lr", "beta1",
        "beta2", "augment", "fake_weight", "pretrain_steps", "critic_steps", "schedule",
        "augment_at_test", "residual", "mismatch_weight", "class_weight", "diversity_weight",
        "generator")})

    def __init__(self, cfg: Config, learner: MetaLearner) -> None:
        super().__init__(cfg.train.seed + NOISE_SEED_OFFSET)
        self.cfg, self.learner = cfg, learner
        self.gan = PairGan(cfg)
        # Whether G and D hold the pre-trained weights (or later ones): saved with them, so a
        # restored run never pre-trains or loads again.
        self.gan_ready: torch.Tensor
        self.register_buffer("gan_ready", torch.zeros((), dtype=torch.bool))
        self.pretraining: dict[str, Any] = {}  # the pre-training's summary, once loaded

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        """The learner, then G and D (replaced by the pre-trained ones before first use)."""
        learner = required_learner(learner, cfg)
        if cfg.gan.fake_weight != 1.0 and not weighs_fakes(learner):
            raise ConfigError(f"gan.fake_weight: {type(learner).__name__} cannot weigh generated "
                              "support images (protonet, maml and fomaml can); use 1.0")
        return cls(cfg, learner)

    @property
    def generator(self) -> nn.Module:
        """G (trained)."""
        return self.gan.generator

    @property
    def discriminator(self) -> nn.Module:
        """D, the critic of pairs."""
        return self.gan.discriminator

    # -- pre-training -------------------------------------------------------------------------
    def ensure_pretrained(self) -> None:
        """Load (or, the first time for its key, train and store) the pre-trained G and D on
        this method's device; once per run, before the first use of G or D (never with
        gan.generator affine, which uses neither)."""
        if bool(self.gan_ready) or self.cfg.gan.generator == "affine":
            return
        state = pretrained_state(self.cfg, None, self.gan_ready.device)
        self.gan.load_state_dict(state["gan"])
        self.pretraining = dict(state["summary"])
        self.gan_ready.fill_(True)

    # -- sampling -----------------------------------------------------------------------------
    def draw(self, source: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """One fake per source drawing [n, C, H, W]: G's (its EMA's) with noise from `rng`, or
        with gan.generator affine the drawing under a random affine jitter drawn from `rng`."""
        if self.cfg.gan.generator == "affine":
            return random_affine(source, rng, padding=jitter_padding(self.cfg.data.source))
        self.ensure_pretrained()
        fake: torch.Tensor = self.gan.sampler_net(source, self.gan.z(source.shape[0], rng,
                                                                      source.device))
        return fake

    @torch.no_grad()
    def augment(self, episode: Episode, rng: torch.Generator) -> Episode:
        """The episode with `gan.augment` generated samples per real support sample appended
        after the real ones (unchanged when gan.augment is 0)."""
        m = self.cfg.gan.augment
        if m == 0:
            return episode
        b, n = episode.support_y.shape
        source = episode.support_x.repeat_interleave(m, dim=1).flatten(0, 1)  # [B*n*m, C, H, W]
        fake = self.draw(source, rng).view(b, n * m, *episode.support_x.shape[2:])
        return replace(episode,
                       support_x=torch.cat([episode.support_x, fake], dim=1),
                       support_y=torch.cat([episode.support_y,
                                            episode.support_y.repeat_interleave(m, dim=1)], dim=1),
                       shots=episode.shots * (1 + m))

    @torch.no_grad()
    def generate_for(self, support: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
        """n new drawings of the character in support [k, C, H, W], sample i generated from
        drawing i mod k (DAGAN transforms one source drawing)."""
        return self.draw(support[torch.arange(n) % support.shape[0]], rng)

    def adapt_and_sample(self, support: torch.Tensor, n: int, steps: int,
                         rng: torch.Generator) -> torch.Tensor:
        """generate_for each set [T, k, C, H, W] (G does not adapt: `steps` is unused)."""
        return per_set(self.generate_for, support, n, rng)

    # -- classification -----------------------------------------------------------------------
    def _weighted_logits(self, episode: Episode, real: int, steps: int | None) -> torch.Tensor:
        """Query logits after adapting to a support set whose images after the first `real`
        are generated, each weighted by gan.fake_weight."""
        n = episode.support_x.shape[1]
        w = support_weights(real, n - real, self.cfg.gan.fake_weight, episode.support_x.device)
        learner = self.learner
        if isinstance(learner, ProtoNet):
            adapted = learner.adapt(episode.support_x, episode.support_y, episode.ways, steps,
                                    context=real)
            return weighted_protonet_logits(learner, adapted, episode.query_x, w)
        if isinstance(learner, MAML) and weighs_fakes(learner):
            adapted = weighted_maml_adapt(learner, episode.support_x, episode.support_y, w,
                                          steps, context=real)
            logits: torch.Tensor = learner.predict(adapted, episode.query_x)
            return logits
        raise ConfigError(f"gan.fake_weight: {type(learner).__name__} cannot weigh generated "
                          "support images")

    def _weighs(self, episode: Episode, real: int) -> bool:
        return self.cfg.gan.fake_weight != 1.0 and episode.support_x.shape[1] > real

    def task_logits(self, episode: Episode, rng: torch.Generator | None = None) -> torch.Tensor:
        """Query logits, with the support sets augmented too when gan.augment_at_test
        (batch-norm statistics from the real support images in support mode, as in training)."""
        real = episode.support_x.shape[1]
        if self.cfg.gan.augment_at_test:
            episode = self.augment(episode, rng if rng is not None else self.noise)
        if not self._weighs(episode, real):
            logits: torch.Tensor = self.learner.task_logits(episode, context=real)
            return logits
        meta = self.learner.cfg
        return self._weighted_logits(episode, real, meta.eval_inner_steps or meta.inner_steps)

    # -- phases -------------------------------------------------------------------------------
    def _pairs(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, target) real drawings of the same class, [B*ways, C, H, W] each."""
        source = first_of_each_class(episode.support_x, episode.support_y, episode.ways)
        target = first_of_each_class(episode.query_x, episode.query_y, episode.ways)
        return source.flatten(0, 1), target.flatten(0, 1)

    def _d_phase(self, episode: Episode) -> PhaseOutput:
        self.ensure_pretrained()
        return self.gan.critic_loss(*self._pairs(episode), self.noise)

    def _g_phase(self, episode: Episode) -> PhaseOutput:
        self.ensure_pretrained()
        source, target = self._pairs(episode)
        return self.gan.generator_loss(source, self.noise, target, groups=episode.num_tasks)

    def _e_phase(self, episode: Episode) -> PhaseOutput:
        self.ensure_pretrained()
        return self.gan.classifier_loss(*self._pairs(episode), groups=episode.num_tasks)

    def _meta_phase(self, episode: Episode) -> PhaseOutput:
        # The real support images lead the augmented support set; in the learner's support
        # batch-norm mode only they give the statistics (the generated ones do not).
        real = episode.support_x.shape[1]
        augmented = self.augment(episode, self.noise)
        if not self._weighs(augmented, real):
            return self.learner.meta_loss(augmented, context=real)
        logits = self._weighted_logits(augmented, real, None)
        loss = task_cross_entropy(logits, augmented.query_y)
        return PhaseOutput(loss, {"loss": loss.detach(),
                                  "accuracy": accuracy(logits, augmented.query_y)})

    def phases(self) -> list[Phase]:
        """Per iteration: with gan.schedule alternate, a D update and, every critic_steps-th
        iteration, a G update (after the pre-training, which is no loop iteration); then the
        meta-learner's update on the augmented episode. With frozen, D and G never update here
        (they stay listed, so the metrics and optimisers are named alike in both schedules)."""
        g = self.cfg.gan
        betas = (g.beta1, g.beta2)
        k = g.critic_steps

        def d_active(it: int) -> bool:
            return g.schedule == "alternate"

        def g_active(it: int) -> bool:
            return g.schedule == "alternate" and it % k == k - 1

        # With gan.class_weight, E (the class-keeping term's embedding) learns beside D.
        e = ([Phase("E", list(self.gan.classifier.parameters()), self._e_phase, CLASSIFIER_LR,
                    CLASSIFIER_BETAS, d_active)] if self.gan.classifier is not None else [])
        return [
            Phase("D", list(self.gan.discriminator.parameters()), self._d_phase, g.d_lr, betas,
                  d_active),
            *e,
            Phase("G", list(self.gan.generator.parameters()), self._g_phase, g.g_lr, betas,
                  g_active, self.gan.update_ema),
            Phase("meta", list(self.learner.parameters()), self._meta_phase),
        ]


def sample_metrics(method: DaganAugmented, splits: Splits, split: str = "test",
                   characters: int = 20, seed: int = 0, embed: nn.Module | None = None
                   ) -> dict[str, float]:
    """How faithful DAGAN's samples are to their source character: the per-character metrics of
    gan/evaluation.py (KID, Frechet distance, fidelity, novelty, precision, recall, ...) of n
    samples per held-out character, each generated from one of its gan.eval_shots support
    drawings (adapt_and_sample), against held-out drawings of that character. `embed`: the
    metric embedding (default: evaluation.metric_embedding, trained once and cached)."""
    device = method.gan_ready.device
    rng = torch.Generator().manual_seed(seed + 1)
    return evaluate_generation(method.cfg, splits,
                               lambda s, n: method.adapt_and_sample(s, n, 0, rng),
                               split, characters=characters, seed=seed, device=device,
                               embed=embed)
