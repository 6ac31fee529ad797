"""The registered methods as the rest of the package sees them: which one a config names, what
it and its meta-learner read, and the one check that refuses a config key nothing reads.

What is read is declared where it is read: each method and meta-learner class lists its keys
(`Method.reads`), and this module lists the episode loop's own (`DRIVER_READS` and the keys of
each kind of evaluation). A key is *set* when its value differs from the default; a set key
that the run's method, learner and loop do not read is refused (`check_reads`), and so is a
searched key (a search space's), whatever its values. A key given at its default value changes
nothing, which is also why a run's resolved config.yaml, listing every key, stays valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from . import gan  # noqa: F401  (registers the GAN methods)
from .config import Config, ConfigError, to_dict
from .gan.metrics import METRIC_KEYS
from .meta import METHODS, REGISTRY, MetaLearner, Method, register_method

__all__ = ["ACCURACY_KEYS", "DRIVER_READS", "GENERATION_KEYS", "METHODS", "Mode",
           "check_reads", "config_keys", "evaluation_keys", "learner_of", "method_of", "reads_of",
           "register_method", "selection_of"]

Mode = Literal["min", "max"]

# What the episode loop and the run read for every method.
DRIVER_READS = frozenset({"method", "data.*", "task.ways", "task.shots", "task.queries",
                          "task.meta_batch", "optim.lr", "optim.weight_decay",
                          "optim.lr_halve_every", "optim.grad_clip", "train.*", "schedule.*"})
# What each kind of evaluation reads and reports (EpisodeLoop.evaluate, gan/evaluation.py).
ACCURACY_READS = frozenset({"task.eval_ways"})
GENERATION_READS = frozenset({"gan.eval_shots", "gan.eval_adapt_steps",
                              "gan.embedding_iterations", "gan.feature_model"})
ACCURACY_KEYS = frozenset({"accuracy", "ci95", "episodes"})
GENERATION_KEYS = frozenset(METRIC_KEYS)  # what gan/metrics.py's character_metrics returns
# A sample grid shows gan.eval_shots real drawings (gan/grid.py).
SAMPLING_READS = frozenset({"gan.eval_shots"})


def method_of(cfg: Config) -> type[Method]:
    """The registered method class `cfg.method` names (config.validate checked the name)."""
    return METHODS[cfg.method]


def learner_of(cfg: Config) -> type[MetaLearner] | None:
    """The meta-learner class the run builds, or None when its method needs none."""
    return REGISTRY[cfg.meta.algorithm] if method_of(cfg).needs_learner else None


def evaluation_keys(method: type[Method]) -> frozenset[str]:
    """The keys `EpisodeLoop.evaluate` returns for a method of this class."""
    return GENERATION_KEYS if method.generates else ACCURACY_KEYS


def selection_of(method: type[Method]) -> tuple[str, Mode]:
    """The meta-val metric that picks a run's best checkpoint and which way is better: a
    generative method's per-character KID (the few-shot GAN's search metric), else accuracy."""
    return ("val_kid", "min") if method.generates else ("val_accuracy", "max")


def reads_of(cfg: Config) -> frozenset[str]:
    """Every dotted key (or "section.*") the run of `cfg` reads."""
    method, learner = method_of(cfg), learner_of(cfg)
    reads = DRIVER_READS | method.reads | (learner.reads if learner is not None else frozenset())
    reads |= GENERATION_READS if method.generates else ACCURACY_READS
    return reads | (SAMPLING_READS if method.samples else frozenset())


def is_read(key: str, reads: frozenset[str]) -> bool:
    """Whether `key` (dotted) is one of `reads`, or in a section read whole."""
    return key in reads or f"{key.split('.')[0]}.*" in reads


def _flat(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in to_dict(cfg).items():
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return out


def config_keys() -> tuple[str, ...]:
    """Every dotted key of a run config."""
    return tuple(_flat(Config()))


def set_keys(cfg: Config) -> list[str]:
    """The keys whose value differs from the default."""
    defaults = _flat(Config())
    return [k for k, v in _flat(cfg).items() if v != defaults[k]]


def check_reads(cfg: Config, searched: Iterable[str] = ()) -> None:
    """ConfigError naming the first set or searched key that the run of `cfg` does not read."""
    reads = reads_of(cfg)
    for key in [*searched, *set_keys(cfg)]:
        if is_read(key, reads):
            continue
        section = key.split(".")[0]
        same = sorted(r for r in reads if r.split(".")[0] == section)
        by = f"method {cfg.method!r}"
        if method_of(cfg).needs_learner:
            by += f" with meta.algorithm {cfg.meta.algorithm!r}"
        raise ConfigError(f"{key}: not read by {by} (it reads "
                          f"{', '.join(same) if same else f'no {section}.* key'})")
