"""Search-space files: a base run config, distributions over its dotted keys, and how to search.

A space file (see `search_spaces/`) has these sections, validated here in one place:

  base:       a run config (a path relative to the space file, or the mapping itself)
  set:        dotted config keys fixed for every trial (optional)
  space:      dotted config key -> distribution; `choice` may map each value to a sub-space
  search:     algorithm (hyperopt | random | grid), metric, mode, num_samples, max_concurrent,
              seed, initial_points, points_to_evaluate, time_budget_s, confirm_top,
              confirm_episodes, keep_base
  scheduler:  name (asha | median | pbt | none) and its settings, in meta-iterations
  resources:  cpu, gpu (fractions allowed)
  checkpoint: keep, score (which of a trial's checkpoints Tune keeps)
  failure:    max_retries
  storage:    uri (a local path or s3://bucket/prefix), outage_s

How often a trial reports and checkpoints is its run config's schedule section, read by the
runner as in `metagan train`: a report to Tune at every `schedule.eval_every` iterations, a
stored checkpoint at every `schedule.checkpoint_every` (a multiple of it) and at the end.

Distributions: {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {quniform: [lo, hi, q]},
{randint: [lo, hi]} (hi excluded), {choice: [v, ...]} or {choice: {v: {sub-space}, ...}},
{grid: [v, ...]} (algorithm grid only).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    Config,
    ConfigError,
    apply_overrides,
    build_config,
    from_dict,
    parse_override,
    read_yaml,
)

DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice", "grid")
ALGORITHMS = ("hyperopt", "random", "grid")
SCHEDULERS = ("asha", "median", "pbt", "none")
# Key under which a conditional choice's value travels inside a sampled configuration.
VALUE = "__value__"
# Key under which a grid search's point travels in a trial's configuration.
GRID = "grid"
# The metric search.confirm_top re-scores: a mean over meta-val tasks, so more tasks sharpen it.
CONFIRMABLE = "val_accuracy"


@dataclass(frozen=True)
class SearchConfig:
    algorithm: str = "hyperopt"
    metric: str = "val_accuracy"
    mode: str = "max"
    num_samples: int | None = None   # None: 8 trials (hyperopt, random) or 1 per grid point
    max_concurrent: int = 2
    seed: int = 0
    initial_points: int = 4          # TPE draws this many at random before modelling
    time_budget_s: float = 0.0       # stop starting/continuing trials after this long; 0: none
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    # With no points_to_evaluate, the base config (with `set:`) is the first trial, so a search
    # reports where it started from (hyperopt and random, spaces without conditional choices).
    start_from_base: bool = True
    # Selection noise: after the search, the best checkpoints of the `confirm_top` best trials
    # are scored again on `confirm_episodes` meta-val tasks, and the best of those is the
    # search's answer (metagan/confirm.py). 0: the single best report decides.
    confirm_top: int = 0
    confirm_episodes: int = 1000
    # With confirm_top: the base config's trial is re-scored too, and stays the answer unless a
    # candidate beats it by a paired 95% interval above zero on those tasks (metagan/confirm.py).
    keep_base: bool = False


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = "asha"
    grace_period: int = 100          # meta-iterations before a trial can be stopped
    reduction_factor: int = 2
    max_iterations: int = 0          # 0: the base config's train.iterations
    perturbation_interval: int = 100  # pbt, meta-iterations
    min_samples_required: int = 2    # median stopping


@dataclass(frozen=True)
class ResourcesConfig:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class CheckpointConfig:
    keep: int = 2
    score: str = ""                  # metric ranking kept checkpoints; "": search.metric


@dataclass(frozen=True)
class FailureConfig:
    max_retries: int = 2


@dataclass(frozen=True)
class StorageConfig:
    uri: str = "./results"
    outage_s: float = 300.0          # how long storage may be unreachable before the search ends


@dataclass(frozen=True)
class Param:
    """One searched key: a distribution and, for a conditional choice, a sub-space per value."""

    key: str
    kind: str
    args: tuple
    branches: dict | None = None     # value -> tuple[Param, ...]


@dataclass(frozen=True)
class SearchSpec:
    """A validated space file."""

    base: dict
    params: tuple
    search: SearchConfig
    scheduler: SchedulerConfig
    resources: ResourcesConfig
    checkpoint: CheckpointConfig
    failure: FailureConfig
    storage: StorageConfig
    source: str = ""

    @property
    def iterations(self) -> int:
        """Meta-iterations of the longest trial not stopped early (train.iterations may be searched)."""
        return max(self.config_for(p).train.iterations for p in check_points(self))

    @property
    def samples(self) -> int:
        """Trials to run (hyperopt, random), or repeats of every point (grid)."""
        if self.search.num_samples is not None:
            return self.search.num_samples
        return 1 if self.search.algorithm == "grid" else 8

    def start_points(self) -> list[dict[str, Any]]:
        """The points the searcher evaluates first: points_to_evaluate, else the base config's."""
        if self.search.points_to_evaluate:
            return [dict(p) for p in self.search.points_to_evaluate]
        base = self.base_point()
        return [base] if base is not None else []

    def base_point(self) -> dict[str, Any] | None:
        """The base config's values of the searched keys, when the space can start from it:
        start_from_base set, hyperopt or random, no conditional choice, every value in the space."""
        if (not self.search.start_from_base or self.search.algorithm == "grid"
                or any(p.branches is not None for p in self.params)):
            return None
        point = {p.key: _dotted_value(self.base, p.key) for p in self.params}
        return point if all(in_space(p, point[p.key]) for p in self.params) else None

    def config_for(self, params: dict[str, Any]) -> Config:
        """The validated run config of one trial (`params`: flat dotted keys), refused when it
        sets or searches a key its method does not read (checked for every branch at parse
        time, since validation builds a point of each)."""
        from .methods import check_reads

        cfg = build_config(self.base, params)
        check_reads(cfg, searched=params)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The spec as YAML-ready data (the `base` inlined), to store beside the experiment."""
        return {"base": self.base, "space": {p.key: _param_to_yaml(p) for p in self.params},
                **{name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}}


SECTIONS = {"search": SearchConfig, "scheduler": SchedulerConfig,
            "resources": ResourcesConfig, "checkpoint": CheckpointConfig,
            "failure": FailureConfig, "storage": StorageConfig}
TOP_KEYS = {"base", "set", "space", *SECTIONS}
# Space keys that became run-config keys (one key per concept): named in the refusal.
MOVED = {"trial.iterations_per_step": "schedule.eval_every",
         "trial.eval_episodes": "schedule.eval_episodes",
         "checkpoint.every": "schedule.checkpoint_every"}


def _check_moved(data: dict[str, Any]) -> None:
    """Refuse the space format before the one runner, naming where each key went."""
    for old, new in MOVED.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"{old}: moved to the run config's {new} (give it under `set:`)")
    if "trial" in data:
        raise ConfigError("trial: moved to the run config's schedule section "
                          "(schedule.eval_every, schedule.eval_episodes under `set:`)")


def _dotted_value(data: dict[str, Any], key: str) -> Any:
    """The value of a dotted key in nested config data."""
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def _param_to_yaml(p: Param) -> dict[str, Any]:
    if p.branches is not None:
        return {"choice": {v: {q.key: _param_to_yaml(q) for q in sub}
                           for v, sub in p.branches.items()}}
    return {p.kind: list(p.args)}


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: bounds must be numbers, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: bounds must be finite, got {value!r}")
    return value


def parse_param(key: str, spec: Any, where: str) -> Param:
    """Read one distribution, checking its shape and bounds."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution such as {{uniform: [0.1, 1.0]}} "
                          f"({', '.join(DISTRIBUTIONS)}), got {spec!r}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; "
                          f"expected one of {', '.join(DISTRIBUTIONS)}")
    if kind in ("choice", "grid"):
        if kind == "choice" and isinstance(args, dict):
            if not args:
                raise ConfigError(f"{where}: choice needs at least one value")
            branches = {}
            for value, sub in args.items():
                sub = sub or {}
                if not isinstance(sub, dict):
                    raise ConfigError(f"{where}.{value}: expected a sub-space mapping, got {sub!r}")
                branches[value] = tuple(parse_param(k, s, f"{where}.{value}.{k}")
                                        for k, s in sub.items())
            return Param(key, kind, tuple(args), branches)
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} needs a non-empty list of values, got {args!r}")
        return Param(key, kind, tuple(args))
    if not isinstance(args, list):
        raise ConfigError(f"{where}: {kind} needs a list [low, high{', q' if kind == 'quniform' else ''}]")
    n = 3 if kind == "quniform" else 2
    if len(args) != n:
        raise ConfigError(f"{where}: {kind} needs {n} numbers, got {len(args)}")
    lo, hi = (_number(where, a) for a in args[:2])
    if not lo < hi:
        raise ConfigError(f"{where}: {kind} needs low < high, got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: loguniform needs a positive low bound, got {lo}")
    if kind == "randint" and not (isinstance(lo, int) and isinstance(hi, int)):
        raise ConfigError(f"{where}: randint needs integer bounds, got [{lo}, {hi}]")
    if kind == "quniform":
        q = _number(where, args[2])
        if q <= 0 or q > hi - lo:
            raise ConfigError(f"{where}: quniform step q must be in (0, high - low], got {q}")
    return Param(key, kind, tuple(args))


