"""DCGAN-style generator and discriminator for small single-channel images (data.image_size,
28 for Omniglot; any side >= 8).

Both can be conditioned on a vector: a learned class embedding, or the mean encoding of a set
of support images (`SetEncoder`). Shapes: images [n, 1, S, S] in [0, 1]; condition [n, c].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..models import TaskBatchNorm2d


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


def _down(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 4x4 stride-2 convolution: side S -> S // 2."""
    return nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)


def quarter(image_size: int) -> int:
    """The side after two halvings of the encoders and D (28 -> 7)."""
    return image_size // 2 // 2


def per_set(generate: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor],
            support: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
    """`generate(set, n, rng)` for each set of support [T, k, 1, S, S], one set at a time (so
    batch statistics are a set's own): [T, n, 1, S, S]."""
    return torch.stack([generate(s, n, rng) for s in support])


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
    """z [n, z_dim] (+ condition [n, cond_dim]) -> images [n, 1, S, S] in [0, 1]."""

    def __init__(self, z_dim: int = 64, cond_dim: int = 0, width: int = 64,
                 image_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.z_dim, self.cond_dim = z_dim, cond_dim
        # Two doublings from ceil(S / 4) cover S; a side that is not a multiple of 4 is cropped.
        self.seed_side, self.image_size = -(-image_size // 4), image_size
        self.fc = nn.Linear(z_dim + cond_dim, 2 * width * self.seed_side ** 2)
        self.width = width
        # Batch statistics only (no running averages): the generator stays a pure function of
        # its weights and inputs, so functional_call/vmap can meta-learn it.
        self.up = nn.Sequential(
            TaskBatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # 7 -> 14 (S = 28)
            TaskBatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, image_channels, 4, stride=2, padding=1),  # 14 -> 28
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Generate one image per row of z."""
        h = z if cond is None else torch.cat([z, cond], dim=1)
        seed: torch.Tensor = self.fc(h)
        side = self.seed_side
        images: torch.Tensor = self.up(seed.view(-1, 2 * self.width, side, side))
        return images[..., :self.image_size, :self.image_size]


class Discriminator(nn.Module):
    """images [n, C, S, S] (+ condition) -> scores [n] (a projection discriminator when
    conditioned: score = psi(h) + <embed(cond), h>)."""

    def __init__(self, cond_dim: int = 0, width: int = 64, image_channels: int = 1,
                 spectral: bool = False, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _sn(_down(image_channels, width), spectral), nn.LeakyReLU(0.2),  # 28 -> 14
            _sn(_down(width, 2 * width), spectral), nn.LeakyReLU(0.2),  # 14 -> 7
            nn.Flatten(),
        )
        feat = 2 * width * quarter(image_size) ** 2
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
    """A set of images [n, k, C, S, S] -> one condition vector [n, dim] (mean over the set)."""

    def __init__(self, dim: int = 64, width: int = 32, image_channels: int = 1,
                 image_size: int = 28) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _down(image_channels, width), nn.LeakyReLU(0.2),
            _down(width, 2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * quarter(image_size) ** 2, dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode each image, average over the set."""
        n, k = images.shape[:2]
        codes: torch.Tensor = self.net(images.flatten(0, 1))
        return codes.view(n, k, -1).mean(1)
