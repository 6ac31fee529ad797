"""`metagan evaluate` and `metagan sample` work on meta-val unless --split test is asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metagan.cli import build_parser
from metagan.run import load_loop, train

from .conftest import run_cli, tiny_config

# DAGAN: a method that both classifies (evaluate) and samples (sample), trained in seconds.
DAGAN = {"method": "dagan", "gan.pretrain_steps": 1, "gan.width": 8, "gan.z_dim": 8,
         "train.iterations": 2, "schedule.eval_every": 0, "schedule.test_episodes": 2}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("defaults") / "run"
    train(tiny_config("protonet", **DAGAN), out)
    return out


def test_the_parser_defaults_to_meta_val() -> None:
    parser = build_parser()
    assert parser.parse_args(["evaluate", "run"]).split == "val"
    assert parser.parse_args(["sample", "run", "--out", "g.png"]).split == "val"
    assert parser.parse_args(["evaluate", "run", "--split", "test"]).split == "test"


@pytest.mark.slow
def test_evaluate_without_split_reports_meta_val(run_dir: Path) -> None:
    r = run_cli("evaluate", str(run_dir), "--episodes", "4")
    assert r.returncode == 0, r.stderr
    default = json.loads(r.stdout)
    assert default["split"] == "val"
    loop = load_loop(run_dir)
    val = loop.evaluate("val", 4)
    assert {k: default[k] for k in val} == val  # meta-val's tasks, not meta-test's
    r = run_cli("evaluate", str(run_dir), "--episodes", "4", "--split", "test")
    assert r.returncode == 0, r.stderr
    test = json.loads(r.stdout)
    assert test["split"] == "test"
    assert {k: test[k] for k in val} == loop.evaluate("test", 4)


@pytest.mark.slow
def test_sample_without_split_draws_a_meta_val_character(run_dir: Path, tmp_path: Path) -> None:
    grids = {}
    for name, split in (("default", []), ("val", ["--split", "val"]),
                        ("test", ["--split", "test"])):
        path = tmp_path / f"{name}.png"
        r = run_cli("sample", str(run_dir), "--out", str(path), "--samples", "4", *split)
        assert r.returncode == 0, r.stderr
        expected = "val" if name != "test" else "test"
        assert f"split: {expected}" in r.stdout and f"meta-{expected} character" in r.stdout
        grids[name] = path.read_bytes()
    assert grids["default"] == grids["val"] != grids["test"]


def test_adapt_steps_are_refused_for_a_conditioned_generator(run_dir: Path, tmp_path: Path
                                                             ) -> None:
    """DAGAN's G reads the drawings; it has no adaptation steps to set."""
    from metagan.api import load_model
    from metagan.config import ConfigError

    model = load_model(run_dir)
    size = model.config.data.image_size
    support = torch.rand(3, 1, size, size)
    with pytest.raises(ConfigError, match="adapt_steps"):
        model.sample(support, 2, adapt_steps=5)
    r = run_cli("sample", str(run_dir), "--out", str(tmp_path / "g.png"), "--adapt-steps", "5")
    assert r.returncode == 2 and "adapt_steps" in r.stderr
