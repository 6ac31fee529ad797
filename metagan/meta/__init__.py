"""Meta-learners behind one interface, found by name in a registry."""

from torch import nn

from ..config import MetaConfig
from . import maml, protonet, reptile  # noqa: F401  (registration)
from .base import (
    METHODS,
    REGISTRY,
    BatchNorm,
    Diverged,
    MetaLearner,
    Method,
    Phase,
    PhaseOutput,
    accuracy,
    register_method,
)

__all__ = ["METHODS", "REGISTRY", "BatchNorm", "Diverged", "MetaLearner", "Method", "Phase",
           "PhaseOutput", "accuracy", "build_learner", "register_method"]


def build_learner(cfg: MetaConfig, model: nn.Module, batch_norm: BatchNorm = "support"
                  ) -> MetaLearner:
    """The registered meta-learner named by cfg.algorithm, wrapping `model`, with batch norm
    in mode `batch_norm` (model.batch_norm: "support", "transductive" or "instance")."""
    return REGISTRY[cfg.algorithm](model, cfg, batch_norm)
