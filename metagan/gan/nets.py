"""DCGAN-style generator and discriminator for 28x28 single-channel images.

Both can be conditioned on a vector: a learned class embedding, or the mean encoding of a set
of support images (`SetEncoder`). Shapes: images [n, 1, 28, 28] in [0, 1]; condition [n, c].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..models import TaskBatchNorm2d


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


class SeededNoise(nn.Module):
    """A module drawing its noise from its own CPU generator, saved with its weights.

    The generator's state travels in the state_dict (extra state), so a resumed run draws
    exactly the noise an uninterrupted one would.
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.noise = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        """The noise generator's state."""
        return {"noise": self.noise.get_state()}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the noise generator."""
        self.noise.set_state(state["noise"])


class Generator(nn.Module):
    """z [n, z_dim] (+ condition [n, cond_dim]) -> images [n, 1, 28, 28] in [0, 1]."""

    def __init__(self, z_dim: int = 64, cond_dim: int = 0, width: int = 64,
                 image_channels: int = 1) -> None:
        super().__init__()
        self.z_dim, self.cond_dim = z_dim, cond_dim
        self.fc = nn.Linear(z_dim + cond_dim, 2 * width * 7 * 7)
        self.width = width
        # Batch statistics only (no running averages): the generator stays a pure function of
        # its weights and inputs, so functional_call/vmap can meta-learn it.
        self.up = nn.Sequential(
            TaskBatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # 7 -> 14
            TaskBatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, image_channels, 4, stride=2, padding=1),  # 14 -> 28
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Generate one image per row of z."""
        h = z if cond is None else torch.cat([z, cond], dim=1)
        seed: torch.Tensor = self.fc(h)
        images: torch.Tensor = self.up(seed.view(-1, 2 * self.width, 7, 7))
        return images


class Discriminator(nn.Module):
    """images [n, C, 28, 28] (+ condition) -> scores [n] (a projection discriminator when
    conditioned: score = psi(h) + <embed(cond), h>)."""

    def __init__(self, cond_dim: int = 0, width: int = 64, image_channels: int = 1,
                 spectral: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _sn(nn.Conv2d(image_channels, width, 4, stride=2, padding=1), spectral),  # 28 -> 14
            nn.LeakyReLU(0.2),
            _sn(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), spectral),  # 14 -> 7
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        feat = 2 * width * 7 * 7
        self.out = _sn(nn.Linear(feat, 1), spectral)
        self.project = _sn(nn.Linear(cond_dim, feat, bias=False), spectral) if cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """One score per image."""
        h: torch.Tensor = self.features(x)
        score: torch.Tensor = self.out(h).squeeze(1)
        if self.project is not None and cond is not None:
            score = score + (self.project(cond) * h).sum(1)
        return score


class SetEncoder(nn.Module):
    """A set of images [n, k, C, 28, 28] -> one condition vector [n, dim] (mean over the set)."""

    def __init__(self, dim: int = 64, width: int = 32, image_channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(image_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode each image, average over the set."""
        n, k = images.shape[:2]
        codes: torch.Tensor = self.net(images.flatten(0, 1))
        return codes.view(n, k, -1).mean(1)
