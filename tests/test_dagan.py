"""DAGAN: the UResNet generator and pair critic, WGAN-GP phases, the pre-trained GAN stored once
and reused, how fakes enter an episode (count, weight, statistics) and sample fidelity."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from metagan.config import ConfigError, build_config, load_config
from metagan.data import Splits, load_splits
from metagan.data.episodes import random_affine
from metagan.gan import pretrained
from metagan.gan.dagan import (
    DaganAugmented,
    sample_metrics,
    support_weights,
    weighted_prototypes,
    weighted_sgd_adapt,
)
from metagan.gan.losses import gradient_penalty
from metagan.gan.uresnet import PairCritic, UResNetGenerator
from metagan.loop import EpisodeLoop
from metagan.meta.maml import sgd_adapt
from metagan.meta.protonet import prototypes
from metagan.methods import GENERATION_KEYS

from .conftest import ROOT, tiny_config, tiny_data
from .test_loop import assert_same_state

DAGAN = {"method": "dagan", "gan.augment": 2, "gan.pretrain_steps": 2, "gan.critic_steps": 2,
         "gan.width": 8, "gan.z_dim": 8, "train.iterations": 6}
WGAN = {"gan.loss": "wasserstein", "gan.gp_weight": 10.0}


def dagan_loop(algorithm: str = "protonet", splits: Splits | None = None, **extra: Any
               ) -> EpisodeLoop:
    return EpisodeLoop(tiny_config(algorithm, **{**DAGAN, **extra}), splits=splits)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_splits(tiny_config().data)


def method_of(loop: EpisodeLoop) -> DaganAugmented:
    assert isinstance(loop.method, DaganAugmented)
    return loop.method


@pytest.fixture
def count_pretraining(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pre-training runs (pretrained.train_gan calls) from here on: one entry each."""
    calls: list[int] = []
    train_gan = pretrained.train_gan

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return train_gan(*args, **kwargs)

    monkeypatch.setattr(pretrained, "train_gan", counted)
    return calls


# -- networks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [28, 13])
def test_generator_keeps_the_shape_and_treats_each_image_alone(size: int) -> None:
    torch.manual_seed(0)
    g = UResNetGenerator(z_dim=6, width=4, image_size=size)
    x, z = torch.rand(5, 1, size, size), torch.randn(5, 6)
    out = g(x, z)
    assert out.shape == (5, 1, size, size) and 0 <= out.min() and out.max() <= 1
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in g.modules())
    # Per sample: image 0's output does not change when the other images (and noise) do.
    others = torch.cat([x[:1], torch.rand(4, 1, size, size)])
    torch.testing.assert_close(g(others, torch.cat([z[:1], torch.randn(4, 6)]))[0], out[0])
    # The noise matters, and so does the source image.
    assert not torch.allclose(g(x, torch.randn(5, 6))[0], out[0])
    assert not torch.allclose(g(torch.rand(5, 1, size, size), z)[0], out[0])


def test_a_residual_generator_starts_as_the_identity_and_learns_a_change() -> None:
    """gan.residual: G's output is a change to the source (zero at initialisation), so an
    untrained G redraws its source whatever the noise; one gradient step moves it off it."""
    torch.manual_seed(0)
    g = UResNetGenerator(z_dim=6, width=4, residual=True)
    x = (torch.rand(5, 1, 28, 28) > 0.8).float()  # binary strokes, as Omniglot drawings
    out = g(x, torch.randn(5, 6))
    assert (out - x).abs().max() < 0.011  # sigmoid(logit(0.01)) = 0.01
    torch.testing.assert_close(g(x, torch.randn(5, 6)), out)
    g(x, torch.randn(5, 6)).mean().backward()
    assert g.out.weight.grad is not None and g.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [28, 13])
