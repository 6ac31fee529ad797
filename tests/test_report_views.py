"""What a person watches: the Grafana dashboard of the trials' live gauges, and `metagan report`'s
parallel coordinates and parameter importance (real optuna and matplotlib, experiments on disk)."""

from __future__ import annotations

import json
import math
import random
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from metagan import results
from metagan.report import (
    dims,
    searched_params,
    trial_points,
    view_paths,
    write_report,
    write_views,
)
from metagan.results import Experiment
from metagan.space import VALUE, parse_spec
from metagan.storage import parse_storage
from metagan.tune.dashboard import EXPORTED, TrialGauges, gauge_name

from .conftest import ROOT, tiny_data
from .test_results import write_checkpoint, write_trial

DASHBOARD = ROOT / "cluster" / "grafana" / "metagan_trials.json"
# Ray's metrics export names an application metric (ray.util.metrics) `ray_<name>`
# (ray/_private/telemetry/open_telemetry_metric_recorder.py: NAMESPACE; the OpenCensus exporter
# likewise), and a unit of "1" adds no suffix.
RAY_PREFIX = "ray_"

TARGET = {"type": "object", "required": ["expr", "refId"],
          "properties": {"expr": {"type": "string", "minLength": 1},
                         "refId": {"type": "string", "pattern": "^[A-Z]$"},
                         "legendFormat": {"type": "string"}}}
DATASOURCE_REF = {"type": "object", "required": ["type", "uid"],
                  "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}}}
# The Grafana dashboard fields this dashboard relies on (Grafana's own model has many more).
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "id": {"type": "null"},  # assigned by the Grafana it is imported into
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 27},
        "refresh": {"type": "string"},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {
            "type": "array", "items": {
                "type": "object", "required": ["name", "type"],
                "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"},
                               "type": {"enum": ["datasource", "query"]},
                               "datasource": DATASOURCE_REF,
                               "query": {"anyOf": [{"type": "string"}, {
                                   "type": "object", "required": ["query"],
                                   "properties": {"query": {"type": "string"}}}]}}}}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
            "properties": {
                "id": {"type": "integer"},
                "type": {"enum": ["timeseries", "stat"]},
                "title": {"type": "string", "minLength": 1},
                "datasource": DATASOURCE_REF,
                "gridPos": {"type": "object", "required": ["x", "y", "w", "h"],
                            "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 23},
                                           "y": {"type": "integer", "minimum": 0},
                                           "w": {"type": "integer", "minimum": 1, "maximum": 24},
                                           "h": {"type": "integer", "minimum": 1}}},
                "targets": {"type": "array", "minItems": 1,
                            "items": {**TARGET, "properties": {**TARGET["properties"],
                                                               "datasource": DATASOURCE_REF}}},
            }}},
    },
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the template variables' queries."""
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            query = query["query"] if isinstance(query, dict) else query
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", query)
            assert m, query
            exprs.append(m.group(1))
    return exprs


def exported_names() -> tuple[set[str], set[str]]:
    """The Prometheus names of what dashboard.py exports: each EXPORTED key's, and those of
    loss keys (any key holding "loss") as TrialGauges really exports them; and the names of
    reported keys it does not export."""
    gauges = TrialGauges()
    # Single-phase methods report `loss` (few-shot GANs d_loss, g_loss); several phases
    # prefix theirs with the phase's name (metagan/loop.py): G/loss, D/fake_loss, ...
    losses = ("loss", "d_loss", "g_loss", "fake_loss", "G/loss", "D/loss", "meta/loss", "D/fake_loss")
    others = ("lr", "loop_s", "diverged_at", "cuda")
    gauges.report("x", "t", {key: 1.0 for key in (*EXPORTED, *losses, *others)})
    exported = {RAY_PREFIX + name for name in gauges._gauges}  # created on first set
    assert exported == {RAY_PREFIX + gauge_name(k) for k in (*EXPORTED, *losses)}
    return exported, {RAY_PREFIX + gauge_name(k) for k in others}


def test_the_dashboard_is_a_grafana_dashboard_with_datasource_and_experiment_variables() -> None:
    board = dashboard()
    jsonschema.validate(board, SCHEMA)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["experiment"]["type"] == "query" and variables["trial"]["type"] == "query"
    assert "$experiment" in variables["trial"]["query"]["query"]  # trials of that experiment
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:  # each panel fits the 24-column grid
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel["targets"]:  # every query follows the variables
            assert 'experiment=~"$experiment"' in target["expr"], panel["title"]
            assert 'trial=~"$trial"' in target["expr"], panel["title"]
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for what in ("accuracy", "kid", "loss", "tasks per second", "iteration"):
        assert what in titles, what


