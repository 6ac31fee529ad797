"""`metagan train` keeps the checkpoint of its best meta-val evaluation beside the last one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metagan.checkpoint import load_checkpoint
from metagan.methods import Mode
from metagan.run import BEST, LAST, is_better, resume_config, train

from .conftest import tiny_config

SCHEDULE = {"schedule.eval_every": 1, "schedule.checkpoint_every": 4, "optim.lr": 0.01}


def evaluations(run: Path) -> list[dict[str, Any]]:
    """The meta-val records of metrics.jsonl (not the final test record)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [d for d in lines if "val_accuracy" in d and "test_accuracy" not in d]


def test_the_best_checkpoint_is_the_first_evaluation_at_the_highest_meta_val_accuracy(
        tmp_path: Path) -> None:
    train(tiny_config("protonet", **{"train.iterations": 8, **SCHEDULE}), tmp_path / "run")
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


class Killed(Exception):
    """Stands for the process being killed."""


def test_a_run_killed_between_checkpoints_never_has_a_best_ahead_of_its_last(
        tmp_path: Path) -> None:
    """Killed at iteration 7 (last at 4, evaluations at 5 and 6): best is at most iteration 4;
    resumed, it ends with the uninterrupted run's best."""
    cfg = tiny_config("protonet", **{"train.iterations": 8, **SCHEDULE})
    train(cfg, tmp_path / "straight")

    def kill_at_7(metrics: dict[str, Any]) -> None:
        if metrics["iteration"] == 7:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, tmp_path / "killed", on_step=kill_at_7)
    _, last, _ = load_checkpoint(tmp_path / "killed" / LAST)
    _, best, _ = load_checkpoint(tmp_path / "killed" / BEST)
    assert last["iteration"] == 4 and best["iteration"] <= 4
    train(resume_config(tmp_path / "killed", {}), tmp_path / "killed", resume=True)
    _, _, straight = load_checkpoint(tmp_path / "straight" / BEST)
    _, _, resumed = load_checkpoint(tmp_path / "killed" / BEST)
    assert (resumed["iteration"], resumed["val_accuracy"]) == (straight["iteration"],
                                                              straight["val_accuracy"])


def test_a_resumed_run_keeps_a_best_that_nothing_later_beats(tmp_path: Path) -> None:
    """The best's record is carried across --resume: with its accuracy raised to 1.0, no later
    evaluation replaces it (a resume that forgot it would pick one of iterations 5-8)."""
    train(tiny_config("protonet", **{"train.iterations": 4, **SCHEDULE}), tmp_path / "run")
    record = tmp_path / "run" / BEST / "metrics.json"
    before = json.loads(record.read_text())
    record.write_text(json.dumps({**before, "val_accuracy": 1.0}))
    train(resume_config(tmp_path / "run", {"train.iterations": 8}), tmp_path / "run", resume=True)
    _, best, metrics = load_checkpoint(tmp_path / "run" / BEST)
    assert best["iteration"] == before["iteration"] <= 4 and metrics["val_accuracy"] == 1.0


def test_a_damaged_best_record_does_not_stop_a_resume(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    train(tiny_config("protonet", **{"train.iterations": 4, **SCHEDULE}), tmp_path / "run")
    (tmp_path / "run" / BEST / "metrics.json").write_text("{not json")
    train(resume_config(tmp_path / "run", {"train.iterations": 8}), tmp_path / "run", resume=True)
    assert "damaged" in caplog.text
    _, best, metrics = load_checkpoint(tmp_path / "run" / BEST)
    assert best["iteration"] > 4 and 0 <= metrics["val_accuracy"] <= 1


MAX: tuple[str, Mode] = ("val_accuracy", "max")
MIN: tuple[str, Mode] = ("val_kid", "min")


@pytest.mark.parametrize("summary, best, metric, better", [
    ({"val_accuracy": 0.6}, {"val_accuracy": 0.5}, MAX, True),
    ({"val_accuracy": 0.5}, {"val_accuracy": 0.5}, MAX, False),  # a tie keeps the earlier one
    ({"val_kid": 0.1}, {"val_kid": 0.2}, MIN, True),  # KID: lower is better
    ({"val_kid": 0.3}, {"val_kid": 0.2}, MIN, False),
    ({"val_kid": float("nan")}, None, MIN, False),  # a diverged generator is never the best
    ({"val_accuracy": 0.2}, None, MAX, True),
    ({"loss": 1.0}, None, MAX, False),  # no meta-val metric to select on
])
def test_selection(summary: dict[str, Any], best: dict[str, Any] | None,
                   metric: tuple[str, Mode], better: bool) -> None:
    assert is_better(summary, best, metric) is better
