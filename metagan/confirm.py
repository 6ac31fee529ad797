"""Selection with less noise: a search's best trials scored again on more meta-val tasks.

A search keeps the checkpoint with the single best report, each report a mean over
`schedule.eval_episodes` meta-val tasks (200 in the shipped spaces, about +-1 point). Picking
the largest of many such estimates favours the luckiest one (the winner's curse), so the
winner's meta-test accuracy falls short of what its meta-val promised. Re-scoring the
`search.confirm_top` best trials on `search.confirm_episodes` meta-val tasks, and picking among
those, shrinks that noise; meta-test is never read. The tasks are the run's own meta-val tasks
(they depend on train.seed and the split, and a confirmed search does not vary train.seed) in
the base config's evaluation shape (its eval ways, shots and queries, even for a trial that
searched its own), so every candidate is scored on the same tasks (paired), and for trials of
that shape the search's tasks are the first of them. Candidates are named relative to the
experiment (`trial/checkpoint_N`), so the record survives moving or syncing the experiment.

Within a trial, the search's own choice of checkpoint is as noisy as its choice of trial (one
200-task report each, the largest of a dozen), so every stored checkpoint of a re-scored trial
(`checkpoint.keep` best and its latest) is re-scored on the same tasks, and the trial stands for
its latest checkpoint (what its config trains) unless an earlier one beats it by a paired 95%
interval: stopping early is a choice the evidence must carry, as leaving the base is. A
candidate's "key" is that checkpoint, its "ranked_key" the one the search's reports ranked
first (what staleness is judged by), its "checkpoints" each one re-scored, with "vs_latest".

With `base` (the search's starting point, `search.keep_base`), the trial that ran the base
config is re-scored too and stays the answer unless a candidate beats it on the re-scored tasks
by a paired 95% interval above zero: a search whose best trials meta-val cannot tell apart from
where it started answers with where it started, rather than with the luckiest of equals. The
record then holds "base" (which may also be a candidate) and each candidate's "vs_base" (paired
difference and its 95% half-width; 0 for the base itself). Without a stored checkpoint of the
base trial, one warning, and the best re-scored candidate is the answer.
"""

from __future__ import annotations

import math
import sys
import tempfile
from typing import Any

import torch

from .config import ConfigError, build_config
from .loop import mean_ci95
from .results import Experiment, StoredCheckpoint, checkpoint_key, warn
from .run import load_loop
from .space import CONFIRMABLE