def _walk(params: tuple) -> list[Param]:
    out = []
    for p in params:
        out.append(p)
        for sub in (p.branches or {}).values():
            out.extend(_walk(sub))
    return out


def _cast(p: Param, value: Any) -> Any:
    if p.kind == "quniform":
        q = p.args[2]
        value = round(value / q) * q
        return int(value) if all(isinstance(a, int) for a in p.args) else float(value)
    if p.kind == "randint":
        return int(value)
    return value


def sample_point(params: tuple, rng: random.Random) -> dict[str, Any]:
    """Draw one flat assignment from the prior (used by --dry-run and for validation)."""
    out: dict[str, Any] = {}
    for p in params:
        if p.kind == "uniform":
            out[p.key] = rng.uniform(*p.args)
        elif p.kind == "loguniform":
            out[p.key] = math.exp(rng.uniform(math.log(p.args[0]), math.log(p.args[1])))
        elif p.kind == "quniform":
            out[p.key] = _cast(p, rng.uniform(p.args[0], p.args[1]))
        elif p.kind == "randint":
            out[p.key] = rng.randrange(p.args[0], p.args[1])
        else:
            value = rng.choice(p.args)
            out[p.key] = value
            if p.branches is not None:
                out.update(sample_point(p.branches[value], rng))
    return out


