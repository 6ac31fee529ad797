"""Generation metrics on constructed features: Frechet distance (closed forms, few samples),
unbiased KID, k-NN precision/recall/coverage, prototype fidelity and its chance control, novelty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metagan.config import ConfigError
from metagan.gan.evaluation import generation_metrics
from metagan.gan.metrics import (
    character_metrics,
    feature_frechet_distance,
    frechet_distance,
    kernel_inception_distance,
    novelty,
    precision_recall_coverage,
    prototype_fidelity,
)
from metagan.methods import GENERATION_KEYS


def test_frechet_distance_diagonal_gaussians_closed_form() -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)


def test_frechet_distance_full_covariances_reference() -> None:
    # Reference with scipy: Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), an equivalent form.
    import scipy.linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = a @ a.T + np.eye(4), b @ b.T + np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    r1 = scipy.linalg.sqrtm(s1).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)


def test_sample_frechet_distance_converges_to_closed_form() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal([0.0, 0.0], [1.0, 2.0], size=(200_000, 2))
    y = rng.normal([3.0, 0.0], [1.0, 1.0], size=(200_000, 2))
    expected = 9.0 + (1 + 1 - 2 * 1) + (4 + 1 - 2 * 2)
    assert feature_frechet_distance(x, y) == pytest.approx(expected, rel=0.02)


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a PSD matrix, by eigendecomposition (an independent route)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_frechet_distance_with_fewer_samples_than_dimensions_is_exact() -> None:
    """n <= D (singular covariances): the nuclear-norm form equals the Frechet distance of the
    fitted Gaussians, and two identical sets are at distance 0 with no ridge bias."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 16)), rng.normal(1.0, 2.0, size=(7, 16))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    r1 = psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * cross
    assert feature_frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)
    z = rng.normal(size=(5, 256))
    assert feature_frechet_distance(z, z) == pytest.approx(0.0, abs=1e-9 * (z ** 2).sum())


def test_kid_matches_a_hand_computation() -> None:
    # d = 1, k(a, b) = (ab + 1)^3: within x k(0, 1) = 1, within y k(2, 3) = 343,
    # across mean (1 + 1 + 27 + 64) / 4 = 23.25, so KID = 1 + 343 - 2 * 23.25.
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [3.0]])
    assert kernel_inception_distance(x, y) == pytest.approx(297.5)
    with pytest.raises(ValueError, match="two samples"):
        kernel_inception_distance(x[:1], y)


def test_kid_is_unbiased_at_few_samples() -> None:
    """Two samples of 7 from one distribution average to KID 0 (the biased V-statistic would
    not); a shifted distribution is far above."""
    g = torch.Generator().manual_seed(0)
    same = torch.tensor([kernel_inception_distance(torch.randn(7, 16, generator=g),
                                                   torch.randn(7, 16, generator=g))
                         for _ in range(400)])
    shifted = kernel_inception_distance(torch.randn(7, 16, generator=g),
                                        torch.randn(7, 16, generator=g) + 1.0)
    stderr = float(same.std()) / math.sqrt(len(same))
    assert abs(float(same.mean())) < 3 * stderr
    assert abs(float(same.mean())) < 0.05 * shifted


def test_precision_recall_coverage_constructed() -> None:
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # 1-NN radius 1 each
    fake = torch.tensor([[0.5, 0.0], [5.0, 5.0]])
    precision, recall, coverage = precision_recall_coverage(real, fake, k=1)
    assert precision == 0.5  # the outlier is in no real ball
    assert recall == 1.0  # the outlier's huge ball swallows every real point (why coverage too)
    assert coverage == 0.5  # only (0, 0) and (1, 0) hold a sample
    assert precision_recall_coverage(real, real, k=1) == (1.0, 1.0, 1.0)


def test_prototype_fidelity_and_its_chance_control() -> None:
    protos = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],  # character 0: both own
                            [[9.0, 0.0], [0.0, 9.0]],  # character 1: own, then 2
                            [[1.0, 1.0], [2.0, 0.0]]])  # character 2: both at 0
    fidelity, chance = prototype_fidelity(samples, protos)
    assert fidelity == pytest.approx(3 / 6)
    assert chance == pytest.approx(3 / 6)  # labels 1, 2, 0: char 1 hits 2 once, char 2 hits 0 twice
    with pytest.raises(ValueError, match="2 characters"):
        prototype_fidelity(samples[:1], protos[:1])


def test_novelty_of_copies_and_of_new_drawings() -> None:
    support = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    real = torch.tensor([[0.0, 1.0], [4.0, 3.0]])  # nearest support 1 and 3: mean 2
    assert novelty(support.flip(0), real, support) == 0.0
    assert novelty(torch.tensor([[0.0, 4.0], [4.0, 4.0]]), real, support) == pytest.approx(2.0)


def test_character_metrics_keys_and_a_copier() -> None:
    g = torch.Generator().manual_seed(0)
    support, real = torch.randn(4, 5, 8, generator=g), torch.randn(4, 7, 8, generator=g)
    m = character_metrics(support, torch.randn(4, 7, 8, generator=g), real)
    assert set(m) == GENERATION_KEYS and all(math.isfinite(v) for v in m.values())
    copies = support.repeat(1, 2, 1)[:, :7]
    assert character_metrics(support, copies, real)["novelty"] == 0.0


def test_generation_metrics_needs_two_characters_and_accepts_old_calls() -> None:
    """One character alone is refused instead of scoring a trivial fidelity of 1.0; a call
    without `support` (the former signature) takes it from the first half of `real`."""
    embed = torch.nn.Flatten()
    real = torch.rand(3, 6, 1, 4, 4)
    old = generation_metrics(embed, real[:, :3], real[:, 3:])
    assert old == generation_metrics(embed, real[:, :3], real[:, 4:], support=real[:, 3:4])
    with pytest.raises(ConfigError, match="at least 2 held-out characters"):
        generation_metrics(embed, real[:1, :3], real[:1, 3:])
