"""The search driver: Ray Tune over `EpisodeTrainable`, with HyperOpt, ASHA and storage."""

from __future__ import annotations

import json
import math
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from ..config import ConfigError, first_line
from ..confirm import confirm_best
from ..results import (
    TRIAL_NAME,
    Experiment,
    NoExperiment,
    SearchFailed,
    read_space,
    space_exists,
    space_path,
    warn,
    write_space,
)
from ..space import (
    GRID,
    VALUE,
    SearchSpec,
    cast_sample,
    check_points,
    flatten_sample,
    grid_trials,
    parse_spec,
)
from ..storage import Storage, StorageError, check_name, check_storage, parse_storage
from .cluster import ClusterError, check_gcs_address
from .trainable import EpisodeTrainable


class StorageOutage(StorageError):
    """Storage stayed unreachable longer than `storage.outage_s` during a search."""


@dataclass
class SearchResult:
    """The outcome of a search: the best stored checkpoint (the results store's answer, as in
    `metagan.api.best_result` and `metagan report`) and where everything is stored."""

    name: str
    experiment: str           # URI of the experiment directory
    metric: str
    mode: str
    best_value: float         # `metric` in the best stored checkpoint's metrics.json
    best_params: dict[str, Any]
    best_config: dict[str, Any]
    best_checkpoint: str      # URI of that checkpoint directory
    best_trial: str           # its trial's id
    best_iteration: int       # the meta-iteration it was saved at
    best_reported: float      # the best value any report gave (it may have no checkpoint)
    best_reported_trial: str
    trials: list[dict[str, Any]]
    confirmed: dict[str, Any] | None = None  # the top trials re-scored (search.confirm_top)

    def summary(self) -> str:
        """What the CLI prints at the end."""
        lines = [f"best trial {self.best_trial}: {self.metric} = {self.best_value:.4f} ({self.mode}), "
                 f"stored checkpoint at iteration {self.best_iteration}",
                 "  params: " + json.dumps(self.best_params, sort_keys=True),
                 f"  checkpoint: {self.best_checkpoint}", f"  experiment: {self.experiment}"]
        if self.confirmed is not None:
            c = self.confirmed
            lines.append(f"  chosen on {c['episodes']} meta-val tasks among the {len(c['candidates'])} "
                         "best trials: " + ", ".join(
                             f"{x['trial_id']} {x['confirmed']:.4f} (iteration {x['iteration']})"
                             for x in c["candidates"]))
            if "base" in c:  # search.keep_base
                b = c["base"]
                verdict = ("kept: no candidate beats it by a paired 95% interval"
                           if c["best"]["key"] == b["key"] else "beaten")
                lines.append(f"  the base config's trial {b['trial_id']} {b['confirmed']:.4f} "
                             f"(iteration {b['iteration']}): {verdict}")
        sign = 1 if self.mode == "max" else -1
        if self.confirmed is None and sign * self.best_reported > sign * self.best_value:
            lines.append(f"  best reported: {self.metric} = {self.best_reported:.4f} by trial "
                         f"{self.best_reported_trial}, at a step with no stored checkpoint "
                         "(schedule.checkpoint_every / checkpoint.keep)")
        return "\n".join(lines)



def hyperopt_space(params: tuple, prefix: str = "") -> dict[str, Any]:
    """The space as a native hyperopt space (nested choices keep labels unique by prefix)."""
    from hyperopt import hp

    out: dict[str, Any] = {}
    for p in params:
        label = prefix + p.key
        if p.kind == "uniform":
            out[p.key] = hp.uniform(label, *p.args)
        elif p.kind == "loguniform":
            out[p.key] = hp.loguniform(label, math.log(p.args[0]), math.log(p.args[1]))
        elif p.kind == "quniform":
            out[p.key] = hp.quniform(label, *p.args)
        elif p.kind == "randint":
            out[p.key] = hp.randint(label, p.args[0], p.args[1])
        elif p.branches is None:
            out[p.key] = hp.choice(label, list(p.args))
        else:
            out[p.key] = hp.choice(label, [
                {VALUE: v, **hyperopt_space(p.branches[v], f"{label}={v}/")} for v in p.args])
    return out


