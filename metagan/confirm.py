"""Selection with less noise: a search's best trials scored again on more meta-val tasks.

A search keeps the checkpoint with the single best report, each report a mean over
`schedule.eval_episodes` meta-val tasks (200 in the shipped spaces, about +-1 point). Picking
the largest of many such estimates favours the luckiest one (the winner's curse), so the
winner's meta-test accuracy falls short of what its meta-val promised. Re-scoring the
`search.confirm_top` best trials on `search.confirm_episodes` meta-val tasks, and picking among
those, shrinks that noise; meta-test is never read. The tasks are the run's own meta-val tasks
(they depend on train.seed and the split, and a confirmed search does not vary train.seed), so
the search's tasks are the first of them and every candidate is scored on the same ones
(paired). Candidates are named relative to the experiment (`trial/checkpoint_N`), so the record
survives moving or syncing the experiment.
"""

from __future__ import annotations

import tempfile
from typing import Any

from .config import ConfigError
from .results import Experiment, checkpoint_key
from .run import load_loop
from .space import CONFIRMABLE


def confirm_best(found: Experiment, top: int, episodes: int,
                 device: str | None = None) -> dict[str, Any]:
    """Re-score the `top` best trials' best checkpoints on `episodes` meta-val tasks, store the
    record in the experiment (`Experiment.best` then answers with its winner), return it."""
    metric, mode = found.metric, found.mode
    if (metric, mode) != (CONFIRMABLE, "max"):
        raise ConfigError(f"confirm: re-scoring is for {CONFIRMABLE!r} (max); experiment "
                          f"{found.name!r} searched {metric!r} ({mode})")
    ranked = found.ranking()[:top]
    if not ranked:
        raise ConfigError(f"experiment {found.name!r}: no stored checkpoint holds {metric!r}")
    candidates: list[dict[str, Any]] = []
    for stored in ranked:
        with tempfile.TemporaryDirectory(prefix="metagan-confirm-") as tmp:
            scored = load_loop(found.download(stored.uri, tmp), device).evaluate("val", episodes)
        candidates.append({"key": checkpoint_key(stored), "trial": stored.trial,
                           "trial_id": found.trial_id(stored.trial), "checkpoint": stored.uri,
                           "iteration": int(stored.metrics.get("iteration", 0)),
                           "search_value": stored.value(metric),
                           "confirmed": float(scored["accuracy"]),
                           "ci95": float(scored["ci95"])})
    # Ties go to the earlier candidate: the one the search itself ranked higher.
    winner = max(candidates, key=lambda c: (c["confirmed"], -candidates.index(c)))
    record = {"metric": metric, "mode": mode, "top": top, "episodes": episodes,
              "best": winner["key"], "candidates": candidates}
    found.write_confirmed(record)
    return record
