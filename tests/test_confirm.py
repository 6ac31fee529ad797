"""Re-scoring a search's best trials on more meta-val tasks (search.confirm_top).

Three stored trials hold real checkpoints of tiny ProtoNet runs (1, 12 and 4 meta-iterations),
with the values the search "reported" written so that the search ranks them in a chosen order.
The re-scoring must evaluate exactly the top ones on the meta-val tasks, pick the best
re-scored one, and every reader of the store must then answer with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metagan import api, results
from metagan.config import ConfigError
from metagan.confirm import confirm_best
from metagan.results import Experiment
from metagan.run import LAST, load_loop, train
from metagan.space import parse_spec
from metagan.storage import parse_storage

from .conftest import tiny_config, tiny_data

EPISODES = 40
ITERATIONS = {"a": 1, "b": 12, "c": 4}


def trial_name(key: str) -> str:
    return f"EpisodeTrainable_{key * 8}_0_x_2026-12-03_07-00-00"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny ProtoNet runs of the same seed (so the same meta-val tasks), trained for different
    lengths: their meta-val accuracies differ."""
    root = tmp_path_factory.mktemp("confirm-runs")
    out = {}
    for key, iterations in ITERATIONS.items():
        train(tiny_config(**{"train.iterations": iterations}), root / key)
        out[key] = root / key / LAST
    return out


@pytest.fixture(scope="module")
def true_val(runs: dict[str, Path]) -> dict[str, float]:
    """Each run's meta-val accuracy on EPISODES tasks, measured directly."""
    return {k: load_loop(p).evaluate("val", EPISODES)["accuracy"] for k, p in runs.items()}


def space_data(**search: object) -> dict:
    """A valid tiny space with these search settings."""
    return {"base": tiny_data("protonet", **{"schedule.eval_every": 3}),
            "space": {"model.hidden": {"choice": [8]}}, "search": search,
            "scheduler": {"name": "none"}}


def make_store(root: Path, runs: dict[str, Path], reported: dict[str, float]) -> Experiment:
    """An experiment whose trials hold the runs' checkpoints with these reported values."""
    spec = parse_spec(space_data(confirm_top=2, confirm_episodes=EPISODES))
    results.write_space(parse_storage(str(root)), "exp", spec.to_dict())
    for key, run in runs.items():
        trial = root / "exp" / trial_name(key)
        ckpt = trial / "checkpoint_000000"
        shutil.copytree(run, ckpt)
        metrics = {"iteration": ITERATIONS[key], "val_accuracy": reported[key], "loss": 0.5}
        (ckpt / "metrics.json").write_text(json.dumps(metrics))
        (ckpt / "params.json").write_text(json.dumps({"model.hidden": 8}))
        (trial / "result.json").write_text(json.dumps({"trial_id": key * 8, **metrics}) + "\n")
    return Experiment.open(str(root), "exp")


def test_the_top_trials_are_rescored_and_the_best_rescored_one_is_the_answer(
        tmp_path: Path, runs: dict[str, Path], true_val: dict[str, float]) -> None:
    assert len(set(true_val.values())) == 3  # the runs differ, so the choice below is real
    worse, better = sorted(("a", "b"), key=lambda k: true_val[k])
    # The search was lucky on the worse run: it ranks it first, the better second, c last.
    reported = {worse: 0.99, better: 0.95, "c": 0.90}
    found = make_store(tmp_path / "store", runs, reported)
    assert found.best().trial == trial_name(worse)  # before re-scoring: the lucky one

    record = confirm_best(found, top=2, episodes=EPISODES)
    assert [c["trial"] for c in record["candidates"]] == [trial_name(worse), trial_name(better)]
    for c in record["candidates"]:  # each re-scored on the same meta-val tasks as measured above
        key = c["trial"].split("_")[1][0]
        assert c["confirmed"] == pytest.approx(true_val[key])
        assert c["search_value"] == reported[key]
    assert record["best"] == record["candidates"][1]["key"] == f"{trial_name(better)}/checkpoint_000000"

    again = Experiment.open(str(tmp_path / "store"), "exp")
    best = again.best()
    assert best.trial == trial_name(better)
    assert best.value == reported[better]  # what the search reported, beside the re-scored value
    assert (best.confirmed, best.confirmed_episodes) == (pytest.approx(true_val[better]), EPISODES)
    assert api.best_result("exp", str(tmp_path / "store")).checkpoint == best.checkpoint
    # Another objective is ranked by the reports: the re-scoring was of val_accuracy.
    assert again.best(metric="val_accuracy", mode="min").trial == trial_name("c")


