"""Adversarial losses as pure functions of discriminator outputs, and the WGAN-GP penalty.

Every function takes raw discriminator scores (logits / critic values), shape [n] or [n, 1],
and returns a scalar to minimise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import grad


def nonsaturating_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), with D = sigmoid(score)."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def nonsaturating_g(fake: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): the non-saturating generator loss of Goodfellow et al."""
    return F.softplus(-fake).mean()


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    """-mean(D(G(z)))."""
    return -fake.mean()


def least_squares_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN: 0.5 (D(x) - 1)^2 + 0.5 D(G(z))^2."""
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


def least_squares_g(fake: torch.Tensor) -> torch.Tensor:
    """LSGAN: 0.5 (D(G(z)) - 1)^2."""
    return 0.5 * ((fake - 1.0) ** 2).mean()


def wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Critic loss E[D(G(z))] - E[D(x)] (add gradient_penalty for WGAN-GP)."""
    return fake.mean() - real.mean()


def wasserstein_g(fake: torch.Tensor) -> torch.Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = w real + (1 - w) fake (Gulrajani et al.).

    `weight` [n] are the interpolation weights (uniform in [0, 1], drawn by the caller so the
    function stays pure and seedable).
    """
    shape = (-1,) + (1,) * (real.dim() - 1)
    x_hat = (weight.view(shape) * real + (1 - weight.view(shape)) * fake).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    norms: torch.Tensor = grads.flatten(1).norm(dim=1)  # Tensor.norm is unannotated in torch
    return (norms - 1.0).pow(2).mean()


def functional_gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor],
                                real: torch.Tensor, fake: torch.Tensor,
                                weight: torch.Tensor) -> torch.Tensor:
    """gradient_penalty written with torch.func.grad instead of torch.autograd.grad: the same
    value, and a pure function, so it composes with grad (a critic's weights differentiated
    through it) and vmap (a meta-batch of tasks, each with its own critic weights).

    The input gradient of sum_i D(x_hat_i) is every image's own gradient when each score
    depends on its own image only (no batch statistics in the critic), as WGAN-GP requires.
    """
    shape = (-1,) + (1,) * (real.dim() - 1)
    x_hat = weight.view(shape) * real + (1 - weight.view(shape)) * fake
    grads: torch.Tensor = grad(lambda x: critic(x).sum())(x_hat)
    norms: torch.Tensor = grads.flatten(1).norm(dim=1)
    return (norms - 1.0).pow(2).mean()


LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "nonsaturating": (nonsaturating_d, nonsaturating_g),
    "hinge": (hinge_d, hinge_g),
    "least_squares": (least_squares_d, least_squares_g),
    "wasserstein": (wasserstein_d, wasserstein_g),
}