def test_every_promql_expression_names_a_metric_that_trials_export() -> None:
    exported, not_exported = exported_names()
    seen: set[str] = set()
    for expr in expressions(dashboard()):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        # Name matchers: the regex (anchored, as Prometheus does) matches exported names only.
        for pattern in re.findall(r'__name__=~"([^"]*)"', expr):
            matched = {n for n in exported if re.fullmatch(pattern, n)}
            assert matched, pattern
            assert not any(re.fullmatch(pattern, n) for n in not_exported), pattern
            seen |= matched
        assert '__name__="' not in expr and "__name__!" not in expr, expr
        # Metric names outside strings are exported names, with Ray's prefix.
        bare = re.sub(r'"[^"]*"', '""', expr)
        names = set(re.findall(r"\b\w*metagan\w*\b", bare))
        assert names <= exported, (expr, names - exported)
        seen |= names
        assert "__name__" in expr or names, f"no metric in {expr!r}"
    # The panels the issue asks for: meta-val accuracy and KID, losses, tasks/s, iteration.
    wanted = {gauge_name(k) for k in ("val_accuracy", "val_kid", "loss", "tasks_per_s", "iteration")}
    assert {RAY_PREFIX + n for n in wanted} <= seen
    # A method's own losses, by the name matcher.
    assert {"ray_metagan_G_loss", "ray_metagan_D_fake_loss", "ray_metagan_d_loss"} <= seen


# --- metagan report's views -------------------------------------------------------------------

def experiment(root: Path, name: str, space: dict[str, Any],
               trials: list[tuple[dict[str, Any], float]], diverged: int = 0) -> None:
    """A stored experiment: its space and one trial directory per (config, metric): reports at
    iterations 10 and 20 (the second the better), a checkpoint of the last; `diverged` more
    trials whose only report is a diverged step's worst value."""
    spec = parse_spec({"base": tiny_data("protonet", **{
                           "train.iterations": 20, "schedule.eval_every": 10,
                           "schedule.checkpoint_every": 20}),
                       "space": space, "scheduler": {"grace_period": 10}})
    results.write_space(parse_storage(str(root)), name, spec.to_dict())
    for i, (config, value) in enumerate(trials):
        tid = f"t{i:07d}"
        reports = [{"trial_id": tid, "iteration": it, "val_accuracy": v, "loss": 1 - v,
                    "diverged": 0, "config": config}
                   for it, v in ((10, value - 0.05), (20, value))]
        trial = write_trial(root / name, f"EpisodeTrainable_{tid}_{i}_x_2026-11-26_10-00-00", reports)
        write_checkpoint(trial, 0, reports[-1])
    for j in range(diverged):
        tid = f"d{j:07d}"
        write_trial(root / name, f"EpisodeTrainable_{tid}_{j}_x_2026-11-26_10-00-00", [
            {"trial_id": tid, "iteration": 10, "val_accuracy": 0.0, "diverged": 1,
             "last_good_val_accuracy": None, "config": trials[0][0]}])


DRIVEN = {"optim.lr": {"loguniform": [1e-4, 1e-1]}, "model.hidden": {"choice": [8, 16, 32]},
          "optim.weight_decay": {"uniform": [0.0, 0.01]}}


