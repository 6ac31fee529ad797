"""One contract every registered method passes: each meta-learner (as method "meta") and each
GAN method, on a tiny config, builds, steps, evaluates, resumes bit-exactly in a fresh process
and does what it declares (classifies, samples). A method defined here, in one class and one
registration, trains, searches and loads like a shipped one."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from metagan.checkpoint import save_checkpoint
from metagan.config import Config, ConfigError, MetaConfig, build_config
from metagan.data import Splits, load_splits
from metagan.data.episodes import Episode
from metagan.loop import EpisodeLoop
from metagan.meta import METHODS, REGISTRY, MetaLearner, Method, Phase, PhaseOutput
from metagan.meta.base import required_learner
from metagan.methods import (
    config_keys,
    evaluation_keys,
    is_read,
    method_of,
    reads_of,
    register_method,
)

from .conftest import ROOT, tiny_data
from .test_loop import assert_same_state

STEPS = 2  # N: the resume test compares 2N straight steps with N, save, new process, N more


@register_method("toy")
class Toy(Method):
    """The run's learner and one extra phase pulling a scalar towards zero."""

    reads = frozenset()

    def __init__(self, learner: MetaLearner) -> None:
        super().__init__()
        self.learner = learner
        self.offset = torch.nn.Parameter(torch.ones(()))

    @classmethod
    def build(cls, cfg: Config, learner: MetaLearner | None) -> Method:
        return cls(required_learner(learner, cfg))

    def _offset(self, episode: Episode) -> PhaseOutput:
        loss = self.offset.pow(2)
        return PhaseOutput(loss, {"loss": loss.detach()})

    def phases(self) -> list[Phase]:
        return [*self.learner.phases(), Phase("offset", [self.offset], self._offset)]

    def task_logits(self, episode: Episode, rng: torch.Generator | None = None) -> torch.Tensor:
        logits: torch.Tensor = self.learner.task_logits(episode, rng)
        return logits


# Small enough for seconds: each method keeps the ones it reads.
SMALL = {"task.meta_batch": 2, "gan.width": 8, "gan.z_dim": 8, "gan.pretrain_steps": 1,
         "gan.inner_steps": 2, "gan.eval_shots": 2, "gan.eval_adapt_steps": 1,
         "gan.embedding_iterations": 2}


def tiny_run(method: str, algorithm: str = "protonet", **extra: Any) -> dict[str, Any]:
    """conftest's tiny config data for `method` around `algorithm`, with SMALL and `extra`,
    less every key that run does not read (e.g. the conv4 width for fewshot_gan)."""
    data = tiny_data(algorithm, method=method, **{**SMALL, **extra})
    reads = reads_of(build_config(data))
    return {section: ({k: v for k, v in values.items() if is_read(f"{section}.{k}", reads)}
                      if isinstance(values, dict) else values)
            for section, values in data.items()}


def learner_for(method: str) -> str:
    """The default meta-learner, or else the first one a method accepts."""
    default = MetaConfig().algorithm
    if not METHODS[method].needs_learner:
        return default
    for algorithm in sorted(REGISTRY, key=lambda a: (a != default, a)):
        try:
            build_config(tiny_data(algorithm, method=method, **SMALL))
            return algorithm
        except ConfigError:
            continue
    raise AssertionError(f"method {method!r} accepts no registered meta-learner")


ENTRIES = [("meta", a) for a in sorted(REGISTRY)] + [
    (m, learner_for(m)) for m in sorted(METHODS) if m != "meta"]
IDS = [f"{m}-{a}" if METHODS[m].needs_learner else m for m, a in ENTRIES]


@pytest.fixture(scope="module")
def splits() -> Splits:
    """The tiny configs' data (all of them read the same data settings)."""
    return load_splits(build_config(tiny_run("meta")).data)


def make_loop(method: str, algorithm: str, splits: Splits) -> EpisodeLoop:
    return EpisodeLoop(build_config(tiny_run(method, algorithm)), splits=splits)


def test_every_method_is_in_the_contract() -> None:
    assert {m for m, _ in ENTRIES} == set(METHODS) and {"meta", "toy"} <= set(METHODS)
    keys = set(config_keys())
    for name, cls in [*METHODS.items(), *REGISTRY.items()]:
        for key in cls.reads:  # a declared read names a real key or a whole section
            assert key in keys or any(k.startswith(key[:-1]) for k in keys if key.endswith(".*")), \
                (name, key)


@pytest.mark.parametrize("method, algorithm", ENTRIES, ids=IDS)
def test_builds_steps_and_evaluates(method: str, algorithm: str, splits: Splits) -> None:
    loop = make_loop(method, algorithm, splits)
    cls = method_of(loop.cfg)
    assert isinstance(loop.method, cls)
    assert (loop.learner is not None) == cls.needs_learner  # no unused learner is built
    assert cls.classifies or cls.generates  # something to evaluate it by
    metrics = loop.step()
    assert metrics["iteration"] == 1
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    result = loop.evaluate("val", episodes=4)
    assert set(result) == evaluation_keys(cls)
    assert all(math.isfinite(v) for v in result.values()), result


