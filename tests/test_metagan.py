"""MetaGAN: the generated images of a task enter the classifier's inner loop as an (N+1)-th
"fake" class, weighted by gan.fake_weight; with weight 0 the classifier trains exactly as
first-order MAML (or MAML) with an (N+1)-way head. Normalisation lets real and generated images
share a batch without a batch-statistics shortcut: support mode normalises the fakes with the
real support set's statistics, instance mode every image by itself. The generator's objective is
feature matching (the paper's) or the non-saturating "not fake" loss."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metagan.config import Config, ConfigError, build_config
from metagan.data import Splits, load_splits
from metagan.data.episodes import Episode
from metagan.gan.joint import MetaGan, feature_matching, not_fake_loss
from metagan.loop import EpisodeLoop
from metagan.meta import REGISTRY, MetaLearner, build_learner
from metagan.meta.base import Phase, make_optimizer, update_phase
from metagan.meta.maml import MAML, behind_support
from metagan.models import INSTANCE, Conv4, TaskBatchNorm2d, context_statistics

from .test_batch_norm import frozen_copy, other_queries, small_learner
from .test_contract import tiny_run
from .test_meta import small_episode

MODES = ("support", "transductive", "instance")
WAYS = 3


def small_config(algorithm: str = "fomaml", mode: str = "support", fake_weight: float = 1.0,
                 **gan: object) -> Config:
    """A MetaGAN config for 12px images and a tiny generator; `mode` and `fake_weight` are set
    after validation (config.validate takes neither model.batch_norm: instance nor
    gan.fake_weight: 0 yet, see test_instance_mode_is_a_config_value and
    test_fake_weight_zero_is_a_config_value)."""
    cfg = build_config({"method": "metagan", "data": {"image_size": 12},
                        "task": {"ways": WAYS, "shots": 2, "queries": 2, "meta_batch": 4},
                        "meta": {"algorithm": algorithm, "inner_lr": 0.3, "inner_steps": 2},
                        "optim": {"name": "adam", "lr": 0.01},
                        "gan": {"z_dim": 4, "width": 4, **gan}})
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, batch_norm=mode),
                               gan=dataclasses.replace(cfg.gan, fake_weight=fake_weight))


def small_metagan(cfg: Config) -> tuple[MetaGan, MetaLearner]:
    """MetaGAN around a small double-precision conv net with an (N+1)-way head, and an
    identical (deep-copied) learner for reference runs."""
    torch.manual_seed(0)
    model = Conv4(hidden=8, depth=2, image_size=12, num_classes=WAYS + 1).double()
    learner = build_learner(cfg.meta, model, batch_norm=cfg.model.batch_norm)
    twin = copy.deepcopy(learner)
    method = MetaGan.build(cfg, learner)
    assert isinstance(method, MetaGan)
    return method.double(), twin


def fakes_for(method: MetaGan, ep: Episode, n: int, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return method._fakes(ep, n, torch.Generator().manual_seed(seed)).double()


def flat(adapted: tuple) -> torch.Tensor:
    return torch.cat([v.flatten() for v in adapted[0].values()])


# -- the fakes in the inner loop -----------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_fakes_enter_the_inner_loop(mode: str, weight: float) -> None:
    method, _ = small_metagan(small_config(mode=mode, fake_weight=weight))
    ep = small_episode(ways=WAYS)
    n = ep.support_x.shape[1]
    a = flat(method._adapt(ep, fakes_for(method, ep, n, 1)))
    b = flat(method._adapt(ep, fakes_for(method, ep, n, 2)))
    plain = flat(method.learner.adapt(ep.support_x, ep.support_y, WAYS + 1))
    if weight > 0:
        assert (a - b).abs().max() > 1e-6  # other fakes, other fast weights
        assert (a - plain).abs().max() > 1e-6
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        torch.testing.assert_close(a, plain, rtol=0, atol=1e-12)


def test_the_inner_loss_is_the_weighted_sum() -> None:
    """One inner step of the batched learner equals the textbook per-task step on
    CE(support) + w * CE(fakes, N), in transductive mode (each a batch of its own)."""
    cfg = small_config("maml", "transductive", fake_weight=0.7)
    method, _ = small_metagan(cfg)
    ep = small_episode(ways=WAYS)
    fakes = fakes_for(method, ep, 5, 3)
    model = method.learner.model
    adapted = method.learner.adapt(ep.support_x, ep.support_y, WAYS + 1, steps=1,
                                   extra=(fakes, torch.full((ep.num_tasks, 5), WAYS), 0.7))
    names = [k for k, _ in model.named_parameters()]
    for t in range(ep.num_tasks):
        params = list(model.parameters())
        loss = (F.cross_entropy(model(ep.support_x[t]), ep.support_y[t])
                + 0.7 * F.cross_entropy(model(fakes[t]), torch.full((5,), WAYS)))
        grads = torch.autograd.grad(loss, params)
        for name, p, g in zip(names, params, grads):
            torch.testing.assert_close(adapted[0][name][t], p - 0.3 * g)


def test_support_mode_fakes_do_not_move_the_statistics() -> None:
    """The inner loop's network pass on [support; fakes]: the real support images come out as
    they would alone, whatever the fakes, and the fakes come out normalised with the support
    set's statistics."""
    method, _ = small_metagan(small_config(mode="support"))
    learner = method.learner
    ep = small_episode(ways=WAYS)
    s = ep.support_x[0]
    rows = learner.statistics_rows(s.shape[0])
    assert rows == s.shape[0]
    params = dict(learner.model.named_parameters())
    fakes = fakes_for(method, ep, 4, 0)[0]
    wild = fakes * 50 + 3  # fakes with very different statistics
    real_a, fake_a = behind_support(learner.model, params, s, fakes, rows)
    real_b, _ = behind_support(learner.model, params, s, wild, rows)
    torch.testing.assert_close(real_a, real_b)
    torch.testing.assert_close(real_a, learner.model(s))
    torch.testing.assert_close(fake_a, frozen_copy(learner.model, None, s)(fakes))
    # The contrast: one batch with shared statistics lets the fakes move the real outputs.
    with context_statistics(learner.model, None):
        mixed = learner.model(torch.cat([s, wild]))[:s.shape[0]]
    assert (mixed - real_a).abs().max() > 1e-3