def driven_trials(n: int = 24, seed: int = 0) -> list[tuple[dict[str, Any], float]]:
    """The learning rate alone sets the metric; the width and weight decay are drawn at random."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        lr = 10 ** rng.uniform(-4, -1)
        config = {"optim.lr": lr, "model.hidden": rng.choice([8, 16, 32]),
                  "optim.weight_decay": rng.uniform(0.0, 0.01)}
        out.append((config, 0.3 + 0.15 * math.log10(lr / 1e-4)))
    return out


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_report_writes_parallel_coordinates_and_an_importance_that_finds_the_driving_parameter(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    trials = driven_trials()
    experiment(root, "lr", DRIVEN, trials, diverged=1)
    out = tmp_path / "out" / "lr.png"
    notes: list[str] = []
    written, rows = write_report("lr", str(root), out, note=notes.append)
    parallel, importance = view_paths(out)
    assert (parallel.name, importance.name) == ("lr_parallel.png", "lr_importance.png")
    assert is_png(written) and is_png(parallel) and is_png(importance)
    assert notes == [f"wrote {parallel}", f"wrote {importance}"]
    assert len(rows) == len(trials) + 1  # the table still lists the diverged trial

    found = Experiment.open(str(root), "lr")
    params = searched_params(found.space)
    points = trial_points(found.histories(), params, found.metric, found.mode)
    assert len(points) == len(trials)  # the diverged step's worst value is no point
    assert sorted(p.value for p in points) == pytest.approx(sorted(v for _, v in trials))
    axes = {d.key: d for d in dims(params, points)}
    assert axes["optim.lr"].kind == "log" and (axes["optim.lr"].low, axes["optim.lr"].high) == (1e-4, 1e-1)
    assert axes["model.hidden"].kind == "categorical" and axes["model.hidden"].choices == (8, 16, 32)
    assert axes["optim.weight_decay"].kind == "float"

    views = write_views(found, found.histories(), tmp_path / "again.png", note=notes.append)
    assert views.importances is not None and views.importances.trials == len(trials)
    shares = views.importances.values
    assert list(shares)[0] == "optim.lr", shares
    assert shares["optim.lr"] > 3 * max(shares["model.hidden"], shares["optim.weight_decay"]), shares
    assert sum(shares.values()) == pytest.approx(1.0)


def test_a_conditional_choice_leaves_its_branch_parameters_out_of_the_importance(
        tmp_path: Path) -> None:
    """optim.lr exists only in the stride branch (hyperopt nests it under the choice's value);
    the width drives the metric."""
    space = {"model.downsample": {"choice": {"stride": {"optim.lr": {"loguniform": [1e-4, 1e-2]}},
                                             "maxpool": {}}},
             "model.hidden": {"choice": [8, 16, 32]}, "optim.weight_decay": {"uniform": [0.0, 0.01]}}
    rng = random.Random(1)
    trials = []
    for i in range(16):
        hidden = (8, 16, 32)[i % 3]
        branch = {VALUE: "stride", "optim.lr": 10 ** rng.uniform(-4, -2)} if i % 2 else \
            {VALUE: "maxpool"}
        trials.append(({"model.downsample": branch, "model.hidden": hidden,
                        "optim.weight_decay": rng.uniform(0, 0.01)}, 0.2 + hidden / 64))
    root = tmp_path / "store"
    experiment(root, "cond", space, trials)
    found = Experiment.open(str(root), "cond")
    notes: list[str] = []
    views = write_views(found, found.histories(), tmp_path / "cond.png", note=notes.append)
    assert views.parallel is not None and is_png(views.parallel)
    assert views.importance is not None and is_png(views.importance)
    assert views.importances is not None
    assert views.importances.left_out == ["optim.lr"]
    shares = views.importances.values
    assert set(shares) == {"model.downsample", "model.hidden", "optim.weight_decay"}
    assert list(shares)[0] == "model.hidden", shares
    points = trial_points(found.histories(), searched_params(found.space), "val_accuracy", "max")
    assert sum("optim.lr" in p.params for p in points) == 8
    assert {p.params["model.downsample"] for p in points} == {"stride", "maxpool"}


def test_too_few_trials_or_parameters_skip_the_importance_with_a_note(tmp_path: Path) -> None:
    root = tmp_path / "store"
    experiment(root, "one", DRIVEN, driven_trials(1))
    out = tmp_path / "one.png"
    parallel, importance = view_paths(out)
    importance.write_bytes(b"an earlier report's image")
    notes: list[str] = []
    write_report("one", str(root), out, note=notes.append)
    assert is_png(parallel) and not importance.exists()
    assert notes == [f"wrote {parallel}", "parameter importance skipped: 1 trial(s) reported the "
                     "metric; it needs 2 or more"]

    experiment(root, "width", {"model.hidden": {"choice": [8, 16, 32]}},
               [({"model.hidden": h}, 0.3 + h / 100) for h in (8, 16, 32, 8)])
    notes.clear()
    write_report("width", str(root), tmp_path / "width.png", note=notes.append)
    assert is_png(tmp_path / "width_parallel.png") and not (tmp_path / "width_importance.png").exists()
    assert notes[1] == "parameter importance skipped: 1 parameter(s) in every trial; it needs 2 or more"

    experiment(root, "flat", DRIVEN, [(c, 0.5) for c, _ in driven_trials(4)])
    notes.clear()
    write_report("flat", str(root), tmp_path / "flat.png", note=notes.append)
    assert notes[1] == "parameter importance skipped: every trial has the same metric value"


def test_without_optuna_the_importance_is_skipped_with_the_extra_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    experiment(root, "lr", DRIVEN, driven_trials(4))
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the report extra were not installed
    notes: list[str] = []
    write_report("lr", str(root), tmp_path / "r.png", note=notes.append)
    assert notes[1] == "parameter importance skipped: optuna is not installed (pip install " \
        "'metagan[report]')"
    assert is_png(tmp_path / "r_parallel.png") and not (tmp_path / "r_importance.png").exists()


def test_the_cli_keeps_the_table_on_stdout_and_names_the_views_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from metagan.cli import main

    root = tmp_path / "store"
    experiment(root, "lr", DRIVEN, driven_trials(6))
    out = tmp_path / "r.png"
    assert main(["report", "lr", "--storage", str(root), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["trial", "best"] and lines[-1] == f"wrote {out}"
    assert len(lines) == 6 + 2
    assert captured.err.splitlines() == [f"wrote {p}" for p in view_paths(out)]
    assert all(is_png(p) for p in (out, *view_paths(out)))