def tune_space(params: tuple) -> dict[str, Any]:
    """The space as Ray Tune domains (no conditional choices), for searches without a searcher."""
    from ray import tune

    make: dict[str, Callable[..., Any]] = {
        "uniform": tune.uniform, "loguniform": tune.loguniform, "quniform": tune.quniform,
        "randint": tune.randint}
    return {p.key: tune.choice(list(p.args)) if p.kind == "choice" else make[p.kind](*p.args)
            for p in params}

def _search_alg(spec: SearchSpec):
    from ray import tune
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch

    s = spec.search
    if s.algorithm == "grid":  # every repeat is a point of its own, with its own seed
        return (BasicVariantGenerator(max_concurrent=s.max_concurrent, random_state=s.seed),
                {GRID: tune.grid_search(grid_trials(spec))})
    if spec.scheduler.name == "pbt":  # PBT takes no search algorithm: Tune's own random draws
        return (BasicVariantGenerator(max_concurrent=s.max_concurrent, random_state=s.seed),
                tune_space(spec.params))
    # Random search is hyperopt's own: TPE draws from the prior for its initial points.
    initial = spec.samples if s.algorithm == "random" else s.initial_points
    # A native space (conditional choices): metric and mode must be given here as well.
    alg = HyperOptSearch(space=hyperopt_space(spec.params), metric=s.metric, mode=s.mode,
                         points_to_evaluate=spec.start_points() or None,
                         n_initial_points=initial, random_state_seed=s.seed)
    return ConcurrencyLimiter(alg, max_concurrent=s.max_concurrent), {}


def _scheduler(spec: SearchSpec):
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        MedianStoppingRule,
        PopulationBasedTraining,
    )

    sch = spec.scheduler
    max_t = sch.max_iterations or spec.iterations
    if sch.name == "asha":
        return ASHAScheduler(time_attr="iteration", max_t=max_t,
                             grace_period=sch.grace_period, reduction_factor=sch.reduction_factor)
    if sch.name == "median":
        return MedianStoppingRule(time_attr="iteration", grace_period=sch.grace_period,
                                  min_samples_required=sch.min_samples_required)
    if sch.name == "pbt":
        from ray import tune

        # Only continuous values are perturbed: a trial continues from another's weights, so
        # what shapes the model (widths, choices) must stay as it is.
        mutations = {p.key: (tune.loguniform if p.kind == "loguniform" else tune.uniform)(*p.args)
                     for p in spec.params if p.kind in ("uniform", "loguniform")}
        return PopulationBasedTraining(time_attr="iteration", perturbation_interval=sch.perturbation_interval,
                                       hyperparam_mutations=mutations, require_attrs=False)
    return FIFOScheduler()


def _outage_callback(storage: Storage):
    """A Tune callback that ends the search when storage stays unreachable too long."""
    from ray.tune import Callback

    from ..storage import s3_client

    class StorageWatch(Callback):
        def __init__(self) -> None:
            self.down_since: float | None = None
            self.next_check = 0.0

        def on_step_begin(self, iteration, trials, **info) -> None:
            now = time.monotonic()
            if not storage.is_s3 or now < self.next_check:
                return
            self.next_check = now + 5.0
            try:
                s3_client(timeout_s=2.0).head_bucket(Bucket=storage.bucket)
                self.down_since = None
            except Exception:  # noqa: BLE001 - any failure to answer counts as down
                self.down_since = self.down_since or now
                if now - self.down_since > storage.outage_s:
                    raise StorageOutage(  # noqa: B904 - the failure is the message
                        f"storage {storage.uri} unreachable for more than {storage.outage_s:.0f} s: "
                        "the search stopped. Everything stored before the outage stays readable; "
                        "continue with `metagan search --resume NAME --storage URI` when it is back")

    return StorageWatch()


def _trainable(spec: SearchSpec, name: str):
    from ray import tune

    r = spec.resources
    wrapped = tune.with_resources(tune.with_parameters(EpisodeTrainable, spec=spec, experiment=name),
                                  {"cpu": r.cpu, "gpu": r.gpu})
    # Trial actors show as ray::EpisodeTrainable.* (dashboard, ps) rather than the wrapper's name,
    # and Tune names trial directories after it: the name the results store looks for.
    wrapped.__name__ = wrapped.__qualname__ = TRIAL_NAME
    return wrapped


def _score(spec: SearchSpec) -> str | None:
    """What ranks the checkpoints a trial keeps. PBT keeps the newest: another trial may be
    about to continue from the one it just exploited, whatever its score."""
    if spec.scheduler.name == "pbt":
        return None
    return spec.checkpoint.score or spec.search.metric


