"""model.batch_norm: in support mode (the default) every batch-norm layer normalises with the
statistics of the task's real support images, so a query's prediction does not depend on the
other queries; in transductive mode (the old behaviour) it does."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metagan.config import Config, ConfigError, MetaConfig, ModelConfig, build_config, validate
from metagan.data import Splits, load_splits
from metagan.data.episodes import Episode
from metagan.loop import EpisodeLoop
from metagan.meta import METHODS, REGISTRY, MetaLearner, build_learner
from metagan.models import Conv4, context_statistics, freeze_batch_norm

from .test_contract import ENTRIES, IDS, tiny_run
from .test_meta import per_task_maml_gradient, small_episode

MODES = ("support", "transductive")


def small_learner(algorithm: str, mode: str, ways: int = 3, steps: int = 2) -> MetaLearner:
    torch.manual_seed(0)
    model = Conv4(hidden=8, depth=2, image_size=12,
                  num_classes=REGISTRY[algorithm].head_size(ways)).double()
    return build_learner(MetaConfig(algorithm=algorithm, inner_lr=0.3, inner_steps=steps), model,
                         batch_norm=mode)


def other_queries(query_x: torch.Tensor) -> torch.Tensor:
    """The queries with every one but the first of each task replaced by a different image."""
    out = query_x.clone()
    out[:, 1:] = 1 - query_x[:, 1:].flip(1)
    return out


def frozen_copy(model: torch.nn.Module, params: dict[str, torch.Tensor] | None,
                reference: torch.Tensor) -> torch.nn.Module:
    """A copy of `model` (with `params` loaded) whose batch norm uses the statistics of
    `reference`: an image's output then depends only on itself and `reference`."""
    twin = copy.deepcopy(model)
    if params is not None:
        with torch.no_grad():
            for name, p in twin.named_parameters():
                p.copy_(params[name])
    freeze_batch_norm(twin, reference)
    return twin


# -- the mechanism -----------------------------------------------------------------------------