def _corner_points(params: tuple) -> list[dict[str, Any]]:
    """Assignments that exercise every bound and every choice value, every branch."""
    points = []
    for corner in (0, 1):
        point = {}
        for p in params:
            if p.kind in ("choice", "grid"):
                point[p.key] = p.args[0] if corner == 0 else p.args[-1]
            elif p.kind == "randint":
                point[p.key] = p.args[corner] - corner
            else:
                point[p.key] = _cast(p, p.args[corner])
        points.append(point)
    base = points[0]
    for p in params:
        for value in p.args if p.kind in ("choice", "grid") else ():
            if p.branches is None:
                points.append({**base, p.key: value})
            else:
                for sub in _corner_points(p.branches[value]):
                    points.append({**base, p.key: value, **sub})
    return points


def grid_trials(spec: SearchSpec) -> list[dict[str, Any]]:
    """Every trial of a grid search: each point, repeated `spec.samples` times with its own
    training seed (base seed, +1, ...: recorded in the trial's params), unless the space
    searches train.seed itself. Identical repeats would only measure nothing twice."""
    points = grid_points(spec.params)
    if any(p.key == "train.seed" for p in spec.params):
        return points * spec.samples
    base = int(spec.base["train"]["seed"])
    return [{**point, "train.seed": base + r} for r in range(spec.samples) for point in points]


def grid_points(params: tuple) -> list[dict[str, Any]]:
    """Every assignment of a grid space (the product of all grid values)."""
    keys = [p.key for p in params]
    return [dict(zip(keys, values)) for values in itertools.product(*(p.args for p in params))]


def reported_metrics(cfg: Config) -> set[str]:
    """The metric names a trial of `cfg` reports to Tune (see trainable.py)."""
    from .methods import evaluation_keys, method_of

    common = {"iteration", "tasks_per_s", "lr", "loop_s", "diverged"}
    return common | {f"val_{k}" for k in evaluation_keys(method_of(cfg))}