def read_stored_spec(storage: Storage, name: str) -> SearchSpec:
    """The space a stored experiment was started with."""
    try:
        data = read_space(storage, name)
    except NoExperiment as e:
        raise ConfigError(f"--resume {name}: {e}") from None
    try:
        return parse_spec(data)
    except ConfigError as e:
        raise ConfigError(f"{storage.uri_of(space_path(storage, name))}: {e}") from None


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    # "local": a new Ray on this machine, never a stale cluster Ray remembers in
    # /tmp/ray/ray_current_cluster; inside a Ray Job, RAY_ADDRESS names the job's cluster.
    joining = bool(address)
    address = check_gcs_address(address or os.environ.get("RAY_ADDRESS") or "local")
    if joining and "RAY_AUTH_MODE" not in os.environ:
        from .cluster import auth_token

        if auth_token():  # joining a cluster: Ray's client sends the token only in token mode
            os.environ["RAY_AUTH_MODE"] = "token"
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as e:
        raise ClusterError(f"--address {address}: cannot connect to a Ray cluster ({e})") from None


def check_resources(spec: SearchSpec) -> None:
    """Refuse a trial no node of the (known) cluster can ever run, instead of pending forever."""
    import ray

    want = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0.0) >= v for k, v in want.items() if v > 0) for node in nodes):
        return
    most = {k: max((node.get(k, 0.0) for node in nodes), default=0.0) for k in want}
    raise ClusterError(f"resources: a trial asks for {spec.resources.cpu:g} CPU and "
                       f"{spec.resources.gpu:g} GPU, but the largest node of the cluster has "
                       f"{most['CPU']:g} CPU and {most['GPU']:g} GPU (on an autoscaling cluster, "
                       "start such a node first)")


def check_data_fits(spec: SearchSpec) -> None:
    """ConfigError unless every checked point's tasks fit its data splits (loaded once each)."""
    from ..data import load_splits
    from ..loop import check_task_fits

    splits = {}
    for point in check_points(spec):
        cfg = spec.config_for(point)
        if cfg.data not in splits:
            splits[cfg.data] = load_splits(cfg.data)
        check_task_fits(cfg, splits[cfg.data])


def run_search(spec: SearchSpec, name: str | None = None, storage: Storage | None = None,
               address: str | None = None, resume: bool = False, verbose: int = 1) -> SearchResult:
    """Run (or, with `resume`, continue) a search; return the best trial."""
    from ray import tune

    name = check_name(name or f"search-{time.strftime('%Y%m%d-%H%M%S')}")
    storage = storage or parse_storage(spec.storage.uri, spec.storage.outage_s)
    # Tune warns on every forced snapshot when checkpoints are frequent; that is by design here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    check_storage(storage)  # before Ray starts: an unreachable bucket costs nothing
    if not resume and space_exists(storage, name):  # never mix a new search into a stored one
        raise ConfigError(f"experiment {name!r} already exists in {storage.uri}: continue it "
                          f"with --resume {name}, or choose another --name")
    if not resume:
        check_data_fits(spec)  # a task the data cannot supply fails here, not in every trial
    _init_ray(address)
    check_resources(spec)
    trainable = _trainable(spec, name)
    callbacks = [_outage_callback(storage)]
    if resume:
        tuner = tune.Tuner.restore(storage.experiment_path(name), trainable=trainable,
                                   resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=storage.filesystem)
    else:
        write_space(storage, name, spec.to_dict())  # so --resume needs only NAME and URI
        search_alg, param_space = _search_alg(spec)
        s, c = spec.search, spec.checkpoint
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=s.metric, mode=s.mode, search_alg=search_alg,
                scheduler=_scheduler(spec), reuse_actors=True,
                time_budget_s=s.time_budget_s or None,
                num_samples=spec.samples if s.algorithm != "grid" else 1),
            run_config=tune.RunConfig(
                name=name, storage_path=storage.storage_path,
                storage_filesystem=storage.filesystem, verbose=verbose, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=spec.failure.max_retries),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=c.keep, checkpoint_frequency=0,  # the schedule's: see trainable.py
                    checkpoint_at_end=False, checkpoint_score_attribute=_score(spec),
                    checkpoint_score_order=s.mode)))
    try:
        grid = tuner.fit()
    except Exception as e:  # Tune may wrap what a callback raised
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, StorageOutage):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise
    if spec.search.confirm_top:
        confirm(spec, storage, name)
    return summarise(spec, grid, storage, name)


