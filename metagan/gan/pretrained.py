"""DAGAN's GAN (G, D on pairs, optional EMA of G), its pre-training, and the stored result.

Pre-training trains the pair GAN alone on meta-train pairs (two drawings of one class), for
`gan.pretrain_steps` G updates, each after `gan.critic_steps` D updates on fresh pairs (WGAN-GP's
recipe; the DAGAN code uses 5 critic iterations and 32 pairs a batch). It depends only on the data,
the gan keys that shape it (PRETRAIN_KEYS) and train.seed: G and D start from their own seed,
the pairs and noise come from their own generators. So it runs once per such key and is stored
in the cache directory (data.cache_dir, else the default one) as `dagan/<key>.pt`, written
atomically under a lock; every later run with the key loads it (torch.load, weights_only).

The meta-learner, the task shape and the augmentation keys (augment, fake_weight, schedule,
augment_at_test) are not in the key: trials differing only in them share one pre-trained GAN.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import Config, OptimConfig
from ..data import ImageSet, load_splits
from ..data.episodes import Episode, TaskSampler
from ..data.images import cache_root
from ..data.preprocess import data_key, jitter_padding
from ..locks import locked
from ..meta.base import Phase, PhaseOutput, make_optimizer, update_phase
from .losses import LOSSES, gradient_penalty
from .uresnet import CharacterEmbedding, PairCritic, UResNetGenerator

# Bump when the networks or the pre-training recipe change: stored GANs of another version are
# never loaded (their key differs).
VERSION = "uresnet-1"
PAIRS = 32  # (source, target) pairs per pre-training batch, as in the DAGAN code
PRETRAIN_SEED_OFFSET = 104_729  # G/D initialisation, pair sampling and noise of pre-training
PRETRAIN_KEYS = ("loss", "gp_weight", "z_dim", "width", "spectral_norm", "ema", "g_lr", "d_lr",
                 "beta1", "beta2", "pretrain_steps", "critic_steps", "residual",
                 "mismatch_weight", "class_weight", "diversity_weight")
# Beyond the paper; while off they stay out of the key, so GANs stored before them stay valid.
OPTIONS = ("residual", "mismatch_weight", "class_weight", "diversity_weight")
# The character embedding of gan.class_weight learns as a ProtoNet does (Adam 1e-3), not at the
# GAN's rates: it must tell characters apart from the first G updates on.
CLASSIFIER_LR = 1e-3
CLASSIFIER_BETAS = (0.9, 0.999)
MODE_SEEKING_EPS = 1e-5  # as in the MSGAN code


class PairGan(nn.Module):
    """G (UResNet) from a source drawing, D (critic) on (source, drawing) pairs, G's EMA and,
    with gan.class_weight > 0, the character embedding E of G's class-keeping term."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        g = cfg.gan
        self.cfg = cfg
        channels = cfg.data.channels
        self.generator = UResNetGenerator(g.z_dim, g.width, cfg.data.image_size,
                                          image_channels=channels, residual=g.residual)
        self.discriminator = PairCritic(g.width, image_channels=2 * channels,
                                        spectral=g.spectral_norm)
        # get_ema_multi_avg_fn is unannotated in torch; it returns the EMA update function.
        self.ema = (AveragedModel(self.generator,
                                  multi_avg_fn=get_ema_multi_avg_fn(g.ema),  # type: ignore[no-untyped-call]
                                  use_buffers=True) if g.ema > 0 else None)
        self.d_loss, self.g_loss = LOSSES[g.loss]
        # Only with the option, so GANs stored without it load as they were.
        self.classifier = (CharacterEmbedding(2 * g.width, channels) if g.class_weight > 0
                           else None)

    @property
    def sampler_net(self) -> nn.Module:
        """The generator that draws augmentations: the EMA of G's weights when gan.ema > 0."""
        return self.ema.module if self.ema is not None else self.generator

    def z(self, n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
        """Noise [n, z_dim], drawn on the CPU from `rng` (the same on every device)."""
        return torch.randn(n, self.cfg.gan.z_dim, generator=rng).to(device)

    def critic_loss(self, source: torch.Tensor, target: torch.Tensor, rng: torch.Generator
                    ) -> PhaseOutput:
        """D's objective on real pairs (source, target) against (source, G(source, z)) and,
        with gan.mismatch_weight w > 0, against (source, another pair's target) too:
        (1 - w) loss(real, fake) + w loss(real, mismatched). The mismatched targets are the
        batch's targets shifted by one, drawings of other characters when the batch's pairs
        are of distinct characters (as pre-training draws them)."""
        g = self.cfg.gan
        with torch.no_grad():
            fake = self.generator(source, self.z(source.shape[0], rng, source.device))
        real_pair, fake_pair = torch.cat([source, target], 1), torch.cat([source, fake], 1)
        real_s, fake_s = self.discriminator(real_pair), self.discriminator(fake_pair)
        loss = self.d_loss(real_s, fake_s)
        extra = {}
        if g.mismatch_weight > 0:
            other_s = self.discriminator(torch.cat([source, target.roll(1, dims=0)], 1))
            loss = (1 - g.mismatch_weight) * loss + g.mismatch_weight * self.d_loss(real_s, other_s)
            extra["mismatch_score"] = other_s.mean().detach()
        metrics = {"loss": loss.detach(), "real_score": real_s.mean().detach(),
                   "fake_score": fake_s.mean().detach(), **extra}
        if g.loss == "wasserstein" and g.gp_weight > 0:
            # As the DAGAN code: the penalty on D's gradient in the drawing, between the real
            # target and the fake, the source held fixed.
            w = torch.rand(source.shape[0], generator=rng).to(source.device)
            gp = gradient_penalty(lambda x: self.discriminator(torch.cat([source, x], 1)),
                                  target, fake, w)
            loss = loss + g.gp_weight * gp
            metrics["gradient_penalty"] = gp.detach()
        return PhaseOutput(loss, metrics)

    def class_logits(self, drawings: torch.Tensor, references: torch.Tensor, groups: int
                     ) -> torch.Tensor:
        """[groups, k, k]: minus the squared distance in E between drawing i and reference j of
        each group of k (drawings and references [groups * k, C, S, S], the k of a group of
        distinct characters, drawing i of reference i's character)."""
        assert self.classifier is not None
        e_drawings = self.classifier(drawings).unflatten(0, (groups, -1))
        e_references = self.classifier(references).unflatten(0, (groups, -1))
        logits: torch.Tensor = -(e_drawings.unsqueeze(2) - e_references.unsqueeze(1)).pow(2).sum(-1)
        return logits

    def class_loss(self, drawings: torch.Tensor, references: torch.Tensor, groups: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, accuracy) of recognising each drawing's character among its group's
        references by the nearest one in E (a one-shot ProtoNet task per group)."""
        logits = self.class_logits(drawings, references, groups)
        labels = torch.arange(logits.shape[1], device=logits.device).expand(groups, -1)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return loss, (logits.argmax(-1) == labels).float().mean()

    def classifier_loss(self, source: torch.Tensor, target: torch.Tensor, groups: int = 1
                        ) -> PhaseOutput:
        """E's objective, on real drawings only: each target recognised among its group's
        sources (E never sees G's fakes, so G cannot teach it to accept them)."""
        loss, acc = self.class_loss(target, source, groups)
        return PhaseOutput(loss, {"loss": loss.detach(), "accuracy": acc.detach()})

    def generator_loss(self, source: torch.Tensor, rng: torch.Generator, target: torch.Tensor |
                       None = None, groups: int = 1) -> PhaseOutput:
        """G's objective: D's judgement of (source, G(source, z)); with gan.class_weight w > 0,
        plus w times the cross-entropy of recognising each fake's character, in E, among its
        group's real targets (other drawings of the sources' characters); with
        gan.diversity_weight v > 0, plus v / (mean |G(source, z) - G(source, z2)| / mean
        |z - z2| + 1e-5) for a second noise draw z2 (MSGAN's mode-seeking term)."""
        z = self.z(source.shape[0], rng, source.device)
        fake = self.generator(source, z)
        loss = self.g_loss(self.discriminator(torch.cat([source, fake], 1)))
        metrics = {"loss": loss.detach()}
        v = self.cfg.gan.diversity_weight
        if v > 0:
            z2 = self.z(source.shape[0], rng, source.device)
            spread = (fake - self.generator(source, z2)).abs().mean() / (z - z2).abs().mean()
            loss = loss + v / (spread + MODE_SEEKING_EPS)
            metrics["spread"] = spread.detach()
        w = self.cfg.gan.class_weight
        if w > 0:
            if target is None:
                raise ValueError("gan.class_weight: G's class-keeping term needs the targets")
            keep, acc = self.class_loss(fake, target, groups)
            loss = loss + w * keep
            metrics.update(class_loss=keep.detach(), class_accuracy=acc.detach())
        metrics["loss"] = loss.detach()
        return PhaseOutput(loss, metrics)

    def update_ema(self) -> None:
        """Move the EMA towards G's current weights (after each G update)."""
        if self.ema is not None:
            self.ema.update_parameters(self.generator)


def pretrain_key(cfg: Config) -> str:
    """The hash of everything pre-training depends on."""
    g = cfg.gan
    gan = {k: getattr(g, k) for k in PRETRAIN_KEYS}
    if g.loss != "wasserstein":
        gan["gp_weight"] = 0.0  # unused
    for option in OPTIONS:
        if not gan[option]:
            del gan[option]
    data = {k: v for k, v in data_key(cfg.data).items() if k != "cache_dir"}  # where, not what
    blob = {"version": VERSION, "data": data, "gan": gan, "seed": cfg.train.seed}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def artefact_path(cfg: Config, cache_dir: Path | None = None) -> Path:
    """Where the pre-trained GAN of `cfg` is stored."""
    root = cache_dir or cache_root(cfg.data.cache_dir)
    return root / "dagan" / f"{VERSION}-{pretrain_key(cfg)}.pt"


def initial_gan(cfg: Config, device: torch.device) -> PairGan:
    """The untrained pair GAN of pre-training, drawn from its own seed (torch's global RNG is
    left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed + PRETRAIN_SEED_OFFSET)
        return PairGan(cfg).to(device)


def pair_batch(episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) [PAIRS, C, S, S] of a one-task, one-shot, one-query episode: class i's
    support and query drawings."""
    return episode.support_x[0], episode.query_x[0]


def train_gan(cfg: Config, train: ImageSet, device: torch.device) -> tuple[PairGan, dict[str, Any]]:
    """Pre-train the pair GAN of `cfg` on meta-train drawings; returns it and a summary."""
    g = cfg.gan
    gan = initial_gan(cfg, device)
    seed = cfg.train.seed + PRETRAIN_SEED_OFFSET
    pairs = TaskSampler(train, min(PAIRS, train.num_classes), 1, 1, seed, device,
                        cfg.data.affine_augment, jitter_padding(cfg.data.source))
    noise = torch.Generator().manual_seed(seed + 1)  # a stream apart from the pairs'
    betas = (g.beta1, g.beta2)
    d = Phase("D", list(gan.discriminator.parameters()),
              lambda ep: gan.critic_loss(*pair_batch(ep), noise), g.d_lr, betas)

    def g_loss(episode: Episode) -> PhaseOutput:
        source, target = pair_batch(episode)
        return gan.generator_loss(source, noise, target)

    gen = Phase("G", list(gan.generator.parameters()), g_loss, g.g_lr, betas,
                after_step=gan.update_ema)
    # GAN-only optimisers: no weight decay, no clipping (the run's optim section is the
    # meta-learner's).
    plain = OptimConfig()
    d_opt, g_opt = make_optimizer(d, plain), make_optimizer(gen, plain)
    e = (Phase("E", list(gan.classifier.parameters()),
               lambda ep: gan.classifier_loss(*pair_batch(ep)), CLASSIFIER_LR, CLASSIFIER_BETAS)
         if gan.classifier is not None else None)
    e_opt = make_optimizer(e, plain) if e is not None else None
    e_metrics: dict[str, float] = {}
    start = time.perf_counter()
    d_metrics: dict[str, float] = {}
    g_metrics: dict[str, float] = {}
    gan.train()
    with torch.enable_grad():
        for step in range(g.pretrain_steps):
            for _ in range(g.critic_steps):
                batch = pairs.sample(1)
                d_metrics = update_phase(d, d_opt, batch, g.d_lr, 0.0, step)
                if e is not None and e_opt is not None:  # E learns from the critic's pairs
                    e_metrics = update_phase(e, e_opt, batch, CLASSIFIER_LR, 0.0, step)
            g_metrics = update_phase(gen, g_opt, pairs.sample(1), g.g_lr, 0.0, step)
    for p in gan.parameters():
        p.grad = None
    summary = {"steps": g.pretrain_steps, "critic_steps": g.critic_steps,
               "seconds": time.perf_counter() - start,
               **{f"D/{k}": v for k, v in d_metrics.items()},
               **{f"G/{k}": v for k, v in g_metrics.items()},
               **{f"E/{k}": v for k, v in e_metrics.items()}}
    return gan, summary


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """torch.save to a private temporary file, then rename over `path`."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def pretrained_state(cfg: Config, train: ImageSet | None, device: torch.device,
                     cache_dir: Path | None = None) -> dict[str, Any]:
    """The pre-trained pair GAN of `cfg` as {"gan": state_dict, "summary": {...}, "key": ...}:
    loaded when stored, else trained (on `train`, or meta-train of cfg.data when None) and
    stored. With gan.pretrain_steps 0 it is the untrained GAN of the key's seed (not stored)."""
    if cfg.gan.pretrain_steps == 0:
        return {"gan": initial_gan(cfg, device).state_dict(), "summary": {"steps": 0},
                "key": pretrain_key(cfg)}

    def build() -> dict[str, Any]:
        images = train if train is not None else load_splits(cfg.data).train  # read only to train
        gan, summary = train_gan(cfg, images, device)
        return {"gan": gan.state_dict(), "summary": summary, "key": pretrain_key(cfg)}

    return stored_state(artefact_path(cfg, cache_dir), build, device)


def stored_state(path: Path, build: Callable[[], dict[str, Any]],
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state stored at `path` (loaded with weights_only=True), else `build()`'s, stored there
    atomically; concurrent callers of one path build it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        if path.is_file():
            state: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
            return state
        state = build()
        save_atomically(state, path)
        return state
