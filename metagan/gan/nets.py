"""DCGAN-style generator and discriminator for small single-channel images (data.image_size,
28 for Omniglot; any side >= 8).

Both can be conditioned on a vector: a learned class embedding, or the mean encoding of a set
of support images (`SetEncoder`). Shapes: images [n, C, S, S] in [0, 1]; condition [n, c].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..models import TaskBatchNorm2d


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


def _down(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 4x4 stride-2 convolution: side S -> S // 2."""
    return nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)


# Normalisation of a feature map: batch statistics (TaskBatchNorm2d, the default of G), each
# image's own statistics (LayerNorm2d) or none.
Norm = Literal["batch", "layer", "none"]
# How G doubles its side: a stride-2 transposed convolution (the default), or a nearest-neighbour
# resize followed by a 3x3 convolution, which has no checkerboard artefacts (Odena et al. 2016,
# "Deconvolution and Checkerboard Artifacts").
Upsample = Literal["transposed", "resize"]


class LayerNorm2d(nn.Module):
    """Layer normalisation of each image's feature map [n, C, H, W] over its own (C, H, W), with a
    per-channel scale and shift: an image's output never depends on the others of its batch
    (as a WGAN-GP critic's must, and a meta-learned GAN's under any batching of its tasks).

    Plain tensor ops, like TaskBatchNorm2d, so it differentiates twice under torch.func.vmap
    (the gradient penalty's double backward) without relying on a fused kernel's rules.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every image by the mean and variance of its own features."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """The normalisation layer of kind `norm` for `channels` feature maps."""
    if norm == "batch":
        return TaskBatchNorm2d(channels)
    if norm == "layer":
        return LayerNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected 'batch', 'layer' or 'none', got {norm!r}")


# The four taps of one dimension of a stride-2 transposed convolution (kernel 4, padding 1) that
# equals a nearest x2 resize followed by a 3x3 convolution (padding 1) of taps k0, k1, k2:
# even outputs read k1 + k2 (own pixel) and k0 (the previous one), odd outputs k0 + k1 (own)
# and k2 (the next one). The transposed kernel [w0, w1, w2, w3] is RESIZE_TAPS @ [k0, k1, k2].
RESIZE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


class ResizeConv2d(nn.Conv2d):
    """A nearest-neighbour x2 resize then a 3x3 convolution (padding 1): [n, C, H, W] ->
    [n, C', 2H, 2W], with no checkerboard artefacts (Odena et al. 2016), every output pixel
    of a constant input away from the border being the same sum of the kernel.

    Its weights are a plain 3x3 Conv2d's (same shapes, names and initialisation); it computes
    the same output as F.interpolate(x, scale_factor=2) followed by that convolution, but in
    polyphase form: one stride-2 transposed convolution whose 4x4 kernel is the 3x3 one summed
    into the taps each output phase reads (RESIZE_TAPS), which never builds the 4x larger
    resized map and does 4 rather than 9 taps per output pixel.
    """

    taps: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)
        # A constant that follows the module's device and dtype (not saved with the weights).
        self.register_buffer("taps", torch.tensor(RESIZE_TAPS), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Resize by 2 and convolve, as one transposed convolution."""
        # [out, in, 3, 3] -> the transposed convolution's [in, out, 4, 4]
        kernel = torch.einsum("ap,oipq,bq->ioab", self.taps, self.weight, self.taps)
        return F.conv_transpose2d(x, kernel, self.bias, stride=2, padding=1)


def up_block(in_channels: int, out_channels: int, upsample: Upsample) -> nn.Module:
    """Side S -> 2S: a 4x4 stride-2 transposed convolution, or nearest resize + 3x3 convolution."""
    if upsample == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)
    if upsample == "resize":
        return ResizeConv2d(in_channels, out_channels)
    raise ValueError(f"upsample: expected 'transposed' or 'resize', got {upsample!r}")


def quarter(image_size: int) -> int:
    """The side after two halvings of the encoders and D (28 -> 7)."""
    return image_size // 2 // 2


def per_set(generate: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor],
            support: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
    """`generate(set, n, rng)` for each set of support [T, k, C, S, S], one set at a time (so
    batch statistics are a set's own): [T, n, C, S, S]."""
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
    """z [n, z_dim] (+ condition [n, cond_dim]) -> images [n, C, S, S] in [0, 1] (sigmoid output;
    in [-1, 1] with output="tanh").

    The defaults are the original network: batch statistics (norm="batch"), stride-2 transposed
    convolutions (upsample="transposed"), a sigmoid. norm="layer" | "none" and
    upsample="resize" are the options a meta-learned GAN picks (gan/fewshot.py).
    """

    def __init__(self, z_dim: int = 64, cond_dim: int = 0, width: int = 64,
                 image_channels: int = 1, image_size: int = 28, norm: Norm = "batch",
                 upsample: Upsample = "transposed",
                 output: Literal["sigmoid", "tanh"] = "sigmoid") -> None:
        super().__init__()
        self.z_dim, self.cond_dim = z_dim, cond_dim
        # Two doublings from ceil(S / 4) cover S; a side that is not a multiple of 4 is cropped.
        self.seed_side, self.image_size = -(-image_size // 4), image_size
        self.fc = nn.Linear(z_dim + cond_dim, 2 * width * self.seed_side ** 2)
        self.width = width
        if output not in ("sigmoid", "tanh"):
            raise ValueError(f"output: expected 'sigmoid' or 'tanh', got {output!r}")
        # No running statistics in any norm layer: the generator stays a pure function of its
        # weights and inputs, so functional_call/vmap can meta-learn it.
        self.up = nn.Sequential(
            norm_layer(norm, 2 * width), nn.ReLU(),
            up_block(2 * width, width, upsample),  # 7 -> 14 (S = 28)
            norm_layer(norm, width), nn.ReLU(),
            up_block(width, image_channels, upsample),  # 14 -> 28
            nn.Sigmoid() if output == "sigmoid" else nn.Tanh(),
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
                 spectral: bool = False, image_size: int = 28, norm: Norm = "none") -> None:
        super().__init__()
        # norm (default none, the original critic): a normalisation of the second convolution's
        # features (not the first's, as in DCGAN); "layer" keeps every score a function of its
        # own image, as the WGAN-GP penalty needs.
        after = [] if norm == "none" else [norm_layer(norm, 2 * width)]
        self.features = nn.Sequential(
            _sn(_down(image_channels, width), spectral), nn.LeakyReLU(0.2),  # 28 -> 14
            _sn(_down(width, 2 * width), spectral), *after, nn.LeakyReLU(0.2),  # 14 -> 7
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