def confirm(spec: SearchSpec, storage: Storage, name: str) -> None:
    """Re-score the top trials on the driver (on its GPU when the trials had GPUs); a failure
    is one warning, and the search's own reports then rank (its summary is not lost)."""
    import torch

    device = "cuda" if spec.resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    try:
        confirm_best(Experiment(storage, name, on_damaged=warn), spec.search.confirm_top,
                     spec.search.confirm_episodes, device,
                     base=spec.base_point() if spec.search.keep_base else None)
    except (ConfigError, StorageError, OSError, RuntimeError) as e:
        warn(f"search {name}: re-scoring the top trials failed ({first_line(e, 300)}); the search's own "
             "reports rank its trials")


def summarise(spec: SearchSpec, grid, storage: Storage, name: str) -> SearchResult:
    """A finished ResultGrid's trials, and the best stored checkpoint as the results store
    ranks it (`Experiment.best`); the best reported value is kept beside it."""
    s = spec.search
    found = Experiment(storage, name, on_damaged=warn)
    ranked = {c.trial: c for c in found.ranking()}  # each trial's best stored checkpoint
    trials = []
    errors = [str(r.error).strip().splitlines()[-1] for r in grid if r.error]
    for r in grid:
        if not r.metrics or r.config is None:  # failed before its first report
            continue
        params = cast_sample(spec.params, flatten_sample(r.config.get(GRID, r.config)))
        history = r.metrics_dataframe
        values = history[s.metric].dropna() if history is not None and s.metric in history else []
        best = (max if s.mode == "max" else min)(values) if len(values) else math.nan
        stored = ranked.get(posixpath.basename(r.path.rstrip("/")))
        trials.append({"trial_id": r.metrics.get("trial_id"), "params": params,
                       "best": float(best), "last": r.metrics.get(s.metric),
                       "iteration": r.metrics.get("iteration"),
                       "diverged": bool(r.metrics.get("diverged")),
                       "error": str(r.error).splitlines()[0] if r.error else None,
                       "checkpoint": storage.uri_of(r.checkpoint.path) if r.checkpoint else None,
                       "best_checkpoint": stored.uri if stored else None,
                       "best_stored": stored.value(s.metric) if stored else None})
    scored = [t for t in trials if not math.isnan(t["best"])]
    if not scored:
        why = f"; a trial's error: {errors[0][:300]}" if errors else ""
        raise SearchFailed(f"search {name}: no trial reported {s.metric}{why}")
    reported = (max if s.mode == "max" else min)(scored, key=lambda t: t["best"])
    try:
        top = found.best()
    except ConfigError as e:
        raise SearchFailed(f"search {name}: {e}") from None
    return SearchResult(name=name, experiment=found.uri, metric=top.metric, mode=top.mode,
                        best_value=top.value, best_params=top.params, best_config=top.config,
                        best_checkpoint=top.checkpoint, best_trial=top.trial_id,
                        best_iteration=top.iteration, best_reported=reported["best"],
                        best_reported_trial=reported["trial_id"], trials=trials,
                        confirmed=found.confirmed() if top.confirmed is not None else None)



def dry_run(spec: SearchSpec, samples: int = 3) -> str:
    """The validated space and a few configs drawn from it, as text (no Ray)."""
    import random

    from ..space import sample_point

    rng = random.Random(spec.search.seed)
    out = [yaml.safe_dump({k: v for k, v in spec.to_dict().items() if k != "base"}, sort_keys=False)]
    points = grid_trials(spec)[:samples] if spec.search.algorithm == "grid" else [
        sample_point(spec.params, rng) for _ in range(samples)]
    if spec.search.algorithm != "grid" and spec.scheduler.name != "pbt":
        start = spec.start_points()
        why = ("points_to_evaluate" if spec.search.points_to_evaluate else "the base config"
               if start else "none (start_from_base off, conditional choices, or a base value "
               "outside the space)")
        out.append(f"first trials: {why}: {json.dumps(start, sort_keys=True)}")
    for i, point in enumerate(points):
        cfg = spec.config_for(point)  # validated like a trial's
        out.append(f"sample {i}: {json.dumps(point, sort_keys=True)}  -> method {cfg.method}, "
                   f"{cfg.meta.algorithm}, {cfg.train.iterations} iterations")
    return "\n".join(out)
