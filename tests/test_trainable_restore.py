"""The trial actor's restore: from the newest stored checkpoint when the one Tune names is gone.

Tune's experiment snapshot (about every 10 s) can name a checkpoint that `num_to_keep` deleted
since; a driver killed in that window left the trial unrecoverable (the flaky resume test's
root cause). These run the Trainable in-process, without a Ray cluster.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from metagan.space import SearchSpec, parse_spec
from metagan.tune.trainable import EpisodeTrainable, newest_stored_checkpoint

from .conftest import tiny_data

pytestmark = pytest.mark.ray

SPEC = parse_spec({"base": tiny_data("protonet", **{
                       "train.iterations": 40, "schedule.eval_every": 5,
                       "schedule.eval_episodes": 4, "schedule.checkpoint_every": 5}),
                   "space": {"optim.lr": {"choice": [0.001]}},
                   "scheduler": {"name": "none"}})


def trainable_of(spec: SearchSpec) -> type[EpisodeTrainable]:
    """The trial class of `spec`, run in-process (setup gets the spec as tune.with_parameters
    passes it on a cluster)."""
    class Trial(EpisodeTrainable):
        def setup(self, config):
            super().setup(config, spec=spec)
    return Trial


LocalTrainable = trainable_of(SPEC)


def _checkpoints(trainable: EpisodeTrainable, trial: Path, n: int) -> list[dict]:
    """Train and checkpoint `n` times into trial/checkpoint_00000i; the reports."""
    reports = []
    for i in range(n):
        reports.append(trainable.train())
        d = trial / f"checkpoint_{i:06d}"
        d.mkdir(parents=True)
        trainable.save_checkpoint(str(d))
    return reports


def _result(path: Path, training_iteration: int):
    from ray import tune
    from ray.train._internal.checkpoint_manager import _TrainingResult

    return _TrainingResult(checkpoint=tune.Checkpoint(str(path), filesystem=pafs.LocalFileSystem()),
                           metrics={"training_iteration": training_iteration})


def test_a_rotated_out_checkpoint_restores_from_the_newest_complete_one(tmp_path: Path) -> None:
    trial = tmp_path / "trial"
    original = LocalTrainable({"optim.lr": 0.001})
    _checkpoints(original, trial, 3)
    shutil.rmtree(trial / "checkpoint_000001")         # the one the stale snapshot names
    torn = trial / "checkpoint_000003"                 # an upload cut short: not complete
    torn.mkdir()
    shutil.copy(trial / "checkpoint_000002" / "state.pt", torn / "state.pt")
    fs = pafs.LocalFileSystem()
    assert newest_stored_checkpoint(fs, str(trial / "checkpoint_000001")) == str(
        trial / "checkpoint_000002")

    resumed = LocalTrainable({"optim.lr": 0.001})
    resumed.restore(_result(trial / "checkpoint_000001", 2))
    assert resumed.loop.iteration == 15 and resumed.iteration == 3  # checkpoint_000002's counters
    # It continues exactly as the original did from there.
    nxt_original, nxt_resumed = original.train(), resumed.train()
    assert nxt_resumed["iteration"] == nxt_original["iteration"] == 20
    assert nxt_resumed["val_accuracy"] == nxt_original["val_accuracy"]
    for (k, a), (_, b) in zip(original.loop.method.state_dict().items(),
                              resumed.loop.method.state_dict().items()):
        assert torch.equal(a, b), k


def test_with_no_complete_checkpoint_left_tune_reports_the_missing_one(tmp_path: Path) -> None:
    trial = tmp_path / "trial"
    _checkpoints(LocalTrainable({"optim.lr": 0.001}), trial, 1)
    (trial / "checkpoint_000000" / "metrics.json").unlink()
    assert newest_stored_checkpoint(pafs.LocalFileSystem(), str(trial / "checkpoint_000001")) is None
    with pytest.raises(ValueError, match="does not exist on storage anymore"):
        LocalTrainable({"optim.lr": 0.001}).restore(_result(trial / "checkpoint_000001", 1))


def test_a_half_deleted_checkpoint_restores_from_the_newest_complete_one(tmp_path: Path) -> None:
    trial = tmp_path / "trial"
    _checkpoints(LocalTrainable({"optim.lr": 0.001}), trial, 3)
    (trial / "checkpoint_000002" / "state.pt").unlink()  # its deletion was under way
    resumed = LocalTrainable({"optim.lr": 0.001})
    resumed.restore(_result(trial / "checkpoint_000002", 3))
    assert resumed.loop.iteration == 10 and resumed.iteration == 2  # checkpoint_000001's


def test_a_diverged_trial_reports_the_worst_value_and_keeps_its_last_good_one() -> None:
    spec = parse_spec({"base": tiny_data("maml", **{
                           "train.iterations": 40, "meta.inner_lr": 1e12, "schedule.eval_every": 1,
                           "schedule.eval_episodes": 4, "schedule.checkpoint_every": 1}),
                       "space": {"optim.lr": {"choice": [0.001]}},
                       "scheduler": {"name": "none"}})
    trial = trainable_of(spec)({"optim.lr": 0.001})
    reports = []
    while not reports or not reports[-1].get("done"):
        reports.append(trial.train())
    last = reports[-1]
    assert last["diverged"] == 1 and last["val_accuracy"] == 0.0  # the worst, for a max metric
    good = [r["val_accuracy"] for r in reports[:-1]]
    assert good and last["last_good_val_accuracy"] == good[-1]  # it ran a while first


def test_train_and_a_trial_follow_one_schedule(tmp_path: Path) -> None:
    """One runner: `metagan train` and a search trial of the same config evaluate at the same
    iterations with the same meta-val values, and checkpoint at the same iterations."""
    import json

    from metagan.run import read_records, train

    spec = parse_spec({"base": tiny_data("protonet", **{
                           "train.iterations": 12, "schedule.eval_every": 3,
                           "schedule.eval_episodes": 4, "schedule.checkpoint_every": 6}),
                       "space": {"optim.lr": {"choice": [0.001]}},
                       "scheduler": {"name": "none"}})
    trial = trainable_of(spec)({"optim.lr": 0.001})
    reports = []
    while not reports or not reports[-1]["done"]:
        reports.append(trial.train())
    run = tmp_path / "run"
    train(spec.config_for({"optim.lr": 0.001}), run)
    evaluations = [r for r in read_records(run / "metrics.jsonl")
                   if "val_accuracy" in r and "test_accuracy" not in r]
    assert [r["iteration"] for r in reports] == [r["iteration"] for r in evaluations] == [3, 6, 9, 12]
    assert [r["val_accuracy"] for r in reports] == [r["val_accuracy"] for r in evaluations]
    assert [r["iteration"] for r in reports if r["should_checkpoint"]] == [6, 12]
    saved = json.loads((run / "checkpoints" / "last" / "metrics.json").read_text())
    assert saved["iteration"] == 12
