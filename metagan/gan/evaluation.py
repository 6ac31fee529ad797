"""How generation is measured: a metric embedding trained on meta-train classes only, and
per-character metrics (metrics.py: KID, Frechet distance, fidelity, novelty, precision, recall,
coverage) on held-out characters, beside the same metrics for real drawings.

Sizes, the same for every compared row: each of T held-out characters (20 by default) gives
k = gan.eval_shots support drawings to the generator, n samples are drawn, and they are scored
against n held-out real drawings of that character; the real baseline scores n other held-out
drawings in their place. n is the most that fits, (drawings per character - k) // 2: Omniglot
has 20 drawings per character, so k = 5 gives n = 7 (5 + 7 + 7 of the 20).

Inception-based FID needs ImageNet weights this machine cannot download, and an ImageNet
network says little about pen strokes anyway; the embedding here is a conv4 ProtoNet trained
once (fixed seed) on the meta-train alphabets and cached by its config's hash. Users who have
Inception weights can pass any TorchScript feature extractor as gan.feature_model.

The embedding is made by its own step (`metric_embedding`, which trains it with the same phase
update as the episode loop) and passed to the scoring functions, so this module never needs the
loop that evaluates with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, ConfigError, build_config, to_dict
from ..data import ImageSet, Splits
from ..data.episodes import TaskSampler
from ..data.images import cache_root, channels_first
from ..data.preprocess import data_key, jitter_padding
from ..meta import REGISTRY, MetaLearner
from ..meta.base import make_optimizer, update_phase
from ..models import Conv4, freeze_batch_norm
from .metrics import METRIC_KEYS, character_metrics, kernel_inception_distance
from .pretrained import stored_state

Sampler = Callable[[torch.Tensor, int], torch.Tensor]  # (support [T, k, C, H, W], n) -> [T, n, ...]


def embedding_config(cfg: Config) -> Config:
    """The fixed recipe of the metric embedding: ProtoNet, 20-way 1-shot, seed 0, same data."""
    return build_config({
        "data": to_dict(cfg.data),
        "task": {"ways": 20, "shots": 1, "queries": 5, "meta_batch": 8, "eval_ways": 5},
        "meta": {"algorithm": "protonet"},
        "optim": {"lr": 1e-3},
        "train": {"iterations": cfg.gan.embedding_iterations, "seed": 0,
                  "device": cfg.train.device},
    })


def embedding_learner(ecfg: Config, device: torch.device) -> MetaLearner:
    """The untrained embedding learner of `embedding_config`, initialised from its seed exactly
    as an EpisodeLoop of that config would be (so a cached embedding stays valid)."""
    learner_cls = REGISTRY[ecfg.meta.algorithm]
    m = ecfg.model
    with torch.random.fork_rng(devices=[]):  # without touching torch's global RNG
        torch.manual_seed(ecfg.train.seed)
        model = Conv4(ecfg.data.channels, m.hidden, m.depth, ecfg.data.image_size,
                      learner_cls.head_size(ecfg.task.ways), m.downsample)
        return learner_cls(model, ecfg.meta).to(device)


def train_embedding(ecfg: Config, splits: Splits, learner: MetaLearner,
                    device: torch.device) -> None:
    """Meta-train the embedding learner for ecfg.train.iterations with the episode loop's phase
    update. The recipe has no lr schedule and one always-active phase, so the tasks, steps and
    weights are those an EpisodeLoop of `ecfg` would produce."""
    t = ecfg.task
    train = splits.train
    if t.ways > train.num_classes or int(train.class_counts().min()) < t.shots + t.queries:
        raise ConfigError(f"data: the generation-metric embedding trains on {t.ways}-way tasks "
                          f"of {t.shots + t.queries} drawings per class, more than meta-train "
                          "has (set gan.feature_model to use another feature extractor)")
    sampler = TaskSampler(train, t.ways, t.shots, t.queries, ecfg.train.seed, device,
                          ecfg.data.affine_augment, jitter_padding(ecfg.data.source))
    phases = learner.phases()
    optimizers = [make_optimizer(p, ecfg.optim) for p in phases]
    learner.train()
    with torch.enable_grad():  # callers may evaluate under no_grad
        for iteration in range(ecfg.train.iterations):
            episode = sampler.sample(t.meta_batch)
            for phase, optimizer in zip(phases, optimizers):
                update_phase(phase, optimizer, episode, phase.lr or ecfg.optim.lr,
                             ecfg.optim.grad_clip, iteration)


def metric_embedding(cfg: Config, splits: Splits, device: torch.device,
                     cache_dir: Path | None = None) -> torch.nn.Module:
    """The held-out embedding for `cfg`'s data: trained on meta-train once, then cached
    (or the user's TorchScript feature model, gan.feature_model)."""
    if cfg.gan.feature_model is not None:
        # torch.jit.load is unannotated in torch's stubs; it returns a ScriptModule.
        script: torch.nn.Module = torch.jit.load(  # type: ignore[no-untyped-call]
            str(Path(cfg.gan.feature_model).expanduser()), map_location=device)
        script.eval()
        return script

    ecfg = embedding_config(cfg)
    recipe = {**to_dict(ecfg), "data": data_key(ecfg.data)}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:20]
    path = (cache_dir or cache_root(cfg.data.cache_dir)) / "embeddings" / f"protonet-{key}.pt"
    learner = embedding_learner(ecfg, device)

    def build() -> dict[str, Any]:
        train_embedding(ecfg, splits, learner, device)
        return dict(learner.state_dict())

    # Loaded when stored; else trained once, even by concurrent callers, and stored atomically.
    learner.load_state_dict(stored_state(path, build, device))
    model = learner.model
    # Normalise with statistics of a fixed batch of meta-train drawings, so an image's features
    # do not depend on the other images it is embedded with (a generated batch is not
    # renormalised towards the real one).
    train = splits.train
    pick = np.random.default_rng(0).choice(len(train.images), size=min(1000, len(train.images)),
                                          replace=False)
    reference = torch.from_numpy(channels_first(train.images[np.sort(pick)],
                                                train.channels)).float().div(255)
    freeze_batch_norm(model, reference.to(device))
    model.eval()
    return model


