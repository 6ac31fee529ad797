"""Generation metrics: Frechet distance against the closed form, diversity, fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metagan.gan.metrics import (
    conditional_fidelity,
    feature_frechet_distance,
    frechet_distance,
    mean_pairwise_distance,
    relative_diversity,
)


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


def test_diversity_and_fidelity() -> None:
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(pts) == pytest.approx(5.0)
    collapsed = torch.zeros(5, 2) + 1.0
    assert relative_diversity(collapsed, pts) == 0.0
    protos = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    fake = torch.tensor([[9.0, 1.0], [11.0, 0.0], [1.0, 1.0], [10.0, 2.0]])
    assert conditional_fidelity(fake, protos, target=1) == 0.75


def test_fidelity_chance_counts_the_characters_really_offered() -> None:
    """With fewer held-out characters than candidates, chance is 1/T (not 1/5), and one
    character alone is refused instead of scoring a trivial 1.0."""
    import pytest
    import torch

    from metagan.config import ConfigError
    from metagan.gan.evaluation import generation_metrics

    embed = torch.nn.Flatten()
    real = torch.rand(3, 6, 1, 4, 4)
    scores = generation_metrics(embed, real[:, :3], real[:, 3:], candidates=5)
    assert scores["chance_fidelity"] == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="at least 2 held-out characters"):
        generation_metrics(embed, real[:1, :3], real[:1, 3:], candidates=5)
