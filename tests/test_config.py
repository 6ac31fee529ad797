"""Config reading and validation: every error names its field, the CLI exits 2 without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from metagan.config import Config, ConfigError, build_config, load_config, to_dict
from metagan.loop import EpisodeLoop

from .conftest import run_cli, tiny_data, write_yaml


def test_defaults_round_trip() -> None:
    cfg = build_config({})
    assert cfg == Config()
    assert build_config(to_dict(cfg)) == cfg


def test_override_dotted_keys(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", tiny_data())
    cfg = load_config(path, ["train.iterations=42", "optim.lr=0.01", "meta.algorithm=maml"])
    assert cfg.train.iterations == 42 and cfg.optim.lr == 0.01 and cfg.meta.algorithm == "maml"


@pytest.mark.parametrize("data, field, words", [
    ({"train": {"iteration": 5}}, "train.iteration", "unknown key"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"task": {"ways": "five"}}, "task.ways", "expected an integer"),
    ({"task": {"ways": 2.5}}, "task.ways", "expected an integer"),
    ({"rotations": True}, "rotations", "unknown key"),
    ({"data": {"rotations": "yes"}}, "data.rotations", "expected true or false"),
    ({"optim": {"lr": 0}}, "optim.lr", "must be positive"),
    ({"optim": {"lr": -1e-3}}, "optim.lr", "must be positive"),
    ({"meta": {"inner_lr": 0.0}}, "meta.inner_lr", "must be positive"),
    ({"meta": {"algorithm": "sgd"}}, "meta.algorithm", "expected one of"),
    ({"task": {"shots": 0}}, "task.shots", "must be positive"),
    ({"task": "x"}, "task", "expected a mapping"),
    ({"data": {"source": "folder", "root": "/no/such/dir"}}, "data.root", "does not exist"),
    ({"data": {"source": "omniglot"}}, "data.root", "required"),
    ({"train": {"device": "tpu"}}, "train.device", "expected cpu"),
])
def test_config_errors_name_the_field(data: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_config(data)
    assert str(e.value).startswith(f"{field}:") and words in str(e.value)


def test_ways_larger_than_a_split() -> None:
    # meta-val is one alphabet: at most 47 characters x 4 rotations, never 1000.
    cfg = build_config(tiny_data(**{"task.ways": 1000}))
    with pytest.raises(ConfigError, match=r"^task\.ways: 1000-way tasks need 1000 classes but "
                                          r"meta-\w+ has \d+"):
        EpisodeLoop(cfg)


def test_more_images_per_class_than_exist() -> None:
    cfg = build_config(tiny_data(**{"task.shots": 10, "task.queries": 11}))
    with pytest.raises(ConfigError, match="21 images per class needed"):
        EpisodeLoop(cfg)


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {ways: 5\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_bad_override() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(Path(__file__).parents[1] / "configs" / "protonet.yaml", ["train.iterations"])


@pytest.mark.parametrize("data, words", [
    ({"task": {"ways": 5, "shots": 1, "queries": 1, "meta_batch": 2}, "bogus": 1},
     "bogus: unknown key"),
    ({"optim": {"lr": -1.0}}, "optim.lr: must be positive"),
    ({"data": {"source": "folder", "root": "/no/such/dir"}}, "data.root: dataset path"),
    ({"task": {"ways": 1000}}, "task.ways: 1000-way tasks need"),
])
def test_cli_exit_code_2_without_traceback(tmp_path: Path, data: dict, words: str) -> None:
    path = write_yaml(tmp_path / "c.yaml", data)
    out = tmp_path / "run"
    r = run_cli("train", str(path), "--out", str(out), "--quiet")
    assert r.returncode == 2, r.stderr
    assert words in r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "checkpoints").exists()  # nothing started


def test_cli_missing_config_file(tmp_path: Path) -> None:
    r = run_cli("train", str(tmp_path / "nope.yaml"), "--quiet")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_cli_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    path = write_yaml(tmp_path / "c.yaml", tiny_data())
    r = run_cli("train", str(path), "--out", str(out), "--quiet")
    assert r.returncode == 2 and "already holds a run" in r.stderr
    assert (out / "metrics.jsonl").read_text() == "{}\n"  # nothing lost
