"""Search-space files: every validation error, conditional spaces, sampling, --dry-run."""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from metagan.config import ConfigError
from metagan.space import (
    cast_sample,
    flatten_sample,
    load_spec,
    parse_spec,
    sample_point,
)
from metagan.tune.search import hyperopt_space

from .conftest import ROOT, run_cli, tiny_data

SPACE: dict[str, Any] = {
    "base": tiny_data("protonet", **{"train.iterations": 20, "schedule.eval_every": 10,
                                     "schedule.eval_episodes": 8, "schedule.checkpoint_every": 10}),
    "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}, "model.hidden": {"choice": [8, 16]}},
    "search": {"num_samples": 4, "max_concurrent": 2},
    "scheduler": {"name": "asha", "grace_period": 10},
}


def space(**changes: Any) -> dict[str, Any]:
    """SPACE with dotted keys set (a value of None deletes the key)."""
    data = copy.deepcopy(SPACE)
    for key, value in changes.items():
        node = data
        *parents, last = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def test_valid_space_parses() -> None:
    spec = parse_spec(space())
    assert [p.key for p in spec.params] == ["optim.lr", "model.hidden"]
    assert spec.iterations == 20


@pytest.mark.parametrize("changes, message", [
    ({"colour": 1}, "unknown section 'colour'"),
    ({"search/algo": "tpe"}, "search.algo"),
    ({"search/algorithm": "bayes"}, "search.algorithm: 'bayes'"),
    ({"search/mode": "maximum"}, "search.mode"),
    ({"space/optim.lr": {"gaussian": [0, 1]}}, "unknown distribution 'gaussian'"),
    ({"space/optim.lr": {"uniform": [0.1, 0.01]}}, "low < high"),
    ({"space/optim.lr": {"loguniform": [0, 0.01]}}, "positive low bound"),
    ({"space/optim.lr": {"uniform": [0.1]}}, "needs 2 numbers"),
    ({"space/optim.lr": {"uniform": ["a", 1]}}, "bounds must be numbers"),
    ({"space/model.hidden": {"quniform": [8, 64, 0]}}, "step q"),
    ({"space/model.hidden": {"randint": [8.5, 64]}}, "integer bounds"),
    ({"space/model.hidden": {"choice": []}}, "non-empty list"),
    ({"space/optim.learning_rate": {"uniform": [0.1, 1]}}, "optim.learning_rate"),
    ({"space/task.ways": {"choice": [5, 0]}}, "task.ways"),
    ({"space/model.hidden": {"grid": [8, 16]}}, "grid values need search.algorithm: grid"),
    ({"search/metric": "val_fid"}, "'val_fid' is not reported"),
    ({"checkpoint/score": "nope"}, "checkpoint.score: 'nope' is not reported"),
    ({"scheduler/name": "hyperband"}, "scheduler.name"),
    ({"scheduler/name": "pbt", "space/optim.lr": {"choice": [0.1]}}, "pbt perturbs"),
    ({"scheduler/name": "pbt", "checkpoint/keep": 3}, "pbt takes search.algorithm: random"),
    ({"scheduler/name": "pbt", "search/algorithm": "random"}, "pbt needs at least 3"),
    ({"scheduler/grace_period": 500}, "scheduler.grace_period"),
    ({"scheduler/reduction_factor": 1}, "reduction_factor"),
    ({"scheduler/max_iterations": 50}, "exceeds the longest"),
    ({"base/schedule/eval_every": 0}, "schedule.eval_every: a trial reports to the search"),
    ({"base/schedule/eval_every": 30}, "schedule.eval_every (30) exceeds train.iterations"),
    ({"base/schedule/checkpoint_every": 15}, "schedule.checkpoint_every (15) must be a multiple"),
    ({"space/schedule.checkpoint_every": {"choice": [10, 15]}}, "schedule.checkpoint_every=15)"),
    ({"trial/iterations_per_step": 10}, "trial.iterations_per_step: moved to the run config's "
                                        "schedule.eval_every"),
    ({"checkpoint/every": 10}, "checkpoint.every: moved to the run config's schedule.checkpoint_every"),
    ({"trial/eval_episodes": 10}, "trial.eval_episodes: moved"),
    ({"base/train/eval_every": 10}, "train.eval_every: moved to schedule.eval_every"),
    ({"resources/gpu": 1.5}, "fraction of one GPU"),
    ({"resources/cpu": 0}, "cpu must be positive"),
    ({"search/num_samples": 0}, "search.num_samples"),
    ({"base": None}, "base: missing"),
    ({"base/task/ways": -1}, "task.ways"),
    ({"search/points_to_evaluate": [{"optim.lr": 0.001}]}, "every key"),
    ({"search/points_to_evaluate": [{"optim.lr": 0.001, "model.hidden": 8, "x": 1}]}, "'x' is not in space"),
])
def test_space_errors_name_the_problem(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_spec(space(**changes))


def test_metric_must_exist_for_every_branch() -> None:
    """A conditional branch whose method does not report the metric is an error."""
    # No conv4 settings: fewshot_gan, which builds no meta-learner, would refuse them.
    data = space(**{"base/model": None, "space/model.hidden": None,
                    "space/method": {"choice": {"meta": {}, "fewshot_gan": {"gan.z_dim": {"choice": [16]}}}}})
    with pytest.raises(ConfigError, match="not reported for method 'fewshot_gan'"):
        parse_spec(data)


@pytest.mark.parametrize("changes, parts", [
    # A searched key the method does not read, whatever its values.
    ({"space/gan.z_dim": {"choice": [32, 64]}},
     ["gan.z_dim: not read by method 'meta' with meta.algorithm 'protonet'"]),
    # ... checked in each conditional branch: protonet has no inner loop.
    ({"space/meta.algorithm": {"choice": {"maml": {"meta.inner_lr": {"loguniform": [0.1, 1.0]}},
                                          "protonet": {"meta.inner_lr": {"loguniform": [0.1, 1.0]}}}}},
     ["meta.algorithm='protonet'", "meta.inner_lr: not read by method 'meta' with meta.algorithm "
      "'protonet' (it reads meta.algorithm)"]),
    # A fixed key (set:) the method does not read.
    ({"set": {"gan.ema": 0.5}}, ["gan.ema: not read by method 'meta'"]),
    # The base's keys, in a branch whose method does not read them.
    ({"space/method": {"choice": {"meta": {}, "fewshot_gan": {}}}},
     ["method='fewshot_gan'", "model.hidden: not read by method 'fewshot_gan'"]),
])
def test_a_key_the_method_does_not_read_is_refused(changes: dict, parts: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        parse_spec(space(**changes))
    assert all(part in str(e.value) for part in parts), str(e.value)
    assert "\n" not in str(e.value)


def test_conditional_space_samples_only_its_branch_keys() -> None:
    data = space(**{"space/meta.algorithm": {"choice": {
        "protonet": {},
        "maml": {"meta.inner_lr": {"loguniform": [0.05, 0.5]}, "meta.inner_steps": {"randint": [1, 3]}},
    }}})
    spec = parse_spec(data)
    from hyperopt.pyll.stochastic import sample

    rng = __import__("numpy").random.default_rng(0)
    seen = set()
    for _ in range(30):
        flat = cast_sample(spec.params, flatten_sample(sample(hyperopt_space(spec.params), rng=rng)))
        algo = flat["meta.algorithm"]
        seen.add(algo)
        assert ("meta.inner_lr" in flat) == (algo == "maml")
        if algo == "maml":
            assert 0.05 <= flat["meta.inner_lr"] <= 0.5 and flat["meta.inner_steps"] in (1, 2)
        cfg = spec.config_for(flat)
        assert cfg.meta.algorithm == algo
    assert seen == {"protonet", "maml"}
    point = sample_point(spec.params, random.Random(1))
    assert spec.config_for(point).optim.lr == point["optim.lr"]


def test_quniform_gives_integers_for_integer_bounds() -> None:
    spec = parse_spec(space(**{"space/model.hidden": {"quniform": [8, 32, 8]}}))
    values = {sample_point(spec.params, random.Random(s))["model.hidden"] for s in range(40)}
    assert values <= {8, 16, 24, 32} and all(isinstance(v, int) for v in values)


def test_grid_space() -> None:
    from metagan.space import grid_points

    spec = parse_spec(space(**{"search/algorithm": "grid", "space/optim.lr": {"grid": [0.001, 0.01]},
                               "space/model.hidden": {"grid": [8, 16, 32]}}))
    assert len(grid_points(spec.params)) == 6
    with pytest.raises(ConfigError, match="only grid values"):
        parse_spec(space(**{"search/algorithm": "grid"}))


def test_set_overrides_reach_space_sections_and_base(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    spec = load_spec(path, ["search.num_samples=2", "train.iterations=30", "model.depth=3"])
    assert spec.search.num_samples == 2 and spec.iterations == 30
    assert spec.base["model"]["depth"] == 3


def test_every_shipped_space_is_valid() -> None:
    files = sorted((ROOT / "search_spaces").glob("*.yaml"))
    assert {f.stem for f in files} >= {"demo", "protonet", "maml", "dagan", "metagan", "fewshot_gan"}
    for f in files:
        spec = load_spec(f)
        assert spec.params, f


@pytest.mark.slow
def test_cli_dry_run_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(SPACE))
    r = run_cli("search", str(good), "--dry-run", "--samples", "2")
    assert r.returncode == 0, r.stderr
    assert "optim.lr" in r.stdout and "sample 1:" in r.stdout and "sample 2:" not in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [unclosed\n")
    r = run_cli("search", str(bad), "--dry-run")
    assert r.returncode == 2 and "malformed YAML" in r.stderr and "Traceback" not in r.stderr
    bad.write_text(yaml.safe_dump(space(**{"space/optim.lr": {"uniform": [1, 0]}})))
    r = run_cli("search", str(bad))  # fails in validation, before Ray would start
    assert r.returncode == 2 and "space.optim.lr" in r.stderr and "Traceback" not in r.stderr


def test_grid_repeats_each_get_their_own_recorded_seed() -> None:
    from metagan.space import grid_trials

    grid = space(**{"search/algorithm": "grid", "search/num_samples": None,
                    "space/optim.lr": {"grid": [0.001, 0.01]}, "space/model.hidden": {"grid": [8]},
                    "base/train/seed": 7})
    spec = parse_spec(grid)
    assert spec.samples == 1  # the grid default: one trial per point
    assert [t["train.seed"] for t in grid_trials(spec)] == [7, 7]
    three = parse_spec({**grid, "search": {**grid["search"], "num_samples": 3}})
    trials = grid_trials(three)
    assert len(trials) == 6 and len({(t["optim.lr"], t["train.seed"]) for t in trials}) == 6
    assert sorted(t["train.seed"] for t in trials if t["optim.lr"] == 0.01) == [7, 8, 9]
    assert all(three.config_for(t).train.seed == t["train.seed"] for t in trials)
    # A space that searches the seed itself is repeated as it is.
    seeded = {**grid, "space": {**grid["space"], "train.seed": {"grid": [1, 2]}}}
    assert len(grid_trials(parse_spec(seeded))) == 4
    assert parse_spec(space(**{"search/num_samples": None})).samples == 8  # hyperopt default


def test_relative_data_paths_become_absolute_before_any_trial(tmp_path: Path, image_folder: Path,
                                                              monkeypatch) -> None:
    """Tune runs each trial in its own directory: a path relative to the driver's would break."""
    monkeypatch.chdir(image_folder.parent)
    data = space(**{"base/data": {"source": "folder", "root": image_folder.name, "rotations": False,
                                  "val_groups": 2, "test_groups": 2}})
    spec = parse_spec(data)
    assert spec.base["data"]["root"] == str(image_folder.resolve())
    monkeypatch.chdir(tmp_path)  # elsewhere, as a trial is: the config still finds its data
    for point in ({"optim.lr": 1e-3, "model.hidden": 8},):
        assert Path(spec.config_for(point).data.root).is_dir()


def test_the_base_config_is_the_first_trial_by_default() -> None:
    """A search reports where it starts: hyperopt's first suggestion is the base config's values."""
    from metagan.tune.search import _search_alg, dry_run

    spec = parse_spec(space(**{"base/optim/lr": 0.002, "base/model/hidden": 16}))
    assert spec.start_points() == [{"optim.lr": 0.002, "model.hidden": 16}]
    searcher, _ = _search_alg(spec)
    assert searcher.suggest("first") == {"optim.lr": 0.002, "model.hidden": 16}
    assert searcher.suggest("second") != {"optim.lr": 0.002, "model.hidden": 16}
    assert 'first trials: the base config: [{"model.hidden": 16, "optim.lr": 0.002}]' in dry_run(spec)
    # Given points win; start_from_base off, or a base value outside the space: no base point.
    given = {"optim.lr": 0.003, "model.hidden": 8}
    assert parse_spec(space(**{"search/points_to_evaluate": [given]})).start_points() == [given]
    assert parse_spec(space(**{"search/start_from_base": False})).start_points() == []
    assert parse_spec(space(**{"base/model/hidden": 32})).start_points() == []


@pytest.mark.parametrize("space, key", [("dagan", "gan.augment"), ("metagan", "gan.fake_weight")])
def test_each_gan_space_can_choose_no_augmentation(space: str, key: str) -> None:
    """The GAN spaces reach their plain learner: no fakes (DAGAN) or fakes in no loss (MetaGAN)."""
    spec = load_spec(ROOT / "search_spaces" / f"{space}.yaml", [])
    (param,) = [p for p in spec.params if p.key == key]
    assert param.kind == "choice" and 0 in param.args, param
