"""Re-scoring a search's best trials on more meta-val tasks (search.confirm_top).

Three stored trials hold real checkpoints of tiny ProtoNet runs (1, 12 and 4 meta-iterations),
with the values the search "reported" written so that the search ranks them in a chosen order.
The re-scoring must evaluate exactly the top ones on the meta-val tasks, pick the best
re-scored one, and every reader of the store must then answer with it. With search.keep_base,
the base config's trial is re-scored too and stays the answer unless a candidate beats it by a
paired 95% interval.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from metagan import api, results
from metagan.config import ConfigError
from metagan.confirm import (
    confirm_best,
    keep_base_unless_beaten,
    same_point,
    trial_number,
    unless_beaten,
)
from metagan.results import Experiment
from metagan.run import LAST, load_loop, train
from metagan.space import parse_spec
from metagan.storage import parse_storage

from .conftest import tiny_config, tiny_data

EPISODES = 40
ITERATIONS = {"a": 1, "b": 12, "c": 4}


def trial_name(key: str, number: int = 0) -> str:
    """A trial directory named as Ray Tune names a searcher's trial: id, running number, values."""
    return f"EpisodeTrainable_{key * 8}_{number}_x_2026-12-03_07-00-00"


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


def make_store(root: Path, runs: dict[str, Path], reported: dict[str, float],
               params: dict[str, dict] | None = None, numbers: dict[str, int] | None = None
               ) -> Experiment:
    """An experiment whose trials hold the runs' checkpoints with these reported values (and
    these sampled values and running numbers per trial; default model.hidden 8 and 0)."""
    spec = parse_spec(space_data(confirm_top=2, confirm_episodes=EPISODES))
    results.write_space(parse_storage(str(root)), "exp", spec.to_dict())
    for key, run in runs.items():
        trial = root / "exp" / trial_name(key, (numbers or {}).get(key, 0))
        ckpt = trial / "checkpoint_000000"
        shutil.copytree(run, ckpt)
        metrics = {"iteration": ITERATIONS.get(key, 0), "val_accuracy": reported[key], "loss": 0.5}
        (ckpt / "metrics.json").write_text(json.dumps(metrics))
        (ckpt / "params.json").write_text(json.dumps((params or {}).get(key, {"model.hidden": 8})))
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