def test_the_critic_scores_pairs_one_at_a_time(size: int) -> None:
    torch.manual_seed(0)
    d = PairCritic(width=4)
    pairs = torch.rand(6, 2, size, size)
    scores = d(pairs)
    assert scores.shape == (6,)
    other = torch.cat([pairs[:1], torch.rand(5, 2, size, size)])
    torch.testing.assert_close(d(other)[0], scores[0])
    swapped = pairs.clone()
    swapped[:, 1] = torch.rand(6, size, size)  # another target for the same source
    assert not torch.allclose(d(swapped), scores)
    # The gradient penalty is per pair and finite.
    gp = gradient_penalty(d, pairs, torch.rand(6, 2, size, size), torch.rand(6))
    assert math.isfinite(gp.item())
    spectral = PairCritic(width=4, spectral=True)
    assert any("parametrizations" in name for name, _ in spectral.named_parameters())


# -- WGAN-GP ----------------------------------------------------------------------------------------
def test_wgan_gp_phases_alternate_with_critic_steps(splits: Splits) -> None:
    loop = dagan_loop("fomaml", splits, **WGAN, **{"gan.schedule": "alternate", "gan.ema": 0.9})
    metrics = [loop.step() for _ in range(4)]
    # D every iteration, G every critic_steps-th (Phase.active), the meta-learner every one.
    assert loop.updates == {"D": 4, "G": 2, "meta": 4}
    assert ["G/loss" in m for m in metrics] == [False, True, False, True]
    for m in metrics:
        assert {"D/loss", "D/gradient_penalty", "meta/loss"} <= set(m)
        assert all(math.isfinite(v) for v in m.values()), m
    summary = method_of(loop).pretraining
    assert summary["steps"] == 2 and summary["critic_steps"] == 2
    assert math.isfinite(summary["D/gradient_penalty"]) and math.isfinite(summary["G/loss"])
    assert 0 <= loop.evaluate("test", episodes=4)["accuracy"] <= 1


@pytest.mark.parametrize("loss", ["wasserstein", "nonsaturating"])
def test_a_matching_aware_critic_also_refuses_drawings_of_other_characters(loss: str) -> None:
    """gan.mismatch_weight w: D's objective is (1 - w) loss(real, fake) + w loss(real,
    mismatched), the mismatched pair joining each source to the next pair's target; w = 0 is
    the paper's objective exactly."""
    cfg = tiny_config("protonet", **{**DAGAN, "gan.loss": loss, "gan.gp_weight": 0.0,
                                     "gan.mismatch_weight": 0.25})
    gan = pretrained.initial_gan(cfg, torch.device("cpu"))
    source, target = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    out = gan.critic_loss(source, target, torch.Generator().manual_seed(3))
    fake = gan.generator(source, gan.z(4, torch.Generator().manual_seed(3), source.device))

    def score(x: torch.Tensor) -> torch.Tensor:
        return gan.discriminator(torch.cat([source, x], 1))

    real_s, fake_s = score(target), score(fake)
    other_s = score(torch.stack([target[3], target[0], target[1], target[2]]))
    expected = 0.75 * gan.d_loss(real_s, fake_s) + 0.25 * gan.d_loss(real_s, other_s)
    torch.testing.assert_close(out.objective, expected)
    torch.testing.assert_close(out.metrics["mismatch_score"], other_s.mean())
    # Without it: the paper's objective, and no mismatched pair is scored.
    plain = pretrained.initial_gan(replace(cfg, gan=replace(cfg.gan, mismatch_weight=0.0)),
                                   torch.device("cpu"))
    plain.load_state_dict(gan.state_dict())
    out0 = plain.critic_loss(source, target, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out0.objective, gan.d_loss(real_s, fake_s))
    assert "mismatch_score" not in out0.metrics
    # Pre-training runs with it and reports the mismatched pairs' score.
    summary = pretrained.train_gan(cfg, load_splits(cfg.data).train, torch.device("cpu"))[1]
    assert math.isfinite(summary["D/mismatch_score"])