# -- instance mode -------------------------------------------------------------------------------

def test_instance_norm_normalises_each_image_by_itself() -> None:
    torch.manual_seed(0)
    norm = TaskBatchNorm2d(3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(5, 3, 6, 6, dtype=torch.double) * 3 + 1
    norm.context = INSTANCE
    torch.testing.assert_close(norm(x), F.instance_norm(x, weight=norm.weight, bias=norm.bias))
    with pytest.raises(ValueError, match="expected a row count"), \
            context_statistics(Conv4(hidden=4, depth=1), "batch"):
        pass


@pytest.mark.parametrize("algorithm", sorted(REGISTRY))
def test_instance_mode_an_image_does_not_depend_on_its_batch(algorithm: str) -> None:
    learner = small_learner(algorithm, "instance")
    ep = small_episode()
    rows = learner.statistics_rows(ep.support_x.shape[1])
    assert rows == INSTANCE
    params = dict(learner.model.named_parameters())
    x = torch.cat([ep.support_x[0], ep.query_x[0]])
    together = learner.call_model(params, x, rows)
    for i in range(x.shape[0]):
        torch.testing.assert_close(together[i], learner.call_model(params, x[i:i + 1], rows)[0])
    # Through the learner: a query's logits do not move when the other queries change.
    a = learner.predict(learner.adapt(ep.support_x, ep.support_y, ep.ways), ep.query_x)[:, 0]
    b = learner.predict(learner.adapt(ep.support_x, ep.support_y, ep.ways),
                        other_queries(ep.query_x))[:, 0]
    torch.testing.assert_close(a, b)
    # ... and it is not the support mode (no support statistics are involved).
    learner.batch_norm = "support"
    c = learner.predict(learner.adapt(ep.support_x, ep.support_y, ep.ways), ep.query_x)[:, 0]
    assert (a - c).abs().max() > 1e-4


def test_instance_mode_maml_predicts_each_query_alone() -> None:
    learner = small_learner("fomaml", "instance")
    ep = small_episode()
    fast, _, _ = learner.adapt(ep.support_x, ep.support_y, ep.ways)
    logits = learner.predict((fast, ep.support_x, INSTANCE), ep.query_x)
    for t in range(ep.num_tasks):
        p = {k: v[t] for k, v in fast.items()}
        for i in range(ep.query_x.shape[1]):
            with context_statistics(learner.model, INSTANCE):
                alone = functional_call(learner.model, p, (ep.query_x[t, i:i + 1],))
            torch.testing.assert_close(logits[t, i], alone[0])


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_splits(build_config(tiny_run("metagan", "fomaml")).data)


def test_metagan_trains_in_instance_mode(splits: Splits) -> None:
    cfg = build_config(tiny_run("metagan", "fomaml"))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, batch_norm="instance"))
    loop = EpisodeLoop(cfg, splits=splits)
    assert loop.learner is not None and loop.learner.batch_norm == "instance"
    before = [p.detach().clone() for p in loop.method.parameters()]
    for _ in range(2):
        metrics = loop.step()
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert any(not torch.equal(p, q) for p, q in zip(loop.method.parameters(), before))
    result = loop.evaluate("val", episodes=4)
    assert 0 <= result["accuracy"] <= 1


