"""The episode loop and `metagan train`: exact resume across processes, evaluation, CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metagan.checkpoint import load_checkpoint, save_checkpoint
from metagan.loop import EpisodeLoop
from metagan.meta import REGISTRY

from .conftest import run_cli, tiny_config, tiny_data, write_yaml

TIMING = {"tasks_per_s", "loop_s"}


def assert_same_state(a: object, b: object, where: str = "") -> None:
    """Nested dicts of tensors (weights, optimiser and RNG states) equal bit for bit."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def metric_lines(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields, which differ between runs by nature."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in d.items() if k not in TIMING} for d in lines]


METHODS = [(a, {}) for a in sorted(REGISTRY)] + [
    ("protonet", {"method": "dagan", "gan.pretrain_steps": 2, "gan.width": 8, "gan.z_dim": 8,
                  "gan.ema": 0.9}),
    ("fomaml", {"method": "metagan", "gan.width": 8, "gan.z_dim": 8}),
    ("protonet", {"method": "fewshot_gan", "task.ways": 2, "task.shots": 2, "task.queries": 2,
                  "task.meta_batch": 2, "gan.width": 8, "gan.z_dim": 8, "gan.inner_steps": 2,
                  "gan.embedding_iterations": 3}),
]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, extra", METHODS, ids=[a + "-" + e.get("method", "meta")
                                                           for a, e in METHODS])
def test_resume_in_a_fresh_process_is_exact(algorithm: str, extra: dict, tmp_path: Path) -> None:
    """2N iterations == N, save, load in a new process, N more: same weights and metrics."""
    data = tiny_data(algorithm, **{"train.iterations": 6, "schedule.checkpoint_every": 3}, **extra)
    if extra.get("method") == "fewshot_gan":
        del data["model"]  # the few-shot GAN has no conv4: a model width would be refused
    cfg = write_yaml(tmp_path / "c.yaml", data)
    straight, split = tmp_path / "straight", tmp_path / "split"
    r = run_cli("train", str(cfg), "--out", str(straight), "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", str(cfg), "--out", str(split), "--quiet", "--set", "train.iterations=3")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "--resume", str(split), "--quiet", "--set", "train.iterations=6")
    assert r.returncode == 0, r.stderr
    _, a, _ = load_checkpoint(straight / "checkpoints" / "last")
    _, b, _ = load_checkpoint(split / "checkpoints" / "last")
    assert a["iteration"] == b["iteration"] == 6
    assert_same_state(a["method"], b["method"])
    assert_same_state(a["sampler"], b["sampler"])
    assert_same_state(a["optimizers"], b["optimizers"])
    # Training metrics of iterations 1..6 agree line by line (the split run's first final
    # evaluation at iteration 3 is the one extra line).
    train_a = [d for d in metric_lines(straight) if "lr" in d]
    train_b = [d for d in metric_lines(split) if "lr" in d]
    assert train_a == train_b and len(train_a) == 6
    assert metric_lines(straight)[-1] == metric_lines(split)[-1]  # final val/test accuracy


def test_in_process_state_dict_round_trip(tmp_path: Path) -> None:
    cfg = tiny_config("maml")
    loop = EpisodeLoop(cfg)
    for _ in range(2):
        loop.step()
    save_checkpoint(tmp_path / "ck", cfg, loop.state_dict())
    expected = [loop.step()["loss"] for _ in range(2)]
    cfg2, state, _ = load_checkpoint(tmp_path / "ck")
    fresh = EpisodeLoop(cfg2)
    fresh.load_state_dict(state)
    assert [fresh.step()["loss"] for _ in range(2)] == expected


def test_checkpoint_holds_only_tensors_and_plain_data(tmp_path: Path) -> None:
    cfg = tiny_config("fomaml")
    loop = EpisodeLoop(cfg)
    loop.step()
    save_checkpoint(tmp_path / "ck", cfg, loop.state_dict())
    # weights_only=True refuses pickled modules or classes: this load is the check.
    state = torch.load(tmp_path / "ck" / "state.pt", weights_only=True)
    assert state["iteration"] == 1


def test_seed_fixes_a_run() -> None:
    a = [EpisodeLoop(tiny_config("protonet")).step()["loss"] for _ in range(2)]
    assert a[0] == a[1]
    other = EpisodeLoop(tiny_config("protonet", **{"train.seed": 1})).step()["loss"]
    assert other != a[0]


def test_step_metrics_and_evaluate() -> None:
    loop = EpisodeLoop(tiny_config("maml"))
    m = loop.step()
    assert {"loss", "accuracy", "tasks_per_s", "iteration", "lr"} <= set(m)
    assert m["iteration"] == 1 and m["tasks_per_s"] > 0
    res = loop.evaluate("test", episodes=10)
    assert 0 <= res["accuracy"] <= 1 and res["ci95"] >= 0 and res["episodes"] == 10
    assert loop.evaluate("test", episodes=10) == res  # the same tasks every time
    assert loop.iteration == 1  # evaluation leaves training untouched


def test_lr_halving() -> None:
    loop = EpisodeLoop(tiny_config("protonet", **{"optim.lr_halve_every": 2, "optim.lr": 0.01}))
    lrs = [loop.step()["lr"] for _ in range(5)]
    assert lrs == [0.01, 0.01, 0.005, 0.005, 0.0025]