BASE = {"optim.lr": 0.001, "model.hidden": 8}   # the base point of the keep-base stores
OTHER = {"optim.lr": 0.003, "model.hidden": 8}


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ProtoNet run of the same seed trained 300 meta-iterations: far better on meta-val
    than the 1-iteration run."""
    root = tmp_path_factory.mktemp("confirm-long")
    train(tiny_config(**{"train.iterations": 300}), root / "d")
    return root / "d" / LAST


def test_task_accuracies_are_the_tasks_evaluate_scores(runs: dict[str, Path]) -> None:
    loop = load_loop(runs["b"])
    per_task = loop.task_accuracies("val", EPISODES)
    assert per_task.shape == (EPISODES,)
    assert per_task.mean().item() == pytest.approx(loop.evaluate("val", EPISODES)["accuracy"])
    assert torch.equal(per_task, load_loop(runs["b"]).task_accuracies("val", EPISODES))


def test_keep_base_answers_with_the_base_when_the_search_was_only_lucky(
        tmp_path: Path, runs: dict[str, Path]) -> None:
    """The two leaders are copies of the base trial's run that the search over-rated: on the
    same tasks they score exactly as the base, so nothing beats it and the base is the answer,
    though it is not among the top trials."""
    copies = {"a": runs["a"], "b": runs["a"], "c": runs["a"]}
    found = make_store(tmp_path / "store", copies, {"a": 0.5, "b": 0.99, "c": 0.98},
                       params={"a": BASE, "b": OTHER, "c": {**OTHER, "model.hidden": 16}})
    record = confirm_best(found, top=2, episodes=EPISODES, base=BASE)
    assert [c["trial"] for c in record["candidates"]] == [trial_name("b"), trial_name("c")]
    assert record["base"]["trial"] == trial_name("a")
    assert all(c["vs_base"] == {"diff": 0.0, "ci95": 0.0} for c in record["candidates"])
    assert record["best"] == record["base"]["key"] == f"{trial_name('a')}/checkpoint_000000"
    best = Experiment.open(str(tmp_path / "store"), "exp").best()
    assert best.trial == trial_name("a") and best.value == 0.5
    assert best.confirmed == pytest.approx(record["base"]["confirmed"])
    # Without keep_base, the same store answers with a top trial.
    assert confirm_best(found, top=2, episodes=EPISODES)["best"] == record["candidates"][0]["key"]


def test_keep_base_yields_to_a_candidate_that_beats_it(
        tmp_path: Path, runs: dict[str, Path], long_run: Path) -> None:
    found = make_store(tmp_path / "store", {"a": runs["a"], "d": long_run}, {"a": 0.5, "d": 0.9},
                       params={"a": BASE, "d": OTHER})
    record = confirm_best(found, top=1, episodes=EPISODES, base=BASE)
    (d,) = record["candidates"]
    assert d["trial"] == trial_name("d") and record["base"]["trial"] == trial_name("a")
    assert d["vs_base"]["diff"] - d["vs_base"]["ci95"] > 0  # beaten by a paired interval
    assert d["vs_base"]["diff"] == pytest.approx(d["confirmed"] - record["base"]["confirmed"])
    assert record["best"] == d["key"]
    assert Experiment.open(str(tmp_path / "store"), "exp").best().trial == trial_name("d")


def test_keep_base_without_a_stored_base_trial_warns_and_ranks_the_candidates(
        tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    found = make_store(tmp_path / "store", runs, {"a": 0.99, "b": 0.6, "c": 0.5},
                       params={k: OTHER for k in runs})
    record = confirm_best(found, top=1, episodes=EPISODES, base=BASE)
    assert "base" not in record and record["best"] == record["candidates"][0]["key"]
    assert "no stored checkpoint of the base config's trial" in capsys.readouterr().err


def test_the_paired_rule_prefers_a_consistent_gain_to_a_noisy_larger_one() -> None:
    """Per-task accuracies: one candidate is 1 point better on every task, another 2 points
    better on average but with a spread that puts zero inside its interval."""
    base = torch.linspace(0.5, 0.9, 100)
    steady = base + 0.01
    noisy = base + 0.02 + 0.3 * torch.tensor([1.0, -1.0] * 50)
    scores = {"base": base, "steady": steady, "noisy": noisy}
    candidates = [{"key": k, "confirmed": scores[k].mean().item()} for k in ("noisy", "steady")]
    assert keep_base_unless_beaten(candidates, {"key": "base"}, scores)["key"] == "steady"
    assert keep_base_unless_beaten(candidates[:1], {"key": "base"}, scores)["key"] == "base"
    assert candidates[0]["vs_base"]["diff"] == pytest.approx(0.02)


def test_the_earliest_base_trial_is_the_base_and_a_moved_base_makes_the_record_stale(
        tmp_path: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """Two trials drew the base point (a random search may): the one Tune started first, by its
    running number, is the base. When the base trial's best checkpoint changes after the
    re-scoring (a resumed search), the record is stale: one warning, the reports rank."""
    found = make_store(tmp_path / "store", runs, {"a": 0.5, "b": 0.6, "c": 0.99},
                       params={"a": BASE, "b": BASE, "c": OTHER}, numbers={"a": 10, "b": 2, "c": 1})
    record = confirm_best(found, top=1, episodes=EPISODES, base=BASE)
    assert record["base"]["trial"] == trial_name("b", 2)
    assert Experiment.open(str(tmp_path / "store"), "exp").best().confirmed is not None
    later = tmp_path / "store" / "exp" / trial_name("b", 2) / "checkpoint_000001"
    shutil.copytree(later.parent / "checkpoint_000000", later)
    metrics = json.loads((later / "metrics.json").read_text())
    (later / "metrics.json").write_text(json.dumps({**metrics, "val_accuracy": 0.7}))
    best = Experiment.open(str(tmp_path / "store"), "exp", on_damaged=results.warn).best()
    assert best.trial == trial_name("c", 1) and best.confirmed is None
    assert capsys.readouterr().err.count("no longer the best trials") == 1


def test_trial_number_reads_both_of_tunes_name_shapes() -> None:
    assert trial_number("EpisodeTrainable_e4401bae_20_data_affine_augment=True_2026-12-03") == 20
    assert trial_number("EpisodeTrainable_7a2b9_00003_3_optim_lr=0.001_2026-12-03") == 3
    assert trial_number("EpisodeTrainable_odd") > 10**9  # unnumbered: last


def test_every_candidate_is_rescored_in_the_base_configs_task_shape(
        tmp_path: Path, runs: dict[str, Path]) -> None:
    """A trial that searched its own query count is scored on the base's tasks (2 queries), so
    its difference from the base is paired."""
    single = tmp_path / "single"
    train(tiny_config(**{"train.iterations": 4, "task.queries": 1}), single)
    found = make_store(tmp_path / "store", {"a": runs["a"], "q": single / LAST},
                       {"a": 0.5, "q": 0.9}, params={"a": BASE, "q": OTHER})
    record = confirm_best(found, top=1, episodes=EPISODES, base=BASE)
    assert record["tasks"] == {"ways": 5, "shots": 1, "queries": 2}
    (q,) = record["candidates"]
    loop = load_loop(single / LAST)
    assert loop.cfg.task.queries == 1
    assert q["confirmed"] == pytest.approx(loop.evaluate("val", EPISODES, queries=2)["accuracy"])


def test_same_point_matches_values_not_spellings() -> None:
    assert same_point({"optim.lr": 0.001 * (1 + 1e-12), "model.hidden": 8}, BASE)
    assert not same_point({"optim.lr": 0.001, "model.hidden": 16}, BASE)
    assert not same_point({"optim.lr": 0.001}, BASE)
    assert not same_point({"optim.lr": True, "model.hidden": 8}, {"optim.lr": 1.0, "model.hidden": 8})
    assert not same_point({"optim.lr_halve_every": False}, {"optim.lr_halve_every": 0})
    assert same_point({"data.affine_augment": True}, {"data.affine_augment": True})


@pytest.mark.parametrize("search, message", [
    ({"confirm_top": -1}, "search.confirm_top must be >= 0"),
    ({"confirm_top": 2, "confirm_episodes": 0}, "search.confirm_episodes >= 1"),
    ({"confirm_top": 2, "metric": "loss", "mode": "min"}, "re-scoring on more episodes is for"),
    ({"confirm_top": 2, "mode": "min"}, "re-scoring on more episodes is for"),
    ({"confirm_episodes": 500}, "search.confirm_episodes: read only with search.confirm_top > 0"),
    ({"confirm_top": 2, "confirm_episodes": 8}, r"must exceed schedule.eval_episodes \(8\)"),
    ({"confirm_top": 2, "algorithm": "grid", "num_samples": 2}, "not be paired"),
    ({"keep_base": True}, "search.keep_base: read only with search.confirm_top > 0"),
    ({"confirm_top": 2, "keep_base": True, "points_to_evaluate": [{"model.hidden": 8}]},
     "search.keep_base: the search does not start from the base config"),
    ({"confirm_top": 2, "keep_base": True, "start_from_base": False},
     "search.keep_base: the search does not start from the base config"),
    ({"confirm_top": 2, "keep_base": "yes"}, "search.keep_base: expected true or false, got 'yes'"),
])
def test_impossible_confirm_settings_are_refused(search: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(space_data(**search))


def test_keep_base_under_pbt_is_refused() -> None:
    data = {**space_data(confirm_top=2, keep_base=True, algorithm="random"),
            "scheduler": {"name": "pbt", "perturbation_interval": 3}, "checkpoint": {"keep": 3},
            "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}}
    data["base"]["train"]["iterations"] = 120  # the scheduler's default grace period fits
    with pytest.raises(ConfigError, match="search.keep_base: under pbt a trial's values change"):
        parse_spec(data)
    data["search"] = {"confirm_top": 2, "algorithm": "random"}
    parse_spec(data)  # the same space without keep_base is valid


def add_checkpoint(found_root: Path, trial: str, index: int, run: Path, reported: float,
                   iteration: int) -> str:
    """Store `run` as checkpoint `index` of `trial` with this reported value; its key."""
    ckpt = found_root / "exp" / trial / f"checkpoint_{index:06d}"
    shutil.copytree(run, ckpt)
    params = (found_root / "exp" / trial / "checkpoint_000000" / "params.json").read_text()
    (ckpt / "params.json").write_text(params)
    (ckpt / "metrics.json").write_text(json.dumps(
        {"iteration": iteration, "val_accuracy": reported, "loss": 0.5}))
    return f"{trial}/{ckpt.name}"


def test_every_stored_checkpoint_of_a_rescored_trial_is_scored_and_the_latest_stands_for_it(
        tmp_path: Path, runs: dict[str, Path], long_run: Path, capsys: pytest.CaptureFixture
        ) -> None:
    """The search's reports over-rated a trial's early checkpoint (1 update) against its latest
    (300 updates): re-scored on the same tasks, the latest is the trial's answer, and every
    reader says so. A checkpoint stored after the re-scoring makes the record stale."""
    root = tmp_path / "store"
    found = make_store(root, {"a": runs["a"], "c": runs["c"]}, {"a": 0.99, "c": 0.5})
    later = add_checkpoint(root, trial_name("a"), 1, long_run, 0.6, 300)
    found = Experiment.open(str(root), "exp")
    assert found.best().iteration == 1  # the reports' choice
    record = confirm_best(found, top=1, episodes=EPISODES)
    (a,) = record["candidates"]
    assert a["ranked_key"] == f"{trial_name('a')}/checkpoint_000000"
    assert [c["key"] for c in a["checkpoints"]] == [a["ranked_key"], later]
    early, long = (c["confirmed"] for c in a["checkpoints"])
    assert long == pytest.approx(load_loop(long_run).evaluate("val", EPISODES)["accuracy"])
    assert long > early  # 300 updates beat 1, so the choice below is real
    assert a["checkpoints"][0]["vs_latest"]["diff"] == pytest.approx(early - long)
    assert a["checkpoints"][1]["vs_latest"] == {"diff": 0.0, "ci95": 0.0}
    assert record["best"] == a["key"] == later and a["iteration"] == 300
    best = Experiment.open(str(root), "exp").best()
    assert (best.checkpoint, best.iteration) == (str(root / "exp" / later), 300)
    assert best.value == 0.6 and best.confirmed == pytest.approx(long)
    # A resumed search stored one more checkpoint in the trial (not its best by the reports):
    # it was never re-scored, so the record is not trusted.
    add_checkpoint(root, trial_name("a"), 2, runs["a"], 0.55, 301)
    stale = Experiment.open(str(root), "exp").best()
    assert stale.confirmed is None and stale.iteration == 1
    assert capsys.readouterr().err.count("no longer the best trials") == 1


def test_keep_base_compares_each_trials_chosen_checkpoint(
        tmp_path: Path, runs: dict[str, Path], long_run: Path) -> None:
    """The base trial's reports favoured its 1-update checkpoint; the leader is a copy of that
    checkpoint. Re-scored, the base trial stands for its 300-update checkpoint, which the
    leader does not beat: the base is kept, with its latest checkpoint."""
    root = tmp_path / "store"
    make_store(root, {"a": runs["a"], "b": runs["a"]}, {"a": 0.8, "b": 0.99},
               params={"a": BASE, "b": OTHER})
    later = add_checkpoint(root, trial_name("a"), 1, long_run, 0.7, 300)
    record = confirm_best(Experiment.open(str(root), "exp"), top=1, episodes=EPISODES, base=BASE)
    assert record["base"]["key"] == later and record["best"] == later
    (b,) = record["candidates"]
    assert b["vs_base"]["diff"] == pytest.approx(b["confirmed"] - record["base"]["confirmed"])
    assert b["vs_base"]["diff"] < 0
    assert Experiment.open(str(root), "exp").best().iteration == 300


def test_a_record_from_before_per_checkpoint_rescoring_is_still_read(
        tmp_path: Path, runs: dict[str, Path]) -> None:
    """Records written before each trial's checkpoints were all re-scored have neither
    "ranked_key" nor "checkpoints": their "key" is the trial's best by the reports."""
    root = tmp_path / "store"
    found = make_store(root, runs, {"a": 0.99, "b": 0.98, "c": 0.5})
    record = confirm_best(found, top=2, episodes=EPISODES)
    path = root / "exp" / results.CONFIRMED_FILE
    old = json.loads(path.read_text())
    for c in old["candidates"]:
        del c["ranked_key"], c["checkpoints"]
    path.write_text(json.dumps(old))
    best = Experiment.open(str(root), "exp").best()
    assert best.confirmed is not None
    assert best.checkpoint == str(root / "exp" / record["best"])
    # A record whose chosen checkpoint is not among its trial's re-scored ones is damaged.
    bad = json.loads(json.dumps(record))
    bad["candidates"][0]["checkpoints"] = []
    path.write_text(json.dumps({**bad, "best": bad["candidates"][0]["key"],
                                "candidates": bad["candidates"]}))
    with pytest.raises(ConfigError, match=r"confirmed\.json: damaged"):
        Experiment.open(str(root), "exp").best()
    bad = json.loads(json.dumps(record))
    bad["candidates"][0]["ranked_key"] = 5
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"confirmed\.json: damaged"):
        Experiment.open(str(root), "exp").best()


