"""How generation is measured: a metric embedding trained on meta-train classes only, and
Frechet distance, conditional fidelity and diversity on held-out characters.

Inception-based FID needs ImageNet weights this machine cannot download, and an ImageNet
network says little about pen strokes anyway; the embedding here is a conv4 ProtoNet trained
once (fixed seed) on the meta-train alphabets and cached by its config's hash. Users who have
Inception weights can pass any TorchScript feature extractor as gan.feature_model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import Config, build_config, to_dict
from ..data import ImageSet, Splits
from ..data.images import default_cache_dir
from ..models import freeze_batch_norm
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


def metric_embedding(cfg: Config, splits: Splits, device: torch.device,
                     cache_dir: Path | None = None) -> torch.nn.Module:
    """The held-out embedding for `cfg`'s data: trained on meta-train once, then cached
    (or the user's TorchScript feature model, gan.feature_model)."""
    from ..loop import EpisodeLoop  # the loop imports the GAN methods: import lazily

    if cfg.gan.feature_model is not None:
        model = torch.jit.load(str(Path(cfg.gan.feature_model).expanduser()), map_location=device)
        model.eval()
        return model

    ecfg = embedding_config(cfg)
    key = hashlib.sha256(json.dumps(to_dict(ecfg), sort_keys=True).encode()).hexdigest()[:20]
    path = (cache_dir or default_cache_dir()) / "embeddings" / f"protonet-{key}.pt"
    loop = EpisodeLoop(ecfg, splits=splits, device=device)
    if path.is_file():
        loop.method.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    else:
        with torch.enable_grad():  # callers may evaluate under no_grad
            while loop.iteration < ecfg.train.iterations:
                loop.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(loop.method.state_dict(), tmp)
        tmp.replace(path)
    model = loop.learner.model
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
                        device: torch.device | str = "cpu") -> dict[str, float]:
    """Adapt-and-sample on held-out characters of a split, scored in the metric embedding."""
    device = torch.device(device)
    embed = metric_embedding(cfg, splits, device)
    support, real = character_sets(splits.get(split), characters, cfg.gan.eval_shots,
                                   np.random.default_rng(seed))
    fake = sample(support.to(device), samples).cpu()
    return generation_metrics(embed, fake, real)


def real_baseline(cfg: Config, splits: Splits, split: str = "test", characters: int = 20,
                  seed: int = 0, device: torch.device | str = "cpu") -> dict[str, float]:
    """The same metrics with real drawings in place of samples (the best a generator can do)."""
    device = torch.device(device)
    embed = metric_embedding(cfg, splits, device)
    support, real = character_sets(splits.get(split), characters, cfg.gan.eval_shots,
                                   np.random.default_rng(seed))
    half = real.shape[1] // 2
    return generation_metrics(embed, real[:, :half], real[:, half:])