@pytest.mark.parametrize("method, algorithm", ENTRIES, ids=IDS)
def test_does_what_it_declares(method: str, algorithm: str, splits: Splits) -> None:
    loop = make_loop(method, algorithm, splits)
    cls = type(loop.method)
    episode = loop.sampler.sample(3)
    rng = torch.Generator().manual_seed(0)
    if cls.classifies:
        with torch.enable_grad():
            acc = loop.method.task_accuracy(episode, rng)
            logits = loop.method.task_logits(episode, torch.Generator().manual_seed(0))
        assert acc.shape == (3,) and 0 <= acc.min() and acc.max() <= 1
        # What predict returns is what evaluation scores: logits over the real classes only.
        assert logits.shape == (3, episode.query_x.shape[1], episode.ways)
        assert torch.equal((logits.argmax(-1) == episode.query_y).float().mean(-1), acc)
    else:
        with pytest.raises(NotImplementedError):
            loop.method.task_accuracy(episode, rng)
    sets = episode.support_x[:2]  # two sets of drawings [2, k, 1, S, S]
    if cls.samples:
        drawn = loop.method.adapt_and_sample(sets, 3, 1, rng)
        assert drawn.shape == (2, 3, *sets.shape[2:])
        assert 0 <= drawn.min() and drawn.max() <= 1
    else:
        with pytest.raises(NotImplementedError):
            loop.method.adapt_and_sample(sets, 3, 1, rng)


RESUME = """
import json, sys, torch
import tests.test_contract  # registers the method defined there
from metagan.run import load_loop
for ckpt in sys.argv[1:]:
    loop = load_loop(ckpt)
    metrics = [loop.step() for _ in range({steps})]
    torch.save(loop.state_dict(), ckpt + ".resumed.pt")
    with open(ckpt + ".metrics.json", "w") as f:
        json.dump([{{k: v for k, v in m.items() if k != "tasks_per_s"}} for m in metrics], f)
"""


@pytest.fixture(scope="module")
def resumed(splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """For every entry: (the state after 2N straight steps, the last N steps' metrics), and
    the same after N steps, a checkpoint and N steps in one new Python process for all."""
    root = tmp_path_factory.mktemp("resume")
    straight: dict[str, Any] = {}
    for (method, algorithm), name in zip(ENTRIES, IDS):
        loop = make_loop(method, algorithm, splits)
        for _ in range(STEPS):
            loop.step()
        save_checkpoint(root / name, loop.cfg, loop.state_dict())
        metrics = [loop.step() for _ in range(STEPS)]
        straight[name] = (loop.state_dict(),
                          [{k: v for k, v in m.items() if k != "tasks_per_s"} for m in metrics])
    r = subprocess.run([sys.executable, "-c", RESUME.format(steps=STEPS),
                        *(str(root / name) for name in IDS)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return {name: (straight[name], (torch.load(root / f"{name}.resumed.pt", weights_only=True),
                                    json.loads((root / f"{name}.metrics.json").read_text())))
            for name in IDS}


@pytest.mark.parametrize("name", IDS)
def test_resumes_exactly_in_a_fresh_process(name: str, resumed: dict[str, Any]) -> None:
    (a, metrics_a), (b, metrics_b) = resumed[name]
    assert a["iteration"] == b["iteration"] == 2 * STEPS
    for part in ("method", "optimizers", "sampler"):
        assert_same_state(a[part], b[part], part)
    assert metrics_a == metrics_b


def test_a_method_defined_here_trains_searches_and_loads(tmp_path: Path) -> None:
    from metagan.run import load_loop, train
    from metagan.space import parse_spec
    from metagan.tune.search import dry_run

    data = tiny_run("toy", **{"train.iterations": 3, "schedule.checkpoint_every": 0,
                              "schedule.eval_every": 1, "schedule.eval_episodes": 4})
    result = train(build_config(data), tmp_path / "run")
    assert result["iteration"] == 3 and 0 <= result["test_accuracy"] <= 1
    loop = load_loop(tmp_path / "run")
    assert isinstance(loop.method, Toy) and loop.iteration == 3
    assert loop.method.offset.item() < 1  # its own phase trained
    from metagan import api  # and as a user loads it: the public API

    model = api.load_model(tmp_path / "run")
    assert isinstance(model.module, Toy)
    assert torch.equal(model.module.offset, loop.method.offset)
    episode = loop.sampler.sample(2)
    assert model.accuracy(episode).shape == (2,)
    space = {"base": data, "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}},
             "search": {"num_samples": 2, "max_concurrent": 1},
             "scheduler": {"name": "none"}}
    assert "-> method toy" in dry_run(parse_spec(space))
    # Its declaration is enforced like any method's: a key it does not read is refused.
    space["space"]["gan.z_dim"] = {"choice": [8, 16]}
    with pytest.raises(ConfigError, match=r"gan\.z_dim: not read by method 'toy'"):
        parse_spec(space)
