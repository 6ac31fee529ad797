"""The conv4 backbone of the MAML / ProtoNet papers, for small single-channel images."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# Where a TaskBatchNorm2d takes its statistics (see context_statistics): the first k images of
# the batch (an int), the whole batch (None) or each image alone (INSTANCE).
INSTANCE = "instance"
Statistics = int | str | None


class TaskBatchNorm2d(nn.Module):
    """Batch norm with batch statistics and no running ones (as in MAML).

    The statistics are those of the whole batch it is given, or, while `context` is an int k
    (set by `context_statistics`), those of the batch's first k images only, applied to every
    image of the batch. A learner that runs its network on [support; others] with k the number
    of real support images thus normalises every query (and generated image) by the support
    set's statistics alone: MetaBN of Bronskill et al. 2020, "TaskNorm: Rethinking Batch
    Normalization for Meta-Learning" (ICML), under which an image's output depends only on
    itself and the support set, not on the other images it is batched with.

    While `context` is INSTANCE ("instance") every image is normalised per channel over its own
    pixels only (instance normalisation, with the same affine parameters): no statistics are
    shared between images at all, so real and generated images can share a batch without one
    moving the other's output.

    Written with plain tensor ops: under torch.func.vmap, PyTorch's fused batch_norm gives
    wrong second derivatives (seen with torch 2.13), which second-order MAML needs. The
    context is a Python int or str, so it is static under vmap and grad.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

        self.frozen: tuple[torch.Tensor, torch.Tensor] | None = None  # see freeze_batch_norm
        self.context: Statistics = None  # see context_statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise [n, C, H, W] per channel by the mean and variance over the images (all n,
        or the first `context`) and pixels, over each image's own pixels (INSTANCE), or by
        frozen statistics."""
        if self.frozen is not None:
            mean, var = self.frozen
        elif self.context == INSTANCE:
            mean = x.mean(dim=(2, 3), keepdim=True)
            var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)
        else:
            ref = x if not isinstance(self.context, int) else x[:self.context]
            mean = ref.mean(dim=(0, 2, 3), keepdim=True)
            var = (ref - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@contextmanager
def context_statistics(model: nn.Module, rows: Statistics) -> Iterator[None]:
    """Within the block, every TaskBatchNorm2d of `model` takes its statistics from the first
    `rows` images of each batch it normalises (None: from the whole batch; INSTANCE: each
    image from itself alone). Nests; the previous setting is restored on exit."""
    if isinstance(rows, str) and rows != INSTANCE:
        raise ValueError(f"batch-norm statistics: expected a row count, None or {INSTANCE!r}, "
                         f"got {rows!r}")
    if isinstance(rows, int) and rows < 1:
        raise ValueError(f"batch-norm statistics need at least one image, got rows={rows}")
    norms = [m for m in model.modules() if isinstance(m, TaskBatchNorm2d)]
    saved = [m.context for m in norms]
    for m in norms:
        m.context = rows
    try:
        yield
    finally:
        for m, before in zip(norms, saved):
            m.context = before


@torch.no_grad()
def freeze_batch_norm(model: nn.Module, reference: torch.Tensor) -> None:
    """Fix every TaskBatchNorm2d to the statistics it sees on `reference` (a fixed batch),
    turning the network into a per-image function, as a metric embedding must be."""
    norms = [m for m in model.modules() if isinstance(m, TaskBatchNorm2d)]
    for m in norms:
        m.frozen = None
    stats: dict[TaskBatchNorm2d, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(module: TaskBatchNorm2d, args: tuple[torch.Tensor]) -> None:
        x = args[0]
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        stats[module] = (mean, (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True))

    hooks = [m.register_forward_pre_hook(record) for m in norms]
    try:
        model(reference)
    finally:
        for h in hooks:
            h.remove()
    for m in norms:
        m.frozen = stats[m]


def conv_block(in_channels: int, out_channels: int, downsample: str = "stride") -> nn.Sequential:
    """3x3 conv, batch norm, ReLU, halving the resolution by stride 2 or by 2x2 max-pool."""
    stride = 2 if downsample == "stride" else 1
    layers = [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
              TaskBatchNorm2d(out_channels), nn.ReLU()]
    if downsample == "maxpool":
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def output_side(image_size: int, depth: int, downsample: str = "stride") -> int:
    """Spatial side after `depth` blocks: ceil-halving for stride 2, floor for max-pool."""
    side = image_size
    for _ in range(depth):
        side = (side + 1) // 2 if downsample == "stride" else side // 2
    return side


class Conv4(nn.Module):
    """`depth` conv blocks of `hidden` channels, then an optional linear classifier head.

    Stride 2 is the MAML paper's choice for Omniglot, and on a CPU it is several times faster
    than max-pooling because the 28x28x64 activations of the first block are never formed.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, depth: int = 4,
                 image_size: int = 28, num_classes: int | None = None,
                 downsample: str = "stride") -> None:
        super().__init__()
        blocks = [conv_block(in_channels if i == 0 else hidden, hidden, downsample)
                  for i in range(depth)]
        self.features = nn.Sequential(*blocks)
        side = output_side(image_size, depth, downsample)
        self.embedding_dim = hidden * side * side
        self.head = nn.Linear(self.embedding_dim, num_classes) if num_classes else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[n, C, H, W] -> [n, embedding_dim]."""
        features: torch.Tensor = self.features(x)  # [n, hidden, side, side]
        return features.flatten(1)

    def forward(self, x: torch.Tensor, penultimate: bool = False) -> torch.Tensor:
        """Logits [n, num_classes], or the embedding when there is no head or `penultimate`
        asks for the features the head reads (a functional_call can ask with kwargs)."""
        z = self.embed(x)
        return self.head(z) if self.head is not None and not penultimate else z
