"""The results store on a local experiment laid out as a search leaves it (no Ray, no S3).

Two trials report every 10 meta-iterations and checkpoint every 20: trial A's best report
(0.95, iteration 30) has no checkpoint, so the best stored checkpoint is trial B's (0.8). The
store, the API and `metagan report` must all name that one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from metagan import api, results
from metagan.config import ConfigError, yaml_text
from metagan.results import Experiment, NoExperiment
from metagan.space import parse_spec
from metagan.storage import parse_storage

from .conftest import tiny_config, tiny_data

A = "EpisodeTrainable_aaaa1111_1_model.hidden=8_2026-11-26_10-00-00"
B = "EpisodeTrainable_bbbb2222_2_model.hidden=16_2026-11-26_10-00-01"


def record(trial_id: str, iteration: int, accuracy: float, hidden: int) -> dict[str, Any]:
    return {"trial_id": trial_id, "iteration": iteration, "val_accuracy": accuracy,
            "loss": 1.0 - accuracy, "diverged": 0, "config": {"model.hidden": hidden}}


def write_checkpoint(trial: Path, index: int, metrics: dict[str, Any] | None,
                     skip: tuple[str, ...] = ()) -> Path:
    d = trial / f"checkpoint_{index:06d}"
    d.mkdir(parents=True)
    files = {"state.pt": b"not loaded here", "config.yaml": yaml_text(tiny_config()).encode(),
             "params.json": json.dumps({"model.hidden": 8}).encode()}
    if metrics is not None:
        files["metrics.json"] = json.dumps(metrics).encode()
    for name, body in files.items():
        if name not in skip:
            (d / name).write_bytes(body)
    return d


def write_trial(root: Path, name: str, reports: list[dict[str, Any]], torn: str = "") -> Path:
    trial = root / name
    trial.mkdir(parents=True)
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports) + torn)
    return trial


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """storage root/exp in the layout a search leaves (checkpoints every 20, reports every 10)."""
    root = tmp_path / "store"
    spec = parse_spec({"base": tiny_data("protonet", **{
                           "train.iterations": 40, "schedule.eval_every": 10,
                           "schedule.checkpoint_every": 20}),
                       "space": {"model.hidden": {"choice": [8, 16]}},
                       "scheduler": {"grace_period": 10}})
    results.write_space(parse_storage(str(root)), "exp", spec.to_dict())
    exp = root / "exp"
    reports_a = [record("aaaa1111", i, v, 8) for i, v in ((10, 0.5), (20, 0.7), (30, 0.95), (40, 0.6))]
    a = write_trial(exp, A, reports_a)
    write_checkpoint(a, 0, reports_a[1])
    write_checkpoint(a, 1, reports_a[3])
    reports_b = [record("bbbb2222", i, v, 16) for i, v in ((10, 0.6), (20, 0.8))]
    b = write_trial(exp, B, reports_b, torn='{"trial_id": "bbbb2222", "iteration": 30, "val_acc')
    write_checkpoint(b, 0, reports_b[1])
    # Being written or deleted: no metrics.json; and one without its state (a better value).
    write_checkpoint(b, 1, None)
    write_checkpoint(b, 2, {**reports_b[1], "val_accuracy": 0.99, "iteration": 40},
                     skip=("state.pt",))
    (exp / "basic-variant-state-2026-11-26_10-00-00.json").write_text("{}")  # Tune's, not a trial
    return root


def test_the_layout_is_read_as_a_search_leaves_it(store: Path) -> None:
    assert (store / "exp" / results.SPACE_FILE).is_file()
    found = Experiment.open(str(store), "exp")
    assert (found.metric, found.mode) == ("val_accuracy", "max")
    assert found.space["base"]["schedule"]["checkpoint_every"] == 20
    assert found.trials() == [A, B]
    assert found.trial_id(A) == "aaaa1111" and found.trial_id(B) == "bbbb2222"
    histories = found.histories()
    assert [r["iteration"] for r in histories[A]] == [10, 20, 30, 40]
    assert [r["iteration"] for r in histories[B]] == [10, 20]  # the torn last line dropped
    # Only complete checkpoints: B's without metrics.json or state.pt are not listed.
    assert [(c.trial, c.index) for c in found.checkpoints()] == [(A, 0), (A, 1), (B, 0)]
    assert results.list_experiments(parse_storage(str(store))) == ["exp"]


def test_best_is_the_best_stored_checkpoint_not_the_best_report(store: Path) -> None:
    found = Experiment.open(str(store), "exp")
    best = found.best()
    b0 = str(store / "exp" / B / "checkpoint_000000")
    assert (best.trial, best.trial_id, best.checkpoint) == (B, "bbbb2222", b0)
    assert (best.value, best.iteration, best.metric, best.mode) == (0.8, 20, "val_accuracy", "max")
    assert best.value == json.loads(Path(b0, "metrics.json").read_text())["val_accuracy"]
    assert best.params == {"model.hidden": 8} and best.config["method"] == tiny_config().method
    assert [(c.trial, c.index) for c in found.ranking()] == [(B, 0), (A, 0)]
    # Another metric or mode: the same ranking of stored checkpoints.
    assert (found.best(mode="min").trial, found.best(mode="min").value) == (A, 0.6)
    lowest_loss = found.best(metric="loss", mode="min")
    assert (lowest_loss.trial, lowest_loss.value) == (B, pytest.approx(0.2))
    with pytest.raises(ConfigError, match="no stored checkpoint holds 'nothing'"):
        found.best(metric="nothing")
    with pytest.raises(ConfigError, match="mode: expected min or max"):
        found.best(mode="up")


def test_api_and_report_give_the_stores_answer(store: Path, tmp_path: Path) -> None:
    from metagan.report import write_report

    best = Experiment.open(str(store), "exp").best()
    assert api.best_result("exp", str(store)) == best
    assert api.list_experiments(str(store)) == ["exp"]
    local = api.download_checkpoint("exp", str(store), tmp_path / "dl")
    assert sorted(p.name for p in local.iterdir()) == ["config.yaml", "metrics.json", "params.json",
                                                       "state.pt"]
    assert json.loads((local / "metrics.json").read_text())["val_accuracy"] == best.value
    out, rows = write_report("exp", str(store), tmp_path / "report.png")
    assert out.stat().st_size > 0
    assert [r["dir"] for r in rows] == [B, A]  # the store's order, not the best report's
    assert (rows[0]["trial"], rows[0]["best"], rows[0]["checkpoint"]) == (
        best.trial_id, best.value, best.checkpoint)
    assert rows[1]["best"] == 0.7  # A's best stored checkpoint, not its 0.95 report


def test_damaged_files_are_named_or_left_out(store: Path) -> None:
    exp = store / "exp"
    (exp / A / "checkpoint_000001" / "metrics.json").write_text("{garbage")
    with pytest.raises(ConfigError, match=r"checkpoint_000001/metrics.json: damaged \(not JSON\)"):
        Experiment.open(str(store), "exp").best()
    seen: list[str] = []
    found = Experiment.open(str(store), "exp", on_damaged=seen.append)
    assert found.best().trial == B
    assert len(seen) == 1 and seen[0].endswith("checkpoint left out")
    lines = (exp / A / "result.json").read_text().splitlines()
    (exp / A / "result.json").write_text("\n".join([lines[0], "{garbage", *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match="result.json: line 2 is damaged"):
        Experiment.open(str(store), "exp").histories()
    assert list(found.histories()) == [B]


def test_missing_experiments_and_foreign_checkpoints_are_refused(store: Path, tmp_path: Path) -> None:
    with pytest.raises(NoExperiment, match=r"no experiment 'nope' in .*store \(experiments there: exp\)"):
        api.best_result("nope", str(store))
    found = Experiment.open(str(store), "exp")
    with pytest.raises(ConfigError, match="not a checkpoint of experiment 'exp'"):
        found.download(str(tmp_path), tmp_path / "dl")
    with pytest.raises(ConfigError, match="not a location in storage"):
        found.download("s3://bucket/exp/x", tmp_path / "dl")
    (store / "exp" / results.SPACE_FILE).write_text(yaml.safe_dump({"search": {"metric": 3}}))
    with pytest.raises(ConfigError, match="damaged"):
        Experiment.open(str(store), "exp")


def test_a_checkpoint_uri_cannot_climb_out_of_its_experiment(store: Path, tmp_path: Path) -> None:
    (store / "secret").mkdir()
    (store / "secret" / "state.pt").write_text("not yours")
    found = Experiment.open(str(store), "exp")
    best = found.best().checkpoint
    for uri in (f"{store}/exp/../secret", f"{best}/../../../secret", f"{store}/exp",
                f"{store}/exp/{A}", f"{best}/state.pt"):
        with pytest.raises(ConfigError, match="not a checkpoint of experiment 'exp'"):
            found.download(uri, tmp_path / "dl")
    assert not (tmp_path / "dl" / "state.pt").exists()


@pytest.mark.parametrize("name, content", [("config.yaml", "model: [unclosed"),
                                           ("params.json", "{not json"),
                                           ("params.json", "[1, 2]")])
def test_a_damaged_file_of_the_best_checkpoint_is_named(store: Path, name: str,
                                                        content: str) -> None:
    found = Experiment.open(str(store), "exp")
    top = found.best()
    (Path(top.checkpoint) / name).write_text(content)
    with pytest.raises(ConfigError, match=f"{name}: damaged"):
        Experiment.open(str(store), "exp").best()