def test_the_lr_schedule_counts_each_phases_own_updates() -> None:
    """Each phase's rate halves after its own updates, not loop iterations: DAGAN's critic
    updates every iteration and its generator every `critic_steps`-th (a restore keeps both)."""
    cfg = tiny_config("protonet", **{"method": "dagan", "optim.lr_halve_every": 2,
                                     "optim.lr": 0.01, "gan.pretrain_steps": 1,
                                     "gan.schedule": "alternate", "gan.critic_steps": 2,
                                     "gan.width": 8, "gan.z_dim": 8})
    loop = EpisodeLoop(cfg)
    lrs = [loop.step()["lr"] for _ in range(4)]
    assert lrs == [0.01, 0.01, 0.005, 0.005]  # the meta-learner's own updates 1..4
    assert loop.updates == {"D": 4, "G": 2, "meta": 4}
    assert (loop.lr_factor("D"), loop.lr_factor("G")) == (0.25, 0.5)
    again = EpisodeLoop(cfg)
    again.load_state_dict(loop.state_dict())
    assert again.updates == loop.updates
    legacy = {k: v for k, v in loop.state_dict().items() if k != "updates"}
    again.load_state_dict(legacy)  # a checkpoint written before the counts: derived
    assert again.updates == loop.updates


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(REGISTRY))
def test_cli_train_and_evaluate(algorithm: str, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", tiny_data(algorithm))
    out = tmp_path / "run"
    r = run_cli("train", str(cfg), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    for name in ("config.yaml", "splits.json", "metrics.jsonl", "result.json",
                 "checkpoints/last/state.pt"):
        assert (out / name).exists(), name
    result = json.loads((out / "result.json").read_text())
    assert result["iteration"] == 6 and 0 <= result["test_accuracy"] <= 1
    r = run_cli("evaluate", str(out), "--episodes", "12", "--shots", "2")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["episodes"] == 12 and ev["shots"] == 2 and ev["iteration"] == 6


@pytest.mark.slow
def test_cli_evaluate_errors(tmp_path: Path) -> None:
    r = run_cli("evaluate", str(tmp_path))
    assert r.returncode == 2 and "not a metagan checkpoint" in r.stderr
    cfg = write_yaml(tmp_path / "c.yaml", tiny_data("maml"))
    run_cli("train", str(cfg), "--out", str(tmp_path / "run"), "--quiet")
    r = run_cli("evaluate", str(tmp_path / "run"), "--ways", "3")
    assert r.returncode == 2 and "5-way classifier head" in r.stderr
    r = run_cli("evaluate", str(tmp_path / "run"), "--episodes", "0")
    assert r.returncode == 2 and "--episodes: must be positive" in r.stderr


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_example_configs_are_valid(path: Path) -> None:
    from metagan.config import load_config

    cfg = load_config(path)  # named after its method or algorithm, with an optional _variant
    assert {path.stem, path.stem.rsplit("_", 1)[0]} & {cfg.meta.algorithm, cfg.method}


@pytest.mark.slow
def test_divergence_stops_the_run_with_a_recorded_reason(tmp_path: Path) -> None:
    # An absurd inner learning rate makes MAML's adapted weights overflow within a few steps.
    cfg = write_yaml(tmp_path / "c.yaml", tiny_data("maml", **{"meta.inner_lr": 1e38,
                                                               "train.iterations": 20}))
    out = tmp_path / "run"
    r = run_cli("train", str(cfg), "--out", str(out), "--quiet")
    assert r.returncode == 3, r.stderr
    assert "diverged" in r.stderr and "Traceback" not in r.stderr
    record = json.loads((out / "result.json").read_text())
    assert record["diverged"] is True and 1 <= record["iteration"] <= 20
    assert "non-finite" in record["reason"]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["diverged"] is True


def test_grad_norm_is_logged_and_clipping_applies() -> None:
    m = EpisodeLoop(tiny_config("protonet")).step()
    assert m["grad_norm"] > 0
    clipped = EpisodeLoop(tiny_config("protonet", **{"optim.grad_clip": 1e-3, "optim.name": "sgd",
                                                     "optim.lr": 1.0}))
    before = [p.detach().clone() for p in clipped.learner.parameters()]
    clipped.step()  # one SGD step of lr 1 moves the weights by exactly the clipped gradient
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(clipped.learner.parameters(),
                                                                    before)])
    assert moved.norm().item() == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_config_trains(path: Path, tmp_path: Path) -> None:
    """`metagan train configs/<method>.yaml` runs (shortened to a few iterations)."""
    out = tmp_path / "run"
    # Each method is shortened through the keys it reads (others would be refused).
    method_keys = {"dagan": ["--set", "gan.pretrain_steps=1"],
                   "fewshot_gan": ["--set", "gan.embedding_iterations=2"]}.get(path.stem, [])
    r = run_cli("train", str(path), "--out", str(out), "--quiet",
                "--set", "train.iterations=3", "--set", "schedule.eval_every=0",
                "--set", "schedule.checkpoint_every=0", "--set", "schedule.eval_episodes=4",
                "--set", "schedule.test_episodes=4", *method_keys)
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["iteration"] == 3
    assert any(k.startswith("test_") for k in result)