def test_instance_mode_is_a_config_value() -> None:
    assert build_config({"model": {"batch_norm": "instance"}}).model.batch_norm == "instance"


# -- the generator's objective ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_feature_matching_generator_loss(mode: str) -> None:
    cfg = small_config(mode=mode)
    assert cfg.gan.generator_loss == "feature_matching"  # the paper's, the default
    method, _ = small_metagan(cfg)
    ep = small_episode(ways=WAYS)
    state = method.noise.get_state()
    fm = method._g_phase(ep).objective
    method.noise.set_state(state)
    method.cfg = dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan,
                                                                  generator_loss="nonsaturating"))
    plain = method._g_phase(ep).objective
    assert torch.isfinite(fm) and torch.isfinite(plain) and fm >= 0
    assert abs(fm.item() - plain.item()) > 1e-6
    # Only the generator side learns from it.
    method.zero_grad(set_to_none=True)
    fm.backward()
    assert all(p.grad is None for p in method.learner.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.generator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())


def test_generator_losses_by_hand() -> None:
    real = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # [B=1, n=2, D=2]: mean (2, 3)
    fake = torch.tensor([[[0.0, 0.0], [2.0, 2.0], [1.0, 1.0]]])  # mean (1, 1)
    assert feature_matching(real, fake).item() == pytest.approx((1 + 4) / 2)
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)]])  # P(fake) = 1/2
    assert not_fake_loss(logits, 2).item() == pytest.approx(math.log(2.0))


def test_the_penultimate_features_are_what_the_head_reads() -> None:
    method, _ = small_metagan(small_config(mode="support"))
    learner = method.learner
    ep = small_episode(ways=WAYS)
    adapted = learner.adapt(ep.support_x, ep.support_y, WAYS + 1)
    features = learner.features(adapted, ep.query_x)
    logits = learner.predict(adapted, ep.query_x)
    head_w, head_b = adapted[0]["head.weight"], adapted[0]["head.bias"]
    torch.testing.assert_close(logits, torch.einsum("bnd,bcd->bnc", features, head_w)
                               + head_b.unsqueeze(1))