def test_a_class_keeping_term_joins_g_objective_and_e_learns_from_real_pairs_only() -> None:
    """gan.class_weight w: G's objective is the critic's plus w times the cross-entropy of
    recognising each fake's character among its group's real targets by squared distance in E;
    E's objective is the same one-shot task on real drawings (targets among sources). w = 0 is
    the paper: no E, and the stored GANs' state (no classifier weights)."""
    cfg = tiny_config("protonet", **{**DAGAN, **WGAN, "gan.class_weight": 0.5})
    gan = pretrained.initial_gan(cfg, torch.device("cpu"))
    assert gan.classifier is not None
    source, target = torch.rand(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    out = gan.generator_loss(source, torch.Generator().manual_seed(3), target, groups=2)
    fake = gan.generator(source, gan.z(6, torch.Generator().manual_seed(3), source.device))

    def one_shot_ce(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        q = gan.classifier(queries).view(2, 3, -1)
        r = gan.classifier(references).view(2, 3, -1)
        logits = -((q[:, :, None] - r[:, None]) ** 2).sum(-1)  # [groups, 3, 3]
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.arange(3).repeat(2))

    critic = gan.g_loss(gan.discriminator(torch.cat([source, fake], 1)))
    torch.testing.assert_close(out.objective, critic + 0.5 * one_shot_ce(fake, target))
    torch.testing.assert_close(out.metrics["class_loss"], one_shot_ce(fake, target))
    e_out = gan.classifier_loss(source, target, groups=2)
    torch.testing.assert_close(e_out.objective, one_shot_ce(target, source))
    with pytest.raises(ValueError, match="^gan.class_weight"):
        gan.generator_loss(source, torch.Generator(), None)
    # Off: the paper's G objective and no E, so GANs stored before the option still load.
    plain = pretrained.initial_gan(replace(cfg, gan=replace(cfg.gan, class_weight=0.0)),
                                   torch.device("cpu"))
    assert plain.classifier is None
    assert not any(k.startswith("classifier.") for k in plain.state_dict())
    for k, v in plain.state_dict().items():  # G, D and EMA start alike with and without it
        torch.testing.assert_close(v, gan.state_dict()[k])
    out0 = plain.generator_loss(source, torch.Generator().manual_seed(3), target)
    torch.testing.assert_close(out0.objective, critic)
    assert "class_loss" not in out0.metrics


def test_a_mode_seeking_term_penalises_a_generator_that_ignores_its_noise() -> None:
    """gan.diversity_weight v: G's objective adds v / (mean |G(x, z1) - G(x, z2)| / mean |z1 -
    z2| + 1e-5) for two noise draws per source (MSGAN), z1 the critic's fake's noise."""
    cfg = tiny_config("protonet", **{**DAGAN, **WGAN, "gan.diversity_weight": 0.5})
    gan = pretrained.initial_gan(cfg, torch.device("cpu"))
    source = torch.rand(4, 1, 28, 28)
    out = gan.generator_loss(source, torch.Generator().manual_seed(3))
    rng = torch.Generator().manual_seed(3)
    z1, z2 = gan.z(4, rng, source.device), gan.z(4, rng, source.device)
    fake1, fake2 = gan.generator(source, z1), gan.generator(source, z2)
    spread = (fake1 - fake2).abs().mean() / (z1 - z2).abs().mean()
    critic = gan.g_loss(gan.discriminator(torch.cat([source, fake1], 1)))
    torch.testing.assert_close(out.objective, critic + 0.5 / (spread + 1e-5))
    torch.testing.assert_close(out.metrics["spread"], spread)
    # A G that ignores its noise pays more than one that uses it (here: its noise maps zeroed).
    deaf = copy.deepcopy(gan)
    with torch.no_grad():
        for noise_map in deaf.generator.noise:
            noise_map.project.weight.zero_()
    assert deaf.generator_loss(source, torch.Generator().manual_seed(3)).metrics["spread"] == 0
    off = pretrained.initial_gan(replace(cfg, gan=replace(cfg.gan, diversity_weight=0.0)),
                                 torch.device("cpu"))
    assert "spread" not in off.generator_loss(source, torch.Generator().manual_seed(3)).metrics


def test_pretraining_with_the_g_terms_trains_e_and_g_against_them(
        splits: Splits) -> None:
    cfg = tiny_config("protonet", **{**DAGAN, **WGAN, "gan.class_weight": 1.0,
                                     "gan.diversity_weight": 0.1, "gan.pretrain_steps": 3})
    start = pretrained.initial_gan(cfg, torch.device("cpu"))
    gan, summary = pretrained.train_gan(cfg, splits.train, torch.device("cpu"))
    assert gan.classifier is not None and start.classifier is not None
    for name, p in gan.classifier.named_parameters():  # E was updated
        assert not torch.equal(p, dict(start.classifier.named_parameters())[name]), name
    for key in ("E/loss", "E/accuracy", "G/class_loss", "G/class_accuracy", "G/spread"):
        assert math.isfinite(summary[key]), key
    assert 0 <= summary["E/accuracy"] <= 1 and 0 <= summary["G/class_accuracy"] <= 1
    # In the loop's alternate schedule E learns beside D, per task.
    loop = dagan_loop("protonet", splits, **WGAN, **{"gan.schedule": "alternate",
                                                     "gan.class_weight": 1.0})
    metrics = [loop.step() for _ in range(2)]
    assert loop.updates == {"D": 2, "E": 2, "G": 1, "meta": 2}
    assert {"E/loss", "E/accuracy"} <= set(metrics[0]) and "G/class_loss" in metrics[1]


def test_the_affine_control_jitters_its_sources_and_trains_no_gan(
        splits: Splits, count_pretraining: list[int]) -> None:
    """gan.generator affine: each fake is its source drawing under a random affine jitter from
    the method's noise stream, nothing is pre-trained, and the learner trains and evaluates."""
    loop = dagan_loop("protonet", splits, **{"gan.generator": "affine", "train.seed": 29})
    method = method_of(loop)
    ep = loop.sampler.sample(2)
    augmented = method.augment(ep, torch.Generator().manual_seed(5))
    source = ep.support_x.repeat_interleave(2, dim=1).flatten(0, 1)
    expected = random_affine(source, torch.Generator().manual_seed(5))
    n = ep.support_x.shape[1]
    torch.testing.assert_close(augmented.support_x[:, n:].flatten(0, 1), expected)
    assert not torch.equal(augmented.support_x[:, n:].flatten(0, 1), source)  # jittered
    loop.step()
    assert 0 <= loop.evaluate("test", episodes=4)["accuracy"] <= 1
    assert count_pretraining == [] and not bool(method.gan_ready)
    with pytest.raises(ConfigError, match="^gan.schedule: alternate"):
        build_config(tiny_data("protonet", **{**DAGAN, "gan.generator": "affine",
                                              "gan.schedule": "alternate"}))
    for key in ("gan.class_weight", "gan.diversity_weight"):
        with pytest.raises(ConfigError, match=f"^{key}: gan.generator affine has no G"):
            build_config(tiny_data("protonet", **{**DAGAN, "gan.generator": "affine", key: 1.0}))


def test_the_frozen_schedule_trains_only_the_meta_learner(splits: Splits) -> None:
    loop = dagan_loop("protonet", splits, **WGAN)
    method = method_of(loop)
    loop.step()  # the first use loads (or makes) the pre-trained GAN
    g_before = {k: v.clone() for k, v in method.gan.state_dict().items()}
    learner_before = [p.clone() for p in method.learner.parameters()]
    for _ in range(3):
        m = loop.step()
        assert "meta/loss" in m and "G/loss" not in m and "D/loss" not in m
    assert loop.updates == {"D": 0, "G": 0, "meta": 4}  # every iteration a meta update
    for k, v in method.gan.state_dict().items():
        assert torch.equal(v, g_before[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(method.learner.parameters(),
                                                      learner_before))


# -- pre-trained once, stored, reused -----------------------------------------------------------
def test_the_pretrained_gan_is_stored_once_and_reused(tmp_path: Path, splits: Splits,
                                                      count_pretraining: list[int]) -> None:
    cfg = tiny_config("protonet", **DAGAN, **WGAN)
    cpu = torch.device("cpu")
    first = pretrained.pretrained_state(cfg, splits.train, cpu, tmp_path)
    path = pretrained.artefact_path(cfg, tmp_path)
    assert path.is_file() and count_pretraining == [1]
    stamp = path.stat().st_mtime_ns
    again = pretrained.pretrained_state(cfg, splits.train, cpu, tmp_path)
    assert count_pretraining == [1] and path.stat().st_mtime_ns == stamp  # loaded, not trained
    for k, v in first["gan"].items():
        assert torch.equal(v, again["gan"][k]), k
    assert not list(path.parent.glob("*.tmp"))  # written atomically
    # Keys that do not shape pre-training share it; those that do make another.
    same = tiny_config("maml", **{**DAGAN, **WGAN, "gan.augment": 4, "gan.fake_weight": 0.5,
                                  "gan.schedule": "alternate", "task.ways": 3,
                                  "data.cache_dir": str(tmp_path / "elsewhere")})
    assert pretrained.artefact_path(same, tmp_path) == path
    for key, value in [("gan.d_lr", 1e-3), ("gan.critic_steps", 3), ("train.seed", 1),
                       ("data.image_size", 24), ("gan.pretrain_steps", 3),
                       ("gan.residual", True), ("gan.mismatch_weight", 0.5),
                       ("gan.class_weight", 0.5), ("gan.diversity_weight", 0.5)]:
        other = tiny_config("protonet", **{**DAGAN, **WGAN, key: value})
        assert pretrained.artefact_path(other, tmp_path) != path, key
    other = tiny_config("protonet", **{**DAGAN, **WGAN, "train.seed": 1})
    changed = pretrained.pretrained_state(other, splits.train, cpu, tmp_path)
    assert count_pretraining == [1, 1] and len(list(path.parent.glob("*.pt"))) == 2
    assert any(not torch.equal(v, changed["gan"][k]) for k, v in first["gan"].items())
    # No pre-training: the untrained GAN of the key's seed, the same every time, not stored.
    untrained = tiny_config("protonet", **{**DAGAN, **WGAN, "gan.pretrain_steps": 0})
    a, b = (pretrained.pretrained_state(untrained, splits.train, cpu, tmp_path) for _ in range(2))
    assert all(torch.equal(v, b["gan"][k]) for k, v in a["gan"].items())
    assert count_pretraining == [1, 1] and len(list(path.parent.glob("*.pt"))) == 2


def test_runs_with_one_key_pretrain_once_outside_the_loop(splits: Splits,
                                                          count_pretraining: list[int]) -> None:
    # A seed no other test uses, so the session's cache does not hold this key yet.
    extra = {**WGAN, "train.seed": 23}
    a = dagan_loop("protonet", splits, **extra)
    a.step()
    assert count_pretraining == [1] and a.iteration == 1 and a.updates["meta"] == 1
    path = pretrained.artefact_path(a.cfg)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    # Another trial of the key, with another meta-learner and augmentation: loads it.
    b = dagan_loop("fomaml", splits, **extra, **{"gan.augment": 1, "gan.fake_weight": 0.5})
    b.step()
    assert count_pretraining == [1] and path.stat().st_mtime_ns == stamp
    for k, v in method_of(a).gan.state_dict().items():
        assert torch.equal(v, method_of(b).gan.state_dict()[k]), k
    # A restored run keeps its own G and D and neither loads nor trains.
    c = dagan_loop("protonet", splits, **extra)
    c.load_state_dict(a.state_dict())
    assert bool(method_of(c).gan_ready) and count_pretraining == [1]


# -- how fakes enter an episode -------------------------------------------------------------------
def test_augmented_support_shapes_and_labels(splits: Splits) -> None:
    loop = dagan_loop("protonet", splits)
    ep = loop.sampler.sample(3)
    aug = method_of(loop).augment(ep, torch.Generator().manual_seed(0))
    assert aug.support_x.shape == (3, 5 * 3, 1, 28, 28) and aug.shots == 3
    assert torch.equal(aug.support_x[:, :5], ep.support_x)  # the real images lead
    for b in range(3):
        assert sorted(aug.support_y[b].tolist()) == sorted(list(range(5)) * 3)
    assert torch.equal(aug.query_x, ep.query_x)
    # Same seed: the same augmented episodes; another seed: other noise, other samples.
    other = dagan_loop("protonet", splits)
    again = method_of(other).augment(ep, torch.Generator().manual_seed(0))
    assert torch.equal(aug.support_x, again.support_x)
    third = method_of(other).augment(ep, torch.Generator().manual_seed(1))
    assert not torch.equal(aug.support_x[:, 5:], third.support_x[:, 5:])


@pytest.mark.parametrize("at_test", [True, False])
def test_augment_at_test_decides_whether_evaluation_adapts_on_fakes(at_test: bool,
                                                                     splits: Splits) -> None:
    loop = dagan_loop("protonet", splits, **{"gan.augment_at_test": at_test})
    method = method_of(loop)
    ep = loop.sampler.sample(3)
    real = ep.support_x.shape[1]
    logits = method.task_logits(ep, torch.Generator().manual_seed(0))
    augmented = method.augment(ep, torch.Generator().manual_seed(0))
    assert augmented.support_x.shape[1] == 3 * real
    with_fakes = method.learner.task_logits(augmented, context=real)
    real_only = method.learner.task_logits(ep, context=real)
    assert not torch.allclose(with_fakes, real_only)  # the fakes do move the prototypes
    assert torch.equal(logits, with_fakes if at_test else real_only)


def test_the_shipped_dagan_config_is_the_papers_gan() -> None:
    """configs/dagan.yaml: WGAN-GP with several critic steps per G step, the UResNet G and the
    pair critic (the dataclass defaults serve the other GAN methods too)."""
    cfg = load_config(ROOT / "configs" / "dagan.yaml")
    assert (cfg.gan.loss, cfg.gan.gp_weight > 0, cfg.gan.critic_steps > 1) == (
        "wasserstein", True, True)
    gan = pretrained.PairGan(cfg)
    assert isinstance(gan.generator, UResNetGenerator)
    assert isinstance(gan.discriminator, PairCritic)


@pytest.mark.parametrize("algorithm", ["protonet", "fomaml"])
def test_no_fakes_is_the_plain_learner_exactly(algorithm: str, splits: Splits,
                                               count_pretraining: list[int]) -> None:
    plain = EpisodeLoop(tiny_config(algorithm), splits=splits)
    dagan = dagan_loop(algorithm, splits, **{"gan.augment": 0})
    for _ in range(3):
        m, d = plain.step(), dagan.step()
        assert m["loss"] == d["meta/loss"] and m["accuracy"] == d["meta/accuracy"]
    assert dagan.updates["meta"] == plain.updates["meta"] == 3
    learner = method_of(dagan).learner
    for (k, v), (k2, v2) in zip(plain.method.state_dict().items(),
                                learner.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert plain.evaluate("val", episodes=8) == dagan.evaluate("val", episodes=8)
    assert count_pretraining == [] and not bool(method_of(dagan).gan_ready)  # G never needed


def test_fake_weight_makes_prototypes_weighted_means(splits: Splits) -> None:
    z = torch.randn(6, 3)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    w = support_weights(2, 4, 0.25, torch.device("cpu"))
    assert w.tolist() == [1, 1, 0.25, 0.25, 0.25, 0.25]
    expected = torch.stack([(z[0] + 0.25 * (z[2] + z[4])) / 1.5,
                            (z[1] + 0.25 * (z[3] + z[5])) / 1.5])
    torch.testing.assert_close(weighted_prototypes(z, y, w, 2), expected)
    torch.testing.assert_close(weighted_prototypes(z, y, torch.ones(6), 2), prototypes(z, y, 2))

    # In the method: logits = distances to the weighted means of the embedded support set.
    def logits(weight: float) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(DAGAN's logits, the learner's on the real support set alone, what they saw)."""
        loop = dagan_loop("protonet", splits, **{"gan.fake_weight": weight})
        method = method_of(loop)
        ep = loop.sampler.sample(2)
        aug = method.augment(ep, torch.Generator().manual_seed(0))
        with torch.no_grad():
            plain = method.learner.predict(method.learner.adapt(ep.support_x, ep.support_y, 5),
                                           ep.query_x)
            return method._weighted_logits(aug, 5, None), plain, (method, aug)

    weighted, reals_only, (method, aug) = logits(0.25)
    params = dict(method.learner.model.named_parameters())
    with torch.no_grad():
        for b in range(2):  # by hand: embed with the real images' statistics, weighted means
            emb = method.learner.call_model(params, torch.cat([aug.support_x[b], aug.query_x[b]]),
                                            5)
            protos = weighted_prototypes(emb[:15], aug.support_y[b],
                                         support_weights(5, 10, 0.25, emb.device), 5)
            torch.testing.assert_close(weighted[b], -torch.cdist(emb[15:], protos).pow(2))
    # A vanishing weight leaves the real images' prototypes: the learner without fakes.
    nearly_none, _, _ = logits(1e-9)
    torch.testing.assert_close(nearly_none, reals_only, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(weighted, reals_only, atol=1e-3)


def test_fake_weight_weighs_the_maml_inner_loss(splits: Splits) -> None:
    loop = dagan_loop("fomaml", splits, **{"gan.fake_weight": 0.5})
    learner = method_of(loop).learner
    ep = loop.sampler.sample(1)
    aug = method_of(loop).augment(ep, torch.Generator().manual_seed(0))
    model, params = learner.model, dict(learner.model.named_parameters())
    x, y = aug.support_x[0], aug.support_y[0]

    def adapted(weights: torch.Tensor) -> dict[str, torch.Tensor]:
        return weighted_sgd_adapt(model, params, x, y, weights, 0.4, 1, True, 5)

    plain = sgd_adapt(model, params, x, y, 0.4, 1, True, 5)
    for k, v in adapted(torch.ones(15)).items():  # equal weights: the plain inner loop
        torch.testing.assert_close(v, plain[k])
    reals = sgd_adapt(model, params, x[:5], y[:5], 0.4, 1, True, 5)
    for k, v in adapted(support_weights(5, 10, 1e-9, x.device)).items():
        torch.testing.assert_close(v, reals[k], rtol=1e-4, atol=1e-5)
    half = adapted(support_weights(5, 10, 0.5, x.device))
    assert any(not torch.allclose(half[k], plain[k]) for k in plain)
    m = loop.step()  # the weighted inner loop trains
    assert math.isfinite(m["meta/loss"])
    assert 0 <= loop.evaluate("val", episodes=4)["accuracy"] <= 1


def test_the_generated_images_never_give_the_statistics(splits: Splits,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    loop = dagan_loop("protonet", splits, **{"gan.fake_weight": 0.5})
    learner = method_of(loop).learner
    seen: list[Any] = []
    adapt = learner.adapt

    def spy(support_x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        state = adapt(support_x, *args, **kwargs)
        seen.append((support_x.shape[1], state[-1]))
        return state

    monkeypatch.setattr(learner, "adapt", spy)
    ep = loop.sampler.sample(2)
    method_of(loop)._meta_phase(ep)
    method_of(loop).task_accuracy(ep, torch.Generator().manual_seed(0))
    assert seen == [(15, 5), (15, 5)]


@pytest.mark.parametrize("key, value, words", [
    ("gan.augment", -1, "must be >= 0"),
    ("gan.critic_steps", 0, "must be positive"),
    ("gan.fake_weight", 0.0, "must be positive"),
    ("gan.mismatch_weight", 1.0, r"must be in \[0, 1\)"),
    ("gan.mismatch_weight", -0.5, r"must be in \[0, 1\)"),
    ("gan.class_weight", -1.0, "must be >= 0"),
    ("gan.diversity_weight", -0.1, "must be >= 0"),
])
def test_dagan_keys_are_checked(key: str, value: object, words: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: {words}"):
        build_config(tiny_data("protonet", **{**DAGAN, key: value}))


def test_reptile_cannot_weigh_fakes() -> None:
    with pytest.raises(ConfigError, match="^gan.fake_weight: reptile"):
        build_config(tiny_data("reptile", **{**DAGAN, "gan.fake_weight": 0.5}))
    build_config(tiny_data("reptile", **DAGAN))  # unweighted fakes are fine


def test_the_loop_iterations_are_meta_updates_whatever_the_pretraining(
        splits: Splits, count_pretraining: list[int], tmp_path: Path) -> None:
    """Pre-training takes no loop iteration: a search's iteration count (ASHA's time) is the
    meta-learner's update count, whatever the pre-training length."""
    cfg = build_config(tiny_data("protonet", **{**DAGAN, "gan.pretrain_steps": 5,
                                                "train.iterations": 3,
                                                "data.cache_dir": str(tmp_path)}))
    assert cfg.gan.pretrain_steps > cfg.train.iterations  # accepted
    loop = EpisodeLoop(cfg, splits=splits)
    reported = [loop.step()["iteration"] for _ in range(3)]
    assert reported == [1, 2, 3] and loop.updates["meta"] == 3
    assert count_pretraining == [1] and method_of(loop).pretraining["steps"] == 5


# -- fidelity of samples to their source character ------------------------------------------------
class MeanPool(torch.nn.Module):
    """A fixed feature extractor: 4x4 average pooling, flattened (no training needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1)


def test_sample_metrics_scores_dagan_samples(splits: Splits) -> None:
    loop = dagan_loop("protonet", splits, **{"gan.eval_shots": 2})
    res = sample_metrics(method_of(loop), loop.splits, "val", characters=3, embed=MeanPool())
    assert set(res) == GENERATION_KEYS
    assert all(math.isfinite(v) for v in res.values()), res
    again = sample_metrics(method_of(loop), loop.splits, "val", characters=3, embed=MeanPool())
    assert res == again  # seeded


@pytest.mark.parametrize("class_weight", [0.0, 1.0])
def test_a_checkpoint_restores_everything(splits: Splits, class_weight: float) -> None:
    extra = {"gan.schedule": "alternate", "gan.ema": 0.5, "gan.class_weight": class_weight}
    loop = dagan_loop("fomaml", splits, **WGAN, **extra)
    for _ in range(3):
        loop.step()
    state = copy.deepcopy(loop.state_dict())  # state_dict() shares the live tensors
    after = [loop.step() for _ in range(2)]
    resumed = dagan_loop("fomaml", splits, **WGAN, **extra)
    resumed.load_state_dict(state)
    again = [resumed.step() for _ in range(2)]
    strip = [{k: v for k, v in m.items() if k != "tasks_per_s"} for m in (*after, *again)]
    assert strip[:2] == strip[2:]
    for part in ("method", "optimizers", "sampler"):
        assert_same_state(loop.state_dict()[part], resumed.state_dict()[part], part)


def test_image_size_other_than_28() -> None:
    loop = EpisodeLoop(build_config(tiny_data("protonet", **{**DAGAN, **WGAN,
                                                              "data.image_size": 20})))
    m = loop.step()
    assert all(math.isfinite(v) for v in m.values())
    ep = loop.sampler.sample(1)
    assert method_of(loop).augment(ep, torch.Generator()).support_x.shape[-2:] == (20, 20)
