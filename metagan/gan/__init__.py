"""GAN building blocks (networks, losses, metrics) and the GAN x meta-learning methods."""

from __future__ import annotations

from ..config import Config
from ..meta.base import MetaLearner, Method


def extra_classes(cfg: Config) -> int:
    """Outputs a method adds to the classifier head: MetaGAN's "fake" class."""
    return 1 if cfg.method == "metagan" else 0


def generates(cfg: Config) -> bool:
    """Whether the method is evaluated by generation metrics rather than few-shot accuracy."""
    return cfg.method == "fewshot_gan"


def build_method(cfg: Config, learner: MetaLearner) -> Method:
    """The module the episode loop trains: the learner itself, or a GAN method around it."""
    if cfg.method == "meta":
        return learner
    if cfg.method == "dagan":
        from .dagan import DaganAugmented

        return DaganAugmented(cfg, learner)
    if cfg.method == "fewshot_gan":
        from .fewshot import FewShotGan

        return FewShotGan(cfg)
    if cfg.method == "metagan":
        from .joint import MetaGan

        return MetaGan(cfg, learner)
    raise ValueError(f"unknown method {cfg.method!r}")  # unreachable: config validation