def test_context_statistics_normalise_every_image_by_the_first_rows() -> None:
    torch.manual_seed(0)
    model = Conv4(hidden=8, depth=2, image_size=12, num_classes=3).double()
    g = torch.Generator().manual_seed(1)
    s = torch.rand(4, 1, 12, 12, generator=g, dtype=torch.double)
    q = torch.rand(3, 1, 12, 12, generator=g, dtype=torch.double) * 2
    with context_statistics(model, 4):
        out = model(torch.cat([s, q]))
    torch.testing.assert_close(out[:4], model(s))  # the context alone: its own statistics
    torch.testing.assert_close(out[4:], frozen_copy(model, None, s)(q))
    # Outside the block the whole batch gives the statistics again.
    assert (model(torch.cat([s, q]))[4:] - out[4:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="at least one image"), context_statistics(model, 0):
        pass


# -- every learner: a query's logits, and the learner's own statistics ---------------------------

def query_logits(learner: MetaLearner, ep: Episode, query_x: torch.Tensor) -> torch.Tensor:
    adapted = learner.adapt(ep.support_x, ep.support_y, ep.ways)
    logits: torch.Tensor = learner.predict(adapted, query_x)
    return logits


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algorithm", sorted(REGISTRY))
def test_a_query_depends_on_the_other_queries_only_when_transductive(algorithm: str,
                                                                     mode: str) -> None:
    learner = small_learner(algorithm, mode)
    ep = small_episode()
    a = query_logits(learner, ep, ep.query_x)[:, 0]
    b = query_logits(learner, ep, other_queries(ep.query_x))[:, 0]
    if mode == "support":
        torch.testing.assert_close(a, b)
    else:  # ProtoNet: support and queries one batch; MAML family: the queries one batch
        assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("algorithm", sorted(REGISTRY))
@pytest.mark.parametrize("context", [None, 4])
def test_support_mode_predicts_with_the_support_statistics(algorithm: str,
                                                           context: int | None) -> None:
    """Against a network whose batch norm is frozen to the (first `context`) support images'
    statistics. context=4 of 6 support images: a DAGAN-style support set whose last images
    are generated and must not enter the statistics."""
    learner = small_learner(algorithm, "support")
    ep = small_episode()
    k = context or ep.support_x.shape[1]
    adapted = learner.adapt(ep.support_x, ep.support_y, ep.ways, context=context)
    logits = learner.predict(adapted, ep.query_x)
    for b in range(ep.num_tasks):
        if learner.head_size(ep.ways) is None:  # ProtoNet: distances to prototypes
            net = frozen_copy(learner.model, None, ep.support_x[b, :k])
            z = net(torch.cat([ep.support_x[b], ep.query_x[b]]))
            n = ep.support_x.shape[1]
            protos = torch.stack([z[:n][ep.support_y[b] == c].mean(0) for c in range(ep.ways)])
            expected = -torch.cdist(z[n:], protos).pow(2)
        else:  # the fast weights, with the statistics of the support images under them
            fast = {name: v[b] for name, v in adapted[0].items()}
            expected = frozen_copy(learner.model, fast, ep.support_x[b, :k])(ep.query_x[b])
        torch.testing.assert_close(logits[b], expected)




@pytest.mark.parametrize("algorithm, second_order", [("maml", True), ("fomaml", False)])
@pytest.mark.parametrize("context", [None, 4])
def test_support_mode_maml_meta_gradient_matches_per_task(algorithm: str, second_order: bool,
                                                          context: int | None) -> None:
    """Train as you test: the outer loss on the queries uses the support statistics too."""
    learner = small_learner(algorithm, "support")
    ep = small_episode()
    batched = torch.autograd.grad(learner.meta_loss(ep, context=context).objective,
                                  list(learner.model.parameters()))
    reference = per_task_maml_gradient(learner.model, ep, 0.3, 2, second_order,
                                               context or ep.support_x.shape[1])
    for a, b in zip(batched, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # ... and it is not the transductive one.
    learner.batch_norm = "transductive"
    transductive = torch.autograd.grad(learner.meta_loss(ep, context=context).objective,
                                       list(learner.model.parameters()))
    assert max((a - b).abs().max() for a, b in zip(batched, transductive)) > 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_reptile_adapts_with_the_mode_statistics(mode: str) -> None:
    """Reptile meta-trains on support and queries together: with the support's statistics in
    support mode, with those of all of them when transductive."""
    learner = small_learner("reptile", mode, steps=3)
    model = learner.model
    ep = small_episode()
    grads = torch.autograd.grad(learner.meta_loss(ep).objective, list(model.parameters()))
    names = [n for n, _ in model.named_parameters()]
    theta = [p.detach() for p in model.parameters()]
    mean_phi = [torch.zeros_like(p) for p in theta]
    rows = ep.support_x.shape[1] if mode == "support" else None
    for b in range(ep.num_tasks):
        x = torch.cat([ep.support_x[b], ep.query_x[b]])
        y = torch.cat([ep.support_y[b], ep.query_y[b]])
        fast = [p.clone().requires_grad_() for p in theta]
        for _ in range(3):
            with context_statistics(model, rows):
                loss = F.cross_entropy(functional_call(model, dict(zip(names, fast)), (x,)), y)
            fast = [(p - 0.3 * g).detach().requires_grad_()
                    for p, g in zip(fast, torch.autograd.grad(loss, fast))]
        mean_phi = [m + f.detach() / ep.num_tasks for m, f in zip(mean_phi, fast)]
    for g, t, m in zip(grads, theta, mean_phi):
        torch.testing.assert_close(g, t - m, rtol=1e-6, atol=1e-8)


# -- every classifying method, built from a small config as the contract suite builds it ---------

CLASSIFYING = [(m, a) for m, a in ENTRIES if METHODS[m].classifies]
CLASSIFYING_IDS = [name for (m, _), name in zip(ENTRIES, IDS) if METHODS[m].classifies]


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_splits(build_config(tiny_run("meta")).data)


def make_loop(method: str, algorithm: str, mode: str, splits: Splits) -> EpisodeLoop:
    loop = EpisodeLoop(build_config(tiny_run(method, algorithm, **{"model.batch_norm": mode})),
                       splits=splits)
    assert loop.learner is not None and loop.learner.batch_norm == mode  # the config reached it
    return loop


def first_query_class(loop: EpisodeLoop, ep: Episode) -> torch.Tensor:
    """The class the method predicts for the first query of each task, read through its
    task_accuracy only: relabelling that query c = 0..ways-1 changes the accuracy by 1/m
    exactly when c is its predicted class."""
    accs = []
    for c in range(ep.ways):
        query_y = ep.query_y.clone()
        query_y[:, 0] = c
        with torch.enable_grad():  # MAML-style learners differentiate while adapting
            accs.append(loop.method.task_accuracy(dataclasses.replace(ep, query_y=query_y),
                                                  torch.Generator().manual_seed(0)))
    return torch.stack(accs).argmax(0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method, algorithm", CLASSIFYING, ids=CLASSIFYING_IDS)
def test_every_classifying_method_predicts_a_query_from_the_support_set_alone(
        method: str, algorithm: str, mode: str, splits: Splits) -> None:
    loop = make_loop(method, algorithm, mode, splits)
    ep = loop.sampler.sample(8)
    before = first_query_class(loop, ep)
    after = first_query_class(loop, dataclasses.replace(ep, query_x=other_queries(ep.query_x)))
    if mode == "support":
        assert torch.equal(before, after)
    elif method == "meta" and algorithm in ("protonet", "maml"):  # the contrast
        assert not torch.equal(before, after)


@pytest.mark.parametrize("mode", MODES)
def test_metagan_normalises_real_and_generated_images_alike(mode: str, splits: Splits) -> None:
    """MetaGAN's classifier sees its fakes with the real support set's statistics (support
    mode), not as a batch of their own (transductive): a fake's logits then do not depend on
    the other fakes."""
    loop = make_loop("metagan", "fomaml", mode, splits)
    learner = loop.learner
    assert learner is not None
    ep = loop.sampler.sample(2)
    with torch.no_grad():
        fakes = loop.method._fakes(ep, 4)
    adapted = learner.adapt(ep.support_x, ep.support_y, ep.ways + 1)
    a = learner.predict(adapted, fakes)[:, 0]
    b = learner.predict(adapted, other_queries(fakes))[:, 0]
    if mode == "support":
        torch.testing.assert_close(a, b)
    else:
        assert (a - b).abs().max() > 1e-4


def test_dagan_takes_the_statistics_from_the_real_support_images(
        splits: Splits, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = make_loop("dagan", "protonet", "support", splits)
    learner = loop.learner
    assert learner is not None
    seen: list[tuple[int, Any]] = []
    adapt = learner.adapt

    def spy(support_x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        state = adapt(support_x, *args, **kwargs)
        seen.append((support_x.shape[1], state[-1]))  # ProtoNet's state ends with the rows
        return state

    monkeypatch.setattr(learner, "adapt", spy)
    ep = loop.sampler.sample(2)
    real = ep.support_x.shape[1]
    loop.method._meta_phase(ep)
    loop.method.task_accuracy(ep, torch.Generator().manual_seed(0))
    augmented = real * (1 + loop.cfg.gan.augment)
    assert seen == [(augmented, real), (augmented, real)]


# -- training and the config key -----------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method, algorithm", CLASSIFYING, ids=CLASSIFYING_IDS)
def test_both_modes_train_without_nan(method: str, algorithm: str, mode: str,
                                      splits: Splits) -> None:
    loop = make_loop(method, algorithm, mode, splits)
    before = [p.detach().clone() for p in loop.method.parameters()]
    for _ in range(3):
        metrics = loop.step()
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert any(not torch.equal(p, q) for p, q in zip(loop.method.parameters(), before))
    assert all(torch.isfinite(p).all() for p in loop.method.parameters())


def test_the_config_key() -> None:
    assert Config().model.batch_norm == "support"
    assert build_config({"model": {"batch_norm": "transductive"}}).model.batch_norm == \
        "transductive"
    bogus = Config(model=ModelConfig(batch_norm="running"))
    with pytest.raises(ConfigError, match=r"^model\.batch_norm: expected 'support', "
                                          r"'transductive' or 'instance', got 'running'$"):
        validate(bogus)
    with pytest.raises(ConfigError, match=r"model\.batch_norm"):
        build_config({"model": {"batch_norm": "running"}})
