"""Crash-safe checkpoints and the files --resume reads.

A run killed at any step of a checkpoint write (before each rename, removal, file write, and
in the middle of a removal) still resumes from a complete checkpoint, and the resumed run ends
bit-identical to one never interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from metagan import checkpoint as ckpt_module
from metagan.checkpoint import latest, load_checkpoint, save_checkpoint
from metagan.config import ConfigError
from metagan.run import LAST, resume_config, train

from .conftest import tiny_config
from .test_loop import assert_same_state


class Killed(BaseException):
    """The process dying: nothing in metagan catches it."""


class Killer:
    """Counts the filesystem steps of checkpoint writes; raises Killed at step `at`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
        self.at, self.step = at, 0
        real_replace, real_rmtree, real_save = os.replace, shutil.rmtree, torch.save
        real_write = Path.write_text

        def tick() -> None:
            self.step += 1
            if self.step == self.at:
                raise Killed

        def replace(src, dst):
            tick()
            return real_replace(src, dst)

        def rmtree(path, *args, **kwargs):
            tick()
            files = sorted(Path(path).glob("*"))
            if self.step + 1 == self.at and files:  # die half-way through the removal
                files[0].unlink()
                self.step += 1
                raise Killed
            return real_rmtree(path, *args, **kwargs)

        def save(obj, f, *args, **kwargs):
            tick()
            return real_save(obj, f, *args, **kwargs)

        def write_text(path, *args, **kwargs):
            tick()
            return real_write(path, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(shutil, "rmtree", rmtree)
        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(Path, "write_text", write_text)


@pytest.mark.slow  # about 30 resumed runs
def test_a_kill_at_every_step_of_a_checkpoint_write_resumes_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config("protonet", **{"train.iterations": 6, "schedule.checkpoint_every": 2,
                                     "schedule.log_every": 1})
    straight = tmp_path / "straight"
    train(cfg, straight)
    _, expected, _ = load_checkpoint(straight / LAST)
    template = tmp_path / "template"
    train(tiny_config("protonet", **{"train.iterations": 2, "schedule.checkpoint_every": 2,
                                     "schedule.log_every": 1}), template)
    killed_at = []
    for at in range(1, 200):
        run = tmp_path / f"run{at}"
        shutil.copytree(template, run)
        with monkeypatch.context() as m:
            Killer(m, at)
            try:
                train(resume_config(run, {"train.iterations": 6}), run, resume=True)
            except Killed:
                killed_at.append(at)
            else:
                break  # `at` is past the last step: the whole resumed run completed
        found = latest(run / LAST)
        assert found is not None, f"no complete checkpoint after a kill at step {at}"
        _, state, _ = load_checkpoint(run / LAST)
        assert state["iteration"] in (2, 4, 6), at
        train(resume_config(run, {"train.iterations": 6}), run, resume=True)
        _, final, _ = load_checkpoint(run / LAST)
        assert_same_state(final, expected, f"after a kill at step {at}")
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        steps = [r["iteration"] for r in lines if "loss" in r]
        assert steps == sorted(set(steps)) == list(range(1, 7)), (at, steps)
    assert len(killed_at) >= 20, killed_at  # every step of the three checkpoint writes and more


def test_an_interrupted_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path,
                                                                     monkeypatch) -> None:
    cfg = tiny_config("protonet")
    target = tmp_path / "last"
    save_checkpoint(target, cfg, {"iteration": 1})
    real = os.replace
    calls = []

    def replace(src, dst):  # die right after the old checkpoint was moved aside
        calls.append((src, dst))
        real(src, dst)
        if len(calls) == 1:
            raise Killed

    monkeypatch.setattr(ckpt_module.os, "replace", replace)
    with pytest.raises(Killed):
        save_checkpoint(target, cfg, {"iteration": 2})
    monkeypatch.setattr(ckpt_module.os, "replace", real)
    assert not target.exists()
    assert load_checkpoint(target)[1]["iteration"] == 1
    save_checkpoint(target, cfg, {"iteration": 3})  # the next save completes and tidies up
    assert load_checkpoint(target)[1]["iteration"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_resume_refuses_what_it_cannot_honour_and_keeps_the_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config("protonet", **{"train.iterations": 4, "schedule.checkpoint_every": 2}), run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for key, value in (("data.split_seed", 3), ("task.ways", 3), ("model.hidden", 16),
                       ("method", "dagan"), ("meta.algorithm", "maml"), ("optim.lr", 0.1),
                       ("train.seed", 1), ("schedule.test_episodes", 10)):
        with pytest.raises(ConfigError, match=f"--set {key}: a resumed run keeps"):
            resume_config(run, {key: value})
    with pytest.raises(ConfigError, match="already at iteration 4"):
        resume_config(run, {"train.iterations": 3})
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert resume_config(run, {"train.iterations": 8, "schedule.log_every": 2}).train.iterations == 8


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config("protonet", **{"train.iterations": 4, "schedule.checkpoint_every": 2}), run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 5, "lo')  # the writer was killed mid-line
    train(resume_config(run, {"train.iterations": 6}), run, resume=True)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["iteration"] == 6
    # A damaged line that is not the last one is named, not skipped.
    text = (run / "metrics.jsonl").read_text().splitlines()
    text[1] = "garbage"
    (run / "metrics.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(ConfigError, match=r"metrics\.jsonl: line 2 is damaged"):
        train(resume_config(run, {"train.iterations": 8}), run, resume=True)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_a_damaged_state_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    run = tmp_path / "run"
    train(tiny_config("protonet", **{"train.iterations": 2}), run)
    state = run / LAST / "state.pt"
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[:100])
    elif damage == "garbage":
        state.write_bytes(b"\x00not a checkpoint" * 10)
    else:  # a state of another config (wider network)
        other = tmp_path / "other"
        train(tiny_config("protonet", **{"train.iterations": 2, "model.hidden": 16}), other)
        shutil.copy(other / LAST / "state.pt", state)
    from metagan.run import load_loop

    with pytest.raises(ConfigError) as e:
        load_loop(run)
    assert "state.pt" in str(e.value) or "does not fit" in str(e.value)
    assert "weights_only=False" not in str(e.value)


def test_the_library_resume_refuses_a_changed_config_too(tmp_path: Path) -> None:
    """run.train(resume=True) itself keeps the guard, not only the CLI's resume_config."""
    import dataclasses

    run = tmp_path / "run"
    cfg = tiny_config("protonet", **{"train.iterations": 2})
    train(cfg, run)
    changed = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=0.5),
                                  train=dataclasses.replace(cfg.train, iterations=4))
    with pytest.raises(ConfigError, match="optim.lr: a resumed run keeps"):
        train(changed, run, resume=True)
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iterations=4))
    assert train(more, run, resume=True)["iteration"] == 4


def test_a_checkpoint_directory_kept_only_as_its_predecessor_still_loads(tmp_path: Path) -> None:
    from metagan.run import load_loop

    run = tmp_path / "run"
    train(tiny_config("protonet", **{"train.iterations": 2}), run)
    os.replace(run / LAST, run / "checkpoints" / ".last.prev")  # killed between the renames
    assert load_loop(run).iteration == 2
    assert load_loop(run / LAST).iteration == 2
