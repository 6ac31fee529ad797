"""Adversarial losses against hand-computed values; the gradient penalty against its definition."""

from __future__ import annotations

import math

import pytest
import torch

from metagan.gan import losses as L

REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([1.0, -1.0])


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("fn, args, expected", [
    (L.nonsaturating_d, (REAL, FAKE), (sp(0) + sp(-2)) / 2 + (sp(1) + sp(-1)) / 2),
    (L.nonsaturating_g, (FAKE,), (sp(-1) + sp(1)) / 2),
    (L.hinge_d, (REAL, FAKE), (1 + 0) / 2 + (2 + 0) / 2),
    (L.hinge_g, (FAKE,), 0.0),
    (L.least_squares_d, (REAL, FAKE), 0.5 * (1 + 1) / 2 + 0.5 * (1 + 1) / 2),
    (L.least_squares_g, (FAKE,), 0.5 * (0 + 4) / 2),
    (L.wasserstein_d, (REAL, FAKE), 0.0 - 1.0),
    (L.wasserstein_g, (FAKE,), 0.0),
])
def test_losses_hand_computed(fn, args, expected: float) -> None:
    assert fn(*args).item() == pytest.approx(expected, abs=1e-6)


def test_every_loss_pair_is_registered() -> None:
    assert set(L.LOSSES) == {"nonsaturating", "hinge", "least_squares", "wasserstein"}


def test_gradient_penalty_linear_critic() -> None:
    # D(x) = <w, x> has gradient w everywhere: penalty (||w|| - 1)^2 = (5 - 1)^2.
    w = torch.tensor([3.0, 4.0])
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    gp = L.gradient_penalty(lambda x: x @ w, real, fake, torch.rand(6))
    assert gp.item() == pytest.approx(16.0)


def test_gradient_penalty_quadratic_critic_matches_definition() -> None:
    # D(x) = sum(x^2): grad at x_hat is 2 x_hat.
    real, fake = torch.randn(5, 1, 3, 3), torch.randn(5, 1, 3, 3)
    weight = torch.rand(5)
    x_hat = weight.view(-1, 1, 1, 1) * real + (1 - weight.view(-1, 1, 1, 1)) * fake
    expected = ((2 * x_hat).flatten(1).norm(dim=1) - 1).pow(2).mean()
    gp = L.gradient_penalty(lambda x: x.pow(2).flatten(1).sum(1), real, fake, weight)
    torch.testing.assert_close(gp, expected)


def test_gradient_penalty_is_differentiable_in_the_critic() -> None:
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    gp = L.gradient_penalty(lambda x: x @ w, torch.randn(4, 2), torch.randn(4, 2), torch.rand(4))
    (g,) = torch.autograd.grad(gp, w)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 4 * w / 5
    torch.testing.assert_close(g, 1.6 * w.detach())