def test_top_one_keeps_the_searchs_choice(tmp_path: Path, runs: dict[str, Path]) -> None:
    found = make_store(tmp_path / "store", runs, {"a": 0.5, "b": 0.6, "c": 0.99})
    record = confirm_best(found, top=1, episodes=EPISODES)
    assert [c["trial"] for c in record["candidates"]] == [trial_name("c")]
    assert Experiment.open(str(tmp_path / "store"), "exp").best().trial == trial_name("c")


def test_a_moved_experiment_keeps_its_rescoring(tmp_path: Path, runs: dict[str, Path]) -> None:
    found = make_store(tmp_path / "store", runs, {"a": 0.99, "b": 0.98, "c": 0.5})
    record = confirm_best(found, top=3, episodes=EPISODES)
    shutil.copytree(tmp_path / "store", tmp_path / "moved")
    shutil.rmtree(tmp_path / "store")
    best = Experiment.open(str(tmp_path / "moved"), "exp").best()
    assert best.confirmed is not None
    assert best.checkpoint == str(tmp_path / "moved" / "exp" / record["best"])


def test_a_damaged_or_stale_rescoring_is_named_and_never_trusted(
        tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    found = make_store(tmp_path / "store", runs, {"a": 0.99, "b": 0.6, "c": 0.5})
    path = tmp_path / "store" / "exp" / results.CONFIRMED_FILE
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"confirmed\.json: damaged"):
        Experiment.open(str(tmp_path / "store"), "exp").best()
    warned = Experiment.open(str(tmp_path / "store"), "exp", on_damaged=results.warn).best()
    assert warned.trial == trial_name("a") and warned.confirmed is None
    assert "confirmed.json: damaged" in capsys.readouterr().err
    # The search went on (resumed) after the re-scoring: a new leader was never re-scored, so
    # the record is not trusted, with one warning.
    confirm_best(found, top=2, episodes=EPISODES)
    assert Experiment.open(str(tmp_path / "store"), "exp").best().confirmed is not None
    newer = tmp_path / "store" / "exp" / trial_name("d")
    shutil.copytree(tmp_path / "store" / "exp" / trial_name("c"), newer)
    metrics = json.loads((newer / "checkpoint_000000" / "metrics.json").read_text())
    (newer / "checkpoint_000000" / "metrics.json").write_text(
        json.dumps({**metrics, "val_accuracy": 0.999}))
    later = Experiment.open(str(tmp_path / "store"), "exp")
    assert later.best().trial == trial_name("d") and later.best().confirmed is None
    assert capsys.readouterr().err.count("no longer the best trials") == 1


@pytest.mark.parametrize("search, message", [
    ({"confirm_top": -1}, "search.confirm_top must be >= 0"),
    ({"confirm_top": 2, "confirm_episodes": 0}, "search.confirm_episodes >= 1"),
    ({"confirm_top": 2, "metric": "loss", "mode": "min"}, "re-scoring on more episodes is for"),
    ({"confirm_top": 2, "mode": "min"}, "re-scoring on more episodes is for"),
    ({"confirm_episodes": 500}, "search.confirm_episodes: read only with search.confirm_top > 0"),
    ({"confirm_top": 2, "confirm_episodes": 8}, r"must exceed schedule.eval_episodes \(8\)"),
    ({"confirm_top": 2, "algorithm": "grid", "num_samples": 2}, "not be paired"),
])
def test_impossible_confirm_settings_are_refused(search: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(space_data(**search))