def test_an_earlier_checkpoint_replaces_the_latest_only_by_a_paired_interval(
        tmp_path: Path, runs: dict[str, Path], long_run: Path) -> None:
    """A trial's 300-update checkpoint is stored before a 1-update one (its latest): the earlier
    beats the latest by a paired interval, so it stands for the trial."""
    root = tmp_path / "store"
    make_store(root, {"a": long_run}, {"a": 0.6})
    add_checkpoint(root, trial_name("a"), 1, runs["a"], 0.9, 301)
    record = confirm_best(Experiment.open(str(root), "exp"), top=1, episodes=EPISODES)
    (a,) = record["candidates"]
    early = a["checkpoints"][0]
    assert early["vs_latest"]["diff"] - early["vs_latest"]["ci95"] > 0
    assert a["key"] == record["best"] == f"{trial_name('a')}/checkpoint_000000"
    assert a["ranked_key"] == f"{trial_name('a')}/checkpoint_000001"  # the reports' choice
    assert Experiment.open(str(root), "exp").best().iteration == 1  # make_store's metrics for "a"


def test_a_noisy_earlier_lead_leaves_the_latest_checkpoint() -> None:
    """Per-task accuracies: an earlier checkpoint 1 point better on average, with a spread that
    puts zero inside its interval, does not replace the latest; a steady one does."""
    latest = torch.linspace(0.5, 0.9, 100)
    scores = {"latest": latest, "noisy": latest + 0.01 + 0.3 * torch.tensor([1.0, -1.0] * 50),
              "steady": latest + 0.005}
    each = [{"key": k, "confirmed": scores[k].mean().item()} for k in ("noisy", "latest")]
    assert unless_beaten(each[-1], each[:-1], scores, "vs_latest")["key"] == "latest"
    steady = {"key": "steady", "confirmed": scores["steady"].mean().item()}
    assert unless_beaten(each[-1], [each[0], steady], scores, "vs_latest")["key"] == "steady"