def _section(cls: type, data: Any, name: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping, got {type(data).__name__}")
    return from_dict(cls, data, name)


def _read_base(raw: Any, source: Path | None) -> dict[str, Any]:
    if isinstance(raw, str):
        path = Path(raw)
        if not path.is_absolute() and source is not None:
            path = source.parent / path
        return read_yaml(path)
    if isinstance(raw, dict):
        return raw
    raise ConfigError("base: expected a config file path or a config mapping")


# Paths a trial opens. Tune runs each trial in a directory of its own (and a cluster job on
# another machine), so a path relative to where `metagan search` started would break every trial.
PATH_KEYS = (("data", "root"), ("data", "cache_dir"), ("gan", "feature_model"))


def _absolute_paths(base: dict[str, Any]) -> dict[str, Any]:
    """The base config with its relative paths made absolute (from the current directory)."""
    for section, key in PATH_KEYS:
        value = base[section][key]
        if isinstance(value, str) and "://" not in value:
            base[section][key] = str(Path(value).expanduser().resolve())
    return base


def parse_spec(data: dict[str, Any], source: Path | None = None,
               overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Validate a whole space file (already read as YAML); every error is a ConfigError."""
    _check_moved(data)
    for key in overrides or {}:
        if key in MOVED:
            raise ConfigError(f"--set {key}: moved to {MOVED[key]}")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r}; expected one of {', '.join(sorted(TOP_KEYS))}")
    if "base" not in data:
        raise ConfigError("base: missing (a run config path or mapping)")
    # --set applies to sections of the space file (search.num_samples=4) or to the base config.
    overrides = dict(overrides or {})
    space_over = {k: v for k, v in overrides.items() if k.split(".")[0] in SECTIONS}
    data = apply_overrides(data, space_over)
    fixed = dict(data.get("set") or {})
    fixed.update({k: v for k, v in overrides.items() if k not in space_over})
    base_data = apply_overrides(_read_base(data["base"], source), fixed)
    base_cfg = build_config(base_data)   # the base alone must be a valid run
    base = _absolute_paths(dataclasses.asdict(base_cfg))

    raw_space = data.get("space") or {}
    if not isinstance(raw_space, dict):
        raise ConfigError("space: expected a mapping of dotted config keys to distributions")
    params = tuple(parse_param(k, v, f"space.{k}") for k, v in raw_space.items())
    sections = {name: _section(cls, data.get(name), name) for name, cls in SECTIONS.items()}
    spec = SearchSpec(base=base, params=params, source=str(source or ""), **sections)
    _check_sections(spec)
    _check_params(spec)
    return spec


def _check_sections(spec: SearchSpec) -> None:
    s, sch = spec.search, spec.scheduler
    if s.algorithm not in ALGORITHMS:
        raise ConfigError(f"search.algorithm: {s.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    if s.mode not in ("min", "max"):
        raise ConfigError(f"search.mode: expected min or max, got {s.mode!r}")
    for where, v in (("search.num_samples", spec.samples), ("search.max_concurrent", s.max_concurrent),
                     ("checkpoint.keep", spec.checkpoint.keep)):
        if v < 1:
            raise ConfigError(f"{where}: must be at least 1, got {v}")
    if s.time_budget_s < 0:
        raise ConfigError(f"search.time_budget_s: must be >= 0, got {s.time_budget_s}")
    if s.initial_points < 1:
        raise ConfigError(f"search.initial_points: must be at least 1, got {s.initial_points}")
    _check_confirm(spec)
    if sch.name not in SCHEDULERS:
        raise ConfigError(f"scheduler.name: {sch.name!r} is not one of {', '.join(SCHEDULERS)}")
    if sch.name == "asha" and sch.reduction_factor < 2:
        raise ConfigError(f"scheduler.reduction_factor: must be at least 2, got {sch.reduction_factor}")
    r = spec.resources
    if r.cpu <= 0 or r.gpu < 0:
        raise ConfigError(f"resources: cpu must be positive and gpu non-negative, got {r}")
    if r.gpu > 1 and r.gpu != int(r.gpu):
        raise ConfigError(f"resources.gpu: a trial may use a fraction of one GPU or whole GPUs, got {r.gpu}")
    if spec.failure.max_retries < 0:
        raise ConfigError(f"failure.max_retries: must be >= 0, got {spec.failure.max_retries}")
    if spec.storage.outage_s <= 0:
        raise ConfigError(f"storage.outage_s: must be positive, got {spec.storage.outage_s}")


def in_space(p: Param, value: Any) -> bool:
    """Whether `value` is one the distribution can draw."""
    if p.kind in ("choice", "grid"):
        return value in p.args
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if p.kind == "randint":
        return isinstance(value, int) and p.args[0] <= value < p.args[1]
    return p.args[0] <= value <= p.args[1]


def check_points(spec: SearchSpec) -> list[dict[str, Any]]:
    """The assignments validation builds: every grid point, or every bound and branch."""
    points = grid_points(spec.params) if spec.search.algorithm == "grid" else _corner_points(spec.params)
    return points or [{}]


def _check_lengths(spec: SearchSpec) -> None:
    """Scheduler and reporting settings against the trial lengths the space allows."""
    sch = spec.scheduler
    longest = spec.iterations
    if sch.max_iterations and sch.max_iterations > longest:
        raise ConfigError(f"scheduler.max_iterations ({sch.max_iterations}) exceeds the longest "
                          f"trial's train.iterations ({longest})")
    if sch.name != "none" and not 0 < sch.grace_period <= longest:
        raise ConfigError(f"scheduler.grace_period: must be in [1, train.iterations="
                          f"{longest}], got {sch.grace_period}")


def _check_confirm(spec: SearchSpec) -> None:
    """search.confirm_top / confirm_episodes: possible, and read."""
    s = spec.search
    if s.confirm_top < 0 or s.confirm_episodes < 1:
        raise ConfigError(f"search.confirm_top must be >= 0 and search.confirm_episodes >= 1, "
                          f"got {s.confirm_top} and {s.confirm_episodes}")
    if not s.confirm_top:
        if s.confirm_episodes != SearchConfig.confirm_episodes:
            raise ConfigError("search.confirm_episodes: read only with search.confirm_top > 0")
        if s.keep_base:
            raise ConfigError("search.keep_base: read only with search.confirm_top > 0 (the base "
                              "trial is kept unless a re-scored candidate beats it)")
        return
    if s.keep_base and spec.scheduler.name == "pbt":
        raise ConfigError("search.keep_base: under pbt a trial's values change as it runs, so no "
                          "trial is the base config's")
    if s.keep_base and (s.points_to_evaluate or spec.base_point() is None):
        raise ConfigError("search.keep_base: the search does not start from the base config "
                          "(points_to_evaluate given, start_from_base off, grid search, conditional "
                          "choices, or a base value outside the space)")
    if (s.metric, s.mode) != (CONFIRMABLE, "max"):
        raise ConfigError(f"search.confirm_top: re-scoring on more episodes is for {CONFIRMABLE!r} "
                          f"(mode max); the search's metric is {s.metric!r} ({s.mode})")
    if (s.algorithm == "grid" and spec.samples > 1) or any(p.key == "train.seed"
                                                            for p in _walk(spec.params)):
        raise ConfigError("search.confirm_top: trials of different train.seed are scored on "
                          "different meta-val tasks, so their re-scoring would not be paired")


def _check_schedule(cfg: Config, point: dict[str, Any]) -> None:
    """A trial reports at each evaluation and is checkpointed at a report: its schedule must say when."""
    sch, where = cfg.schedule, ", ".join(f"{k}={v!r}" for k, v in point.items())
    at = f" (at {where})" if where else ""
    if sch.eval_every < 1:
        raise ConfigError(f"schedule.eval_every: a trial reports to the search at each evaluation; "
                          f"set it to at least 1{at}")
    if sch.eval_every > cfg.train.iterations:
        raise ConfigError(f"schedule.eval_every ({sch.eval_every}) exceeds train.iterations "
                          f"({cfg.train.iterations}){at}")
    if sch.checkpoint_every % sch.eval_every:
        raise ConfigError(f"schedule.checkpoint_every ({sch.checkpoint_every}) must be a multiple "
                          f"of schedule.eval_every ({sch.eval_every}): a trial stores a checkpoint "
                          f"when it reports{at}")


def _check_params(spec: SearchSpec) -> None:
    algorithm = spec.search.algorithm
    every = _walk(spec.params)
    for p in every:
        if p.kind == "grid" and algorithm != "grid":
            raise ConfigError(f"space.{p.key}: grid values need search.algorithm: grid "
                              f"(use choice with {algorithm})")
        if algorithm == "grid" and p.kind != "grid":
            raise ConfigError(f"space.{p.key}: search.algorithm grid takes only grid values, "
                              f"got {p.kind}")
    if spec.scheduler.name == "pbt":
        if not any(p.kind in ("uniform", "loguniform") for p in spec.params):
            raise ConfigError("scheduler.name: pbt perturbs uniform / loguniform parameters and "
                              "the space has none")
        if spec.checkpoint.keep < 3:
            raise ConfigError("checkpoint.keep: pbt needs at least 3 (a trial continues from "
                              "another's checkpoint, which must not be rotated out first)")
        if algorithm != "random" or any(p.branches for p in spec.params):
            raise ConfigError("scheduler.name: pbt takes search.algorithm: random (Ray Tune runs "
                              "it without a search algorithm) and no conditional choices")
    # Every bound and every branch must give a valid run config with the searched metric.
    for point in check_points(spec):
        try:
            cfg = spec.config_for(point)
        except ConfigError as e:
            where = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ConfigError(f"space: the config at ({where}) is invalid: {e}") from None
        _check_schedule(cfg, point)
        if spec.search.confirm_top and spec.search.confirm_episodes <= cfg.schedule.eval_episodes:
            raise ConfigError(f"search.confirm_episodes ({spec.search.confirm_episodes}) must "
                              f"exceed schedule.eval_episodes ({cfg.schedule.eval_episodes}): "
                              "re-scoring on the search's own tasks adds nothing")
        metrics = reported_metrics(cfg)
        for name, metric in (("search.metric", spec.search.metric),
                             ("checkpoint.score", spec.checkpoint.score)):
            if metric and metric not in metrics:
                raise ConfigError(f"{name}: {metric!r} is not reported for method "
                                  f"{cfg.method!r}; reported: {', '.join(sorted(metrics))}")
    _check_lengths(spec)
    keys = {p.key for p in spec.params}
    unconditional = {p.key for p in spec.params if p.branches is None}
    for i, point in enumerate(spec.search.points_to_evaluate):
        if not isinstance(point, dict):
            raise ConfigError(f"search.points_to_evaluate[{i}]: expected a mapping of dotted keys")
        extra = set(point) - keys
        if extra:
            raise ConfigError(f"search.points_to_evaluate[{i}]: {sorted(extra)[0]!r} is not in space")
        if set(point) != unconditional or len(unconditional) != len(keys):
            raise ConfigError(f"search.points_to_evaluate[{i}]: give a value for every key of a "
                              "space without conditional choices")
        for key, value in point.items():
            param = next(p for p in spec.params if p.key == key)
            if not in_space(param, value):
                raise ConfigError(f"search.points_to_evaluate[{i}].{key}: {value!r} is outside "
                                  f"the space {_param_to_yaml(param)}")
        try:
            spec.config_for(point)
        except ConfigError as e:
            raise ConfigError(f"search.points_to_evaluate[{i}]: {e}") from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read and validate a space file (`overrides`: `--set key=value` texts)."""
    path = Path(path)
    parsed = dict(parse_override(o) for o in overrides or [])
    return parse_spec(read_yaml(path), path, parsed)


def flatten_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A sampled configuration (conditional values nested under their choice) as flat dotted keys."""
    out: dict[str, Any] = {}
    for key, value in sample.items():
        if isinstance(value, dict) and VALUE in value:
            out[key] = value[VALUE]
            out.update(flatten_sample({k: v for k, v in value.items() if k != VALUE}))
        else:
            out[key] = value
    return out


def cast_sample(params: tuple, flat: dict[str, Any]) -> dict[str, Any]:
    """Round quantised values and make integers of integer distributions."""
    by_key = {p.key: p for p in _walk(params)}
    return {k: _cast(by_key[k], v) if k in by_key else v for k, v in flat.items()}