def character_sets(images: ImageSet, characters: int, shots: int, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`characters` classes of a split: (k support drawings, the other drawings) of each.

    Returns support [T, shots, C, H, W] and held-out real drawings [T, m, C, H, W] in [0, 1].
    Rotated copies are skipped so each character counts once.
    """
    base = [c for c, name in enumerate(images.classes) if "@rot" not in name]
    chosen = rng.choice(base, size=min(characters, len(base)), replace=False)
    counts = images.class_counts()[chosen]
    m = int(counts.min())
    sets = np.stack([images.images[np.flatnonzero(images.labels == c)[:m]] for c in chosen])
    x = torch.from_numpy(channels_first(sets, images.channels)).float().div(255)  # [T, m, C, H, W]
    return x[:, :shots], x[:, shots:]


def sample_size(held_out: int, samples: int | None = None) -> int:
    """n, the samples per character of every compared row: a generator's n samples and the
    real baseline's n real drawings are each scored against the same n held-out real drawings,
    so 2n must fit in the `held_out` drawings a character has beside its support."""
    fits = held_out // 2
    n = fits if samples is None else samples
    if not 2 <= n <= fits:
        raise ConfigError(f"gan.eval_shots: {held_out} drawings per character are left beside "
                          f"the support, room for n <= {fits} samples scored against n real "
                          f"drawings (n = {n} asked; at least 2 are needed)")
    return n


def evaluation_sets(images: ImageSet, characters: int, shots: int, samples: int | None,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(support [T, k, ...], held-out reference [T, n, ...], other held-out real drawings
    [T, n, ...]) of `characters` characters: the same sets for every row of one seed."""
    support, held_out = character_sets(images, characters, shots, np.random.default_rng(seed))
    n = sample_size(held_out.shape[1], samples)
    return support, held_out[:, :n], held_out[:, n:2 * n]


def embed_sets(embed: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features [T, n, D] on the CPU of images [T, n, C, H, W], embedded on `embed`'s device."""
    device = next(iter(embed.parameters()), torch.empty(0)).device
    with torch.no_grad():
        features: torch.Tensor = embed(x.flatten(0, 1).to(device))
    return features.detach().view(*x.shape[:2], -1).cpu().double()


def generation_metrics(embed: torch.nn.Module, samples: torch.Tensor, real: torch.Tensor,
                       support: torch.Tensor | None = None) -> dict[str, float]:
    """The per-character metrics (metrics.character_metrics) of samples [T, n, ...] against
    held-out real drawings [T, m, ...], given the support [T, k, ...] they were drawn for.

    Without `support` (older callers) the first half of `real` stands in for it.
    """
    t = samples.shape[0]
    if t < 2:  # fidelity needs another character to be confused with
        raise ConfigError(f"generation metrics need at least 2 held-out characters, got {t}")
    if support is None:
        half = real.shape[1] // 2
        support, real = real[:, :half], real[:, half:]
    features = embed_sets(embed, samples)
    if not torch.isfinite(features).all():  # a diverged generator: every metric undefined (NaN)
        return dict.fromkeys(METRIC_KEYS, float("nan"))
    return character_metrics(embed_sets(embed, support), features, embed_sets(embed, real))


def evaluate_generation(cfg: Config, splits: Splits, sample: Sampler, split: str = "test",
                        characters: int = 20, samples: int | None = None, seed: int = 0,
                        device: torch.device | str = "cpu", embed: torch.nn.Module | None = None
                        ) -> dict[str, float]:
    """Adapt to gan.eval_shots drawings of each of `characters` held-out characters of a split,
    draw n samples each (default: the most that fit, sample_size) and score them in the metric
    embedding `embed` (default: metric_embedding(cfg, splits, device))."""
    device = torch.device(device)
    embed = embed if embed is not None else metric_embedding(cfg, splits, device)
    support, reference, _ = evaluation_sets(splits.get(split), characters, cfg.gan.eval_shots,
                                            samples, seed)
    fake = sample(support.to(device), reference.shape[1]).cpu()
    if fake.shape[:2] != reference.shape[:2]:  # every row is scored on the same T x n
        raise ValueError(f"the sampler returned {tuple(fake.shape[:2])} samples for "
                         f"{tuple(reference.shape[:2])} asked (characters, n)")
    return generation_metrics(embed, fake, reference, support)


def real_baseline(cfg: Config, splits: Splits, split: str = "test", characters: int = 20,
                  seed: int = 0, device: torch.device | str = "cpu",
                  embed: torch.nn.Module | None = None, samples: int | None = None
                  ) -> dict[str, float]:
    """The metrics of n other real drawings of each character in place of samples, on the
    same characters, support, reference and n as evaluate_generation (the real-data level)."""
    device = torch.device(device)
    embed = embed if embed is not None else metric_embedding(cfg, splits, device)
    support, reference, other = evaluation_sets(splits.get(split), characters,
                                                cfg.gan.eval_shots, samples, seed)
    return generation_metrics(embed, other, reference, support)


NOISE_LEVELS = (0.1, 0.25, 0.5)  # std of Gaussian pixel noise, pixels in [0, 1]


def one_shot_accuracy(embed: torch.nn.Module, images: ImageSet, episodes: int, seed: int
                      ) -> float:
    """5-way 1-shot accuracy (5 queries per class) of the nearest prototype in the embedding."""
    sampler = TaskSampler(images, 5, 1, 5, seed)
    ep = sampler.sample(episodes)
    support, query = embed_sets(embed, ep.support_x), embed_sets(embed, ep.query_x)  # [B, *, D]
    nearest = torch.cdist(query, support).argmin(-1)  # one shot: the support row is the class
    return float((ep.support_y.gather(1, nearest) == ep.query_y).double().mean())


def validate_embedding(cfg: Config, splits: Splits, split: str = "test", characters: int = 20,
                       seed: int = 0, device: torch.device | str = "cpu",
                       embed: torch.nn.Module | None = None, episodes: int = 200,
                       levels: tuple[float, ...] = NOISE_LEVELS) -> dict[str, float]:
    """Whether the embedding can be trusted: its own 5-way 1-shot accuracy on the split, and
    the per-character KID of real drawings against other real drawings plus Gaussian noise of
    each std in `levels` (keys noise_kid_<100 std>; noise_kid_0 is the real baseline's kid),
    with noise_monotone = 1.0 when the KID rises at every level."""
    device = torch.device(device)
    embed = embed if embed is not None else metric_embedding(cfg, splits, device)
    images = splits.get(split)
    support, reference, other = evaluation_sets(images, characters, cfg.gan.eval_shots, None,
                                                seed)
    f_ref = embed_sets(embed, reference)
    rng = torch.Generator().manual_seed(seed)
    out = {"one_shot_accuracy": one_shot_accuracy(embed, images, episodes, seed)}
    kids = []
    for level in (0.0, *levels):
        noisy = (other + level * torch.randn(other.shape, generator=rng)).clamp(0, 1)
        f_noisy = embed_sets(embed, noisy)
        kids.append(float(np.mean([kernel_inception_distance(f_ref[i], f_noisy[i])
                                   for i in range(f_ref.shape[0])])))
        out[f"noise_kid_{round(100 * level)}"] = kids[-1]
    out["noise_monotone"] = float(all(a < b for a, b in zip(kids, kids[1:])))
    return out
