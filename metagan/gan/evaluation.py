"""How generation is measured: a metric embedding trained on meta-train classes only, and
Frechet distance, conditional fidelity and diversity on held-out characters.

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

import numpy as np
import torch

from ..config import Config, ConfigError, build_config, to_dict
from ..data import ImageSet, Splits
from ..data.episodes import TaskSampler
from ..data.images import default_cache_dir
from ..meta import REGISTRY, MetaLearner
from ..meta.base import make_optimizer, update_phase
from ..models import Conv4, freeze_batch_norm
from .metrics import conditional_fidelity, feature_frechet_distance, relative_diversity

Sampler = Callable[[torch.Tensor, int], torch.Tensor]  # (support [T, k, 1, H, W], n) -> [T, n, ...]


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
        model = Conv4(1, m.hidden, m.depth, ecfg.data.image_size,
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
                          ecfg.data.affine_augment)
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
    key = hashlib.sha256(json.dumps(to_dict(ecfg), sort_keys=True).encode()).hexdigest()[:20]
    path = (cache_dir or default_cache_dir()) / "embeddings" / f"protonet-{key}.pt"
    learner = embedding_learner(ecfg, device)
    if path.is_file():
        learner.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    else:
        train_embedding(ecfg, splits, learner, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(learner.state_dict(), tmp)
        tmp.replace(path)
    model = learner.model
    # Normalise with statistics of a fixed batch of meta-train drawings, so an image's features
    # do not depend on the other images it is embedded with (a generated batch is not
    # renormalised towards the real one).
    train = splits.train
    pick = np.random.default_rng(0).choice(len(train.images), size=min(1000, len(train.images)),
                                          replace=False)
    reference = torch.from_numpy(train.images[np.sort(pick)]).float().div(255).unsqueeze(1)
    freeze_batch_norm(model, reference.to(device))
    model.eval()
    return model


def character_sets(images: ImageSet, characters: int, shots: int, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`characters` classes of a split: (k support drawings, the other drawings) of each.

    Returns support [T, shots, 1, H, W] and held-out real drawings [T, m, 1, H, W] in [0, 1].
    Rotated copies are skipped so each character counts once.
    """
    base = [c for c, name in enumerate(images.classes) if "@rot" not in name]
    chosen = rng.choice(base, size=min(characters, len(base)), replace=False)
    counts = images.class_counts()[chosen]
    m = int(counts.min())
    sets = np.stack([images.images[np.flatnonzero(images.labels == c)[:m]] for c in chosen])
    x = torch.from_numpy(sets).float().div(255).unsqueeze(2)  # [T, m, 1, H, W]
    return x[:, :shots], x[:, shots:]


@torch.no_grad()
def generation_metrics(embed: torch.nn.Module, samples: torch.Tensor, real: torch.Tensor,
                       candidates: int = 5) -> dict[str, float]:
    """Frechet distance, conditional fidelity and relative diversity of samples [T, n, ...]
    against held-out real drawings [T, m, ...] of the same T characters."""
    t = samples.shape[0]
    if t < 2:  # fidelity needs another character to be confused with
        raise ConfigError(f"generation metrics need at least 2 held-out characters, got {t}")
    candidates = min(candidates, t)  # chance is 1 / the candidates really offered
    device = next(iter(embed.parameters()), torch.empty(0)).device
    f_fake = embed(samples.flatten(0, 1).to(device)).view(t, samples.shape[1], -1).cpu()
    f_real = embed(real.flatten(0, 1).to(device)).view(t, real.shape[1], -1).cpu()
    fd = feature_frechet_distance(f_real.flatten(0, 1).double().numpy(),
                                  f_fake.flatten(0, 1).double().numpy())
    prototypes = f_real.mean(1)  # [T, D]
    fidelity, diversity = [], []
    for i in range(t):
        others = [j for j in range(t) if j != i][: candidates - 1]
        fidelity.append(conditional_fidelity(f_fake[i], prototypes[[i, *others]], target=0))
        diversity.append(relative_diversity(f_fake[i], f_real[i]))
    return {"frechet_distance": fd, "fidelity": float(np.mean(fidelity)),
            "diversity": float(np.mean(diversity)), "chance_fidelity": 1.0 / candidates}


def evaluate_generation(cfg: Config, splits: Splits, sample: Sampler, split: str = "test",
                        characters: int = 20, samples: int = 15, seed: int = 0,
                        device: torch.device | str = "cpu", embed: torch.nn.Module | None = None
                        ) -> dict[str, float]:
    """Adapt-and-sample on held-out characters of a split, scored in the metric embedding
    `embed` (default: metric_embedding(cfg, splits, device))."""
    device = torch.device(device)
    embed = embed if embed is not None else metric_embedding(cfg, splits, device)
    support, real = character_sets(splits.get(split), characters, cfg.gan.eval_shots,
                                   np.random.default_rng(seed))
    fake = sample(support.to(device), samples).cpu()
    return generation_metrics(embed, fake, real)


def real_baseline(cfg: Config, splits: Splits, split: str = "test", characters: int = 20,
                  seed: int = 0, device: torch.device | str = "cpu",
                  embed: torch.nn.Module | None = None) -> dict[str, float]:
    """The same metrics with real drawings in place of samples (the best a generator can do)."""
    device = torch.device(device)
    embed = embed if embed is not None else metric_embedding(cfg, splits, device)
    support, real = character_sets(splits.get(split), characters, cfg.gan.eval_shots,
                                   np.random.default_rng(seed))
    half = real.shape[1] // 2
    return generation_metrics(embed, real[:, :half], real[:, half:])

