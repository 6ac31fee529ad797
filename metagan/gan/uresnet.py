"""DAGAN's networks (Antoniou, Storkey & Edwards 2017, "Data Augmentation Generative Adversarial
Networks"): a U-Net-shaped residual generator (UResNet) from a source drawing, and a small
DenseNet-style critic of (source, drawing) pairs.

Both normalise every image by its own statistics (layer norm: GroupNorm with one group), never
by a batch's, so an image's output does not depend on the other images it is batched with, and
WGAN-GP's per-sample gradient penalty stays well defined (Gulrajani et al. 2017 replace batch
norm in the critic for this reason). Any image side >= 8: each halving rounds up (28 -> 14 ->
7 -> 4), and the decoder resizes to the skip it joins, so no side is cropped.

Shapes: source and generated images [n, C, S, S] in [0, 1]; noise [n, z_dim]; pairs
[n, 2C, S, S] (source and drawing stacked as channels); critic scores [n].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

SLOPE = 0.2  # leaky ReLU
NOISE_CHANNELS = (8, 4)  # noise maps joined at the bottleneck and at the first decoder stage
RESIDUAL_EPS = 0.01  # a residual G's source pixels in logit space: 0 and 1 map to -+4.6


def layer_norm(channels: int) -> nn.GroupNorm:
    """Per-image normalisation over channels and pixels, with a learned per-channel affine."""
    return nn.GroupNorm(1, channels)


def conv3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution: side S -> S (stride 1) or ceil(S / 2) (stride 2)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


def halvings(image_size: int, depth: int) -> list[int]:
    """The sides of the encoder's levels: [S, ceil(S/2), ...], depth + 1 of them."""
    sides = [image_size]
    for _ in range(depth):
        sides.append(-(-sides[-1] // 2))
    return sides


class ResidualBlock(nn.Module):
    """x + f(x) with f = conv-norm-lrelu-conv-norm, then leaky ReLU; keeps shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3(channels, channels), layer_norm(channels),
                                  nn.LeakyReLU(SLOPE), conv3(channels, channels),
                                  layer_norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block on x [n, C, H, W]."""
        return F.leaky_relu(x + self.body(x), SLOPE)


def stage(in_channels: int, out_channels: int, stride: int = 1, residual: bool = True
          ) -> nn.Sequential:
    """conv-norm-lrelu (down-sampling when stride 2), then a residual block (when residual)."""
    layers = [conv3(in_channels, out_channels, stride), layer_norm(out_channels),
              nn.LeakyReLU(SLOPE)]
    return nn.Sequential(*layers, *([ResidualBlock(out_channels)] if residual else []))


class NoiseMap(nn.Module):
    """z [n, z_dim] -> `channels` noise maps [n, channels, side, side] (a learned projection)."""

    def __init__(self, z_dim: int, channels: int, side: int) -> None:
        super().__init__()
        self.channels, self.side = channels, side
        self.project = nn.Linear(z_dim, channels * side * side)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The noise maps of each row of z."""
        maps: torch.Tensor = self.project(z)
        return maps.view(-1, self.channels, self.side, self.side)


class UResNetGenerator(nn.Module):
    """G(x, z): a drawing x [n, C, S, S] and noise z [n, z_dim] -> another drawing of its class.

    Encoder: a stem at full resolution, then `depth` stride-2 stages (channels width, 2 width,
    4 width, 4 width). Decoder: back up level by level, each stage joining the encoder's
    features of its level (U-Net skips); the noise enters as projected maps concatenated at the
    bottleneck and at the first decoder stage (as the DAGAN code injects it into its first
    decoder layers); the source image itself joins the last layer.
    """

    def __init__(self, z_dim: int, width: int, image_size: int = 28, depth: int = 3,
                 image_channels: int = 1, residual: bool = False) -> None:
        super().__init__()
        self.z_dim, self.image_size = z_dim, image_size
        sides = halvings(image_size, depth)
        channels = [width] + [width * min(2 ** i, 4) for i in range(1, depth + 1)]
        self.stem = nn.Sequential(conv3(image_channels, width), layer_norm(width),
                                  nn.LeakyReLU(SLOPE))
        self.down = nn.ModuleList(stage(channels[i - 1], channels[i], stride=2)
                                  for i in range(1, depth + 1))
        z0, z1 = NOISE_CHANNELS
        self.noise = nn.ModuleList([NoiseMap(z_dim, z0, sides[depth]),
                                    NoiseMap(z_dim, z1, sides[depth - 1])])
        self.middle = stage(channels[depth] + z0, channels[depth])
        # Decoder stage for level i (depth-1 .. 0): the level below, upsampled, + the skip.
        # (At full resolution no residual block: most of the cost, little of the quality.)
        self.up = nn.ModuleList(
            stage(channels[i + 1] + channels[i] + (z1 if i == depth - 1 else 0), channels[i],
                  residual=i > 0)
            for i in reversed(range(depth)))
        self.out = conv3(width + image_channels, image_channels)
        self.residual = residual
        if residual:  # G starts as the identity: its output is a change to the source's logits
            with torch.no_grad():
                for p in self.out.parameters():
                    p.zero_()

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One new drawing per (x, z) row, in [0, 1]."""
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        depth = len(self.down)
        h = self.middle(torch.cat([skips[-1], self.noise[0](z)], 1))
        for level, up in zip(reversed(range(depth)), self.up):
            skip = skips[level]
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            parts = [h, skip] + ([self.noise[1](z)] if level == depth - 1 else [])
            h = up(torch.cat(parts, 1))
        out = self.out(torch.cat([h, x], 1))
        if self.residual:
            out = out + torch.logit(x.clamp(RESIDUAL_EPS, 1 - RESIDUAL_EPS))
        return torch.sigmoid(out)


class CharacterEmbedding(nn.Module):
    """A drawing [n, C, S, S] -> features [n, D] for telling characters apart (the class-keeping
    term of gan.class_weight): `stages` conv-norm-lrelu-maxpool stages of `width` channels, as a
    ProtoNet's conv4 but with layer norm (a drawing's features do not depend on its batch)."""

    def __init__(self, width: int, image_channels: int = 1, stages: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = image_channels
        for _ in range(stages):
            layers += [conv3(channels, width), layer_norm(width), nn.LeakyReLU(SLOPE),
                       nn.MaxPool2d(2, ceil_mode=True)]
            channels = width
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One feature vector per drawing."""
        features: torch.Tensor = self.features(x).flatten(1)
        return features


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


class DenseLayer(nn.Module):
    """norm-lrelu-conv adding `growth` channels: [n, C, H, W] -> [n, C + growth, H, W]."""

    def __init__(self, channels: int, growth: int, spectral: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(layer_norm(channels), nn.LeakyReLU(SLOPE),
                                  _sn(conv3(channels, growth), spectral))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x with the new features appended (dense connectivity)."""
        return torch.cat([x, self.body(x)], 1)


class PairCritic(nn.Module):
    """D(pair): a (source, drawing) pair [n, 2C, S, S] -> one score per pair [n].

    A stem, then `stages` dense blocks of `layers` layers (growth width / 2), each followed by a
    transition (norm, lrelu, 1x1 conv, 2x2 average pooling that rounds up), then the mean over
    pixels and a linear score: any side works. Layer norm only (per pair), so the WGAN-GP
    penalty of one pair does not depend on the others; optional spectral norm on every layer.
    """

    def __init__(self, width: int, image_channels: int = 2, spectral: bool = False,
                 stages: int = 3, layers: int = 2) -> None:
        super().__init__()
        growth = max(1, width // 2)
        # A stride-2 stem, as in the DAGAN code: the dense blocks run from half resolution.
        blocks: list[nn.Module] = [_sn(conv3(image_channels, width, stride=2), spectral)]
        channels = width
        for s in range(stages):
            for _ in range(layers):
                blocks.append(DenseLayer(channels, growth, spectral))
                channels += growth
            out = width * min(2 ** (s + 1), 4)
            blocks += [layer_norm(channels), nn.LeakyReLU(SLOPE),
                       _sn(nn.Conv2d(channels, out, 1), spectral),
                       nn.AvgPool2d(2, ceil_mode=True)]
            channels = out
        blocks += [layer_norm(channels), nn.LeakyReLU(SLOPE)]
        self.features = nn.Sequential(*blocks)
        self.score = _sn(nn.Linear(channels, 1), spectral)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """One score per pair."""
        h: torch.Tensor = self.features(pairs).mean(dim=(2, 3))
        score: torch.Tensor = self.score(h).squeeze(1)
        return score