def confirm_best(found: Experiment, top: int, episodes: int, device: str | None = None,
                 base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-score the stored checkpoints of the `top` best trials on `episodes` meta-val tasks (and
    of the `base` point's trial, given one), store the record in the experiment
    (`Experiment.best` then answers with its winner), return it."""
    metric, mode = found.metric, found.mode
    if (metric, mode) != (CONFIRMABLE, "max"):
        raise ConfigError(f"confirm: re-scoring is for {CONFIRMABLE!r} (max); experiment "
                          f"{found.name!r} searched {metric!r} ({mode})")
    ranking = found.ranking()
    ranked = ranking[:top]
    if not ranked:
        raise ConfigError(f"experiment {found.name!r}: no stored checkpoint holds {metric!r}")
    shape = scoring_shape(found.space)
    scores: dict[str, torch.Tensor] = {}  # checkpoint key -> its per-task accuracies

    def scored(stored: StoredCheckpoint) -> dict[str, Any]:
        key = checkpoint_key(stored)
        if key not in scores:
            with tempfile.TemporaryDirectory(prefix="metagan-confirm-") as tmp:
                scores[key] = load_loop(found.download(stored.uri, tmp), device).task_accuracies(
                    "val", episodes, **shape)
        mean, ci = mean_ci95(scores[key])
        return {"key": key, "trial": stored.trial, "trial_id": found.trial_id(stored.trial),
                "checkpoint": stored.uri, "iteration": int(stored.metrics.get("iteration", 0)),
                "search_value": stored.value(metric), "confirmed": mean, "ci95": ci}

    def scored_trial(top: StoredCheckpoint) -> dict[str, Any]:
        each = [scored(c) for c in found.checkpoints_of(top.trial, metric)]  # top among them
        chosen = unless_beaten(each[-1], each[:-1], scores, "vs_latest")
        each[-1]["vs_latest"] = {"diff": 0.0, "ci95": 0.0}
        return {**chosen, "ranked_key": checkpoint_key(top), "checkpoints": [
            {k: c[k] for k in ("key", "iteration", "search_value", "confirmed", "ci95", "vs_latest")}
            for c in each]}

    candidates = [scored_trial(stored) for stored in ranked]
    # max keeps the first of equals: the candidate the search itself ranked higher.
    winner = max(candidates, key=lambda c: c["confirmed"])
    record: dict[str, Any] = {"metric": metric, "mode": mode, "top": top, "episodes": episodes,
                              "tasks": shape}
    if base is not None:
        stored_base = base_checkpoint(found, ranking, base)
        if stored_base is None:
            warn(f"experiment {found.name!r}: no stored checkpoint of the base config's trial; "
                 "the best re-scored trial is the answer")
        else:
            record["base"] = scored_trial(stored_base)
            winner = keep_base_unless_beaten(candidates, record["base"], scores)
    record.update(best=winner["key"], candidates=candidates)
    found.write_confirmed(record)
    return record


def scoring_shape(space: dict[str, Any]) -> dict[str, int]:
    """The task shape every candidate is re-scored in: the stored base config's evaluation
    ways, shots and queries (a ConfigError if the stored base is not a valid config)."""
    base = space.get("base")
    if not isinstance(base, dict):
        raise ConfigError("the stored space has no base config")
    t = build_config(base, check_paths=False).task
    return {"ways": t.eval_ways or t.ways, "shots": t.shots, "queries": t.queries}


def keep_base_unless_beaten(candidates: list[dict[str, Any]], base: dict[str, Any],
                            scores: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The best re-scored candidate whose paired difference from the base has a 95% interval
    above zero, else the base; each candidate's difference is added to it as "vs_base"."""
    return unless_beaten(base, candidates, scores, "vs_base")


def unless_beaten(default: dict[str, Any], challengers: list[dict[str, Any]],
                  scores: dict[str, torch.Tensor], field: str) -> dict[str, Any]:
    """The best challenger whose paired per-task difference from `default` has a 95% interval
    above zero, else `default`; each challenger's difference is added to it as `field`."""
    beaten = []
    for c in challengers:
        diff, ci = mean_ci95(scores[c["key"]] - scores[default["key"]])
        c[field] = {"diff": diff, "ci95": ci}
        if c["key"] != default["key"] and diff - ci > 0:
            beaten.append(c)
    return max(beaten, key=lambda c: c["confirmed"], default=default)  # first of equals, as above


def base_checkpoint(found: Experiment, ranking: list[StoredCheckpoint],
                    base: dict[str, Any]) -> StoredCheckpoint | None:
    """The best stored checkpoint of the earliest trial whose sampled values are the base
    point's (the search's first trial), or None."""
    for stored in sorted(ranking, key=lambda c: trial_number(c.trial)):
        if same_point(found.params(stored), base):
            return stored
    return None


def trial_number(trial: str) -> int:
    """Tune's running number of a trial, from its directory name (`..._<id>_<N>_...`)."""
    parts = trial.split("_")
    return int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else sys.maxsize


def same_point(params: dict[str, Any], point: dict[str, Any]) -> bool:
    """Whether a trial's sampled values are this point (floats to 1e-9 relative)."""
    if set(params) != set(point):
        return False
    for key, want in point.items():
        got = params[key]
        if isinstance(got, bool) != isinstance(want, bool):  # True is not 1, False not 0
            return False
        if isinstance(want, float) or isinstance(got, float):
            if not isinstance(got, (int, float)) or not isinstance(want, (int, float)):
                return False
            if not math.isclose(float(got), float(want), rel_tol=1e-9):
                return False
        elif got != want:
            return False
    return True
