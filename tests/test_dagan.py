"""DAGAN augmentation: shapes, labels, frozen generator, deterministic augmented episodes."""

from __future__ import annotations

import torch

from metagan.loop import EpisodeLoop

from .conftest import tiny_config

DAGAN = {"method": "dagan", "gan.augment": 2, "gan.pretrain_steps": 2, "gan.width": 8,
         "gan.z_dim": 8, "train.iterations": 6}


def test_augmented_support_shapes_and_labels() -> None:
    loop = EpisodeLoop(tiny_config("protonet", **DAGAN))
    ep = loop.sampler.sample(3)
    aug = loop.method.augment(ep, torch.Generator().manual_seed(0))
    assert aug.support_x.shape == (3, 5 * 3, 1, 28, 28) and aug.shots == 3
    assert torch.equal(aug.support_x[:, :5], ep.support_x)  # the real images are kept
    for b in range(3):
        assert sorted(aug.support_y[b].tolist()) == sorted(list(range(5)) * 3)
    assert torch.equal(aug.query_x, ep.query_x)


def test_frozen_generator_and_deterministic_augmented_episodes() -> None:
    a = EpisodeLoop(tiny_config("protonet", **DAGAN))
    b = EpisodeLoop(tiny_config("protonet", **DAGAN))
    for _ in range(2):  # GAN pre-training: D and G update, the meta-learner does not
        m = a.step()
        b.step()
        assert "D/loss" in m and "G/loss" in m and "meta/loss" not in m
    g_before = {k: v.clone() for k, v in a.method.generator.state_dict().items()}
    learner_before = [p.clone() for p in a.method.learner.parameters()]
    for _ in range(3):  # afterwards only the meta-learner trains, on augmented episodes
        m = a.step()
        b.step()
        assert "meta/loss" in m and "G/loss" not in m
    for k, v in a.method.generator.state_dict().items():
        assert torch.equal(v, g_before[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(a.method.learner.parameters(),
                                                      learner_before))
    # Same seed: identical augmented episodes and training (two independent loops).
    ep_a, ep_b = a.sampler.sample(2), b.sampler.sample(2)
    aug_a = a.method.augment(ep_a, a.method.noise)
    aug_b = b.method.augment(ep_b, b.method.noise)
    assert torch.equal(aug_a.support_x, aug_b.support_x)
    # A different seed gives different noise, so different generated samples.
    c = EpisodeLoop(tiny_config("protonet", **DAGAN, **{"train.seed": 5}))
    c.method.generator.load_state_dict(a.method.generator.state_dict())
    aug_c = c.method.augment(ep_a, c.method.noise)
    assert not torch.equal(aug_c.support_x[:, 5:], aug_a.support_x[:, 5:])


def test_alternate_schedule_keeps_training_the_gan() -> None:
    loop = EpisodeLoop(tiny_config("fomaml", **DAGAN, **{"gan.schedule": "alternate",
                                                          "gan.loss": "wasserstein",
                                                          "gan.ema": 0.9}))
    for _ in range(3):
        m = loop.step()
    assert {"D/loss", "G/loss", "meta/loss", "D/gradient_penalty"} <= set(m)
    assert 0 <= loop.evaluate("test", episodes=4)["accuracy"] <= 1
