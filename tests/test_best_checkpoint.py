"""`metagan train` keeps the checkpoint of its best meta-val evaluation beside the last one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metagan.checkpoint import load_checkpoint
from metagan.run import BEST, LAST, is_better, resume_config, train

from .conftest import tiny_config


def evaluations(run: Path) -> list[dict]:
    """The meta-val records of metrics.jsonl (not the final test record)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [d for d in lines if "val_accuracy" in d and "test_accuracy" not in d]


def test_the_best_checkpoint_is_the_first_evaluation_at_the_highest_meta_val_accuracy(
        tmp_path: Path) -> None:
    cfg = tiny_config("protonet", **{"train.iterations": 8, "schedule.eval_every": 1,
                                     "optim.lr": 0.01})
    train(cfg, tmp_path / "run")
    evals = evaluations(tmp_path / "run")
    assert len(evals) == 8
    accuracies = [e["val_accuracy"] for e in evals]
    assert len(set(accuracies)) > 1  # the choice is not trivial
    _, state, metrics = load_checkpoint(tmp_path / "run" / BEST)
    top = max(accuracies)
    assert metrics["val_accuracy"] == top
    assert state["iteration"] == metrics["iteration"] == evals[accuracies.index(top)]["iteration"]
    _, last, _ = load_checkpoint(tmp_path / "run" / LAST)
    assert last["iteration"] == 8


def test_a_resumed_run_keeps_the_best_of_the_straight_run(tmp_path: Path) -> None:
    cfg = tiny_config("protonet", **{"train.iterations": 8, "schedule.eval_every": 1,
                                     "schedule.checkpoint_every": 4, "optim.lr": 0.01})
    train(cfg, tmp_path / "straight")
    train(tiny_config("protonet", **{"train.iterations": 4, "schedule.eval_every": 1,
                                     "schedule.checkpoint_every": 4, "optim.lr": 0.01}),
          tmp_path / "split")
    train(resume_config(tmp_path / "split", {"train.iterations": 8}), tmp_path / "split",
          resume=True)
    _, _, straight = load_checkpoint(tmp_path / "straight" / BEST)
    _, _, split = load_checkpoint(tmp_path / "split" / BEST)
    assert (split["iteration"], split["val_accuracy"]) == (straight["iteration"],
                                                           straight["val_accuracy"])


@pytest.mark.parametrize("summary, best, better", [
    ({"val_accuracy": 0.6}, {"val_accuracy": 0.5}, True),
    ({"val_accuracy": 0.5}, {"val_accuracy": 0.5}, False),  # a tie keeps the earlier one
    ({"val_kid": 0.1}, {"val_kid": 0.2}, True),  # KID: lower is better
    ({"val_kid": 0.3}, {"val_kid": 0.2}, False),
    ({"val_kid": float("nan")}, None, False),  # a diverged generator is never the best
    ({"val_accuracy": 0.2}, None, True),
    ({"loss": 1.0}, None, False),  # no meta-val metric to select on
])
def test_selection(summary: dict, best: dict | None, better: bool) -> None:
    assert is_better(summary, best) is better