# -- the ablation: fake_weight 0 is (FO)MAML with an (N+1)-way head ------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algorithm", ["fomaml", "maml"])
def test_fake_weight_zero_trains_the_classifier_as_maml_with_an_extra_output(
        algorithm: str, mode: str) -> None:
    # SGD: Adam would blow rounding noise up to whole steps on the conv biases ahead of a norm
    # layer, whose gradient is zero but for rounding.
    cfg = small_config(algorithm, mode, fake_weight=0.0)
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, name="sgd", lr=0.1))
    method, reference = small_metagan(cfg)
    assert type(reference).__name__ == {"fomaml": "FOMAML", "maml": "MAML"}[algorithm]
    phases = method.phases()
    optimizers = [make_optimizer(p, cfg.optim) for p in phases]
    ref_phase = Phase("meta", list(reference.parameters()), reference.meta_loss)
    ref_optimizer = make_optimizer(ref_phase, cfg.optim)
    torch_rng = torch.get_rng_state()
    for i in range(3):
        ep = small_episode(ways=WAYS, seed=10 + i)
        for phase, optimizer in zip(phases, optimizers):  # D, then G (which must not matter)
            update_phase(phase, optimizer, ep, cfg.optim.lr, 0.0, i)
        update_phase(ref_phase, ref_optimizer, ep, cfg.optim.lr, 0.0, i)
    assert torch.equal(torch.get_rng_state(), torch_rng)  # nothing drew from torch's RNG
    moved = 0.0
    for (name, a), b, start in zip(method.learner.named_parameters(), reference.parameters(),
                                   small_metagan(cfg)[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
        moved = max(moved, (a - start).abs().max().item())
    assert moved > 1e-3  # they did train
    # The contrast: with fakes weighted in, the classifier trains differently.
    weighted, _ = small_metagan(small_config(algorithm, mode, fake_weight=1.0))
    phase = weighted.phases()[0]
    update_phase(phase, make_optimizer(phase, cfg.optim), small_episode(ways=WAYS, seed=10),
                 cfg.optim.lr, 0.0, 0)
    ref2 = small_metagan(cfg)[1]
    p2 = Phase("meta", list(ref2.parameters()), ref2.meta_loss)
    update_phase(p2, make_optimizer(p2, cfg.optim), small_episode(ways=WAYS, seed=10),
                 cfg.optim.lr, 0.0, 0)
    assert max((a - b).abs().max() for a, b in zip(weighted.learner.parameters(),
                                                   ref2.parameters())) > 1e-6


# -- determinism and evaluation ----------------------------------------------------------------------

def test_evaluation_draws_its_fakes_from_its_own_generator() -> None:
    method, _ = small_metagan(small_config(fake_weight=1.0))
    ep = small_episode(ways=WAYS)
    state = method.noise.get_state()
    a = method.task_accuracy(ep, torch.Generator().manual_seed(5))
    b = method.task_accuracy(ep, torch.Generator().manual_seed(5))
    assert torch.equal(method.noise.get_state(), state)  # the training noise is untouched
    assert torch.equal(a, b) and a.shape == (ep.num_tasks,)


def test_metagan_needs_a_maml_learner() -> None:
    cfg = small_config()
    learner = build_learner(dataclasses.replace(cfg.meta, algorithm="protonet"),
                            Conv4(hidden=4, depth=2, image_size=12))
    with pytest.raises(TypeError, match="MAML inner loop"):
        MetaGan.build(cfg, learner)
    assert isinstance(small_metagan(cfg)[0].learner, MAML)


def test_the_config_keys() -> None:
    g = Config().gan
    assert g.fake_weight == 1.0 and g.generator_loss == "feature_matching"
    assert "gan.fake_weight" in MetaGan.reads and "gan.generator_loss" in MetaGan.reads
    data = {"method": "metagan", "meta": {"algorithm": "fomaml"}}
    with pytest.raises(ConfigError, match=r"^gan\.fake_weight: must be"):
        build_config(data, {"gan.fake_weight": -1.0})
    with pytest.raises(ConfigError, match=r"gan\.generator_loss"):
        build_config(data, {"gan.generator_loss": "plain"})
    assert build_config(data, {"gan.generator_loss": "nonsaturating",
                               "gan.fake_weight": 0.5}).gan.fake_weight == 0.5


def test_fake_weight_zero_is_a_config_value() -> None:
    cfg = build_config({"method": "metagan", "meta": {"algorithm": "fomaml"}},
                       {"gan.fake_weight": 0.0})
    assert cfg.gan.fake_weight == 0.0
