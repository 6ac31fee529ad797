"""N-way K-shot task sampling: a whole meta-batch of episodes as tensors, seeded and resumable."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .images import ImageSet, channels_first


@dataclass(frozen=True)
class Episode:
    """A meta-batch of B tasks; labels are relabelled 0..ways-1 within every task.

    support_x: [B, ways*shots, C, H, W] float in [0, 1]; support_y: [B, ways*shots] long
    query_x:   [B, ways*queries, C, H, W];                query_y:   [B, ways*queries]
    classes:   [B, ways] the split's class index behind each task label
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    ways: int
    shots: int
    queries: int
    classes: torch.Tensor

    @property
    def num_tasks(self) -> int:
        """Tasks in the meta-batch."""
        return self.support_x.shape[0]


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0,
                  scale: float = 0.1, shift: float = 2.0, padding: str = "zeros") -> torch.Tensor:
    """Jitter images [n, C, H, W]: rotation within +-degrees, scale within 1 +- scale, shift
    within +-shift pixels; parameters drawn on the CPU from `generator`. `padding`: what fills
    the uncovered corners, grid_sample's "zeros" (Omniglot's background) or "border" (the
    edge pixels: a light or coloured background stays itself)."""
    n, _, h, w = x.shape
    u = torch.rand(4, n, generator=generator) * 2 - 1  # uniform in [-1, 1]
    angle = u[0] * degrees * math.pi / 180
    s = 1 + u[1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, u[2] * 2 * shift / w], 1),
                         torch.stack([sin, cos, u[3] * 2 * shift / h], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode=padding)


class TaskSampler:
    """Draws meta-batches of N-way K-shot Q-query tasks from an ImageSet.

    Images live on `device` as uint8; indices are drawn on the CPU from a private generator,
    so a seed (and a saved generator state) fixes the tasks on any device.
    """

    def __init__(self, images: ImageSet, ways: int, shots: int, queries: int, seed: int,
                 device: torch.device | str = "cpu", affine: bool = False,
                 padding: str = "zeros") -> None:
        """`affine`: jitter every image (random_affine, filling with `padding`)."""
        counts = images.class_counts()
        if ways > images.num_classes:
            raise ValueError(f"{ways}-way tasks need {ways} classes, the split has "
                             f"{images.num_classes}")
        if counts.min() < shots + queries:
            raise ValueError(f"{shots} shots + {queries} queries need {shots + queries} images "
                             f"per class, a class has only {counts.min()}")
        order = np.argsort(images.labels, kind="stable")
        self.images = torch.from_numpy(  # [N, C, H, W]
            channels_first(images.images[order], images.channels)).to(device)
        self.start = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]))
        self.count = torch.from_numpy(counts)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.affine, self.padding = affine, padding

    def sample(self, num_tasks: int) -> Episode:
        """One meta-batch of `num_tasks` tasks, no class repeated within a task."""
        g, n, per = self.generator, self.ways, self.shots + self.queries
        classes = torch.rand(num_tasks, len(self.count), generator=g).argsort(dim=1)[:, :n]
        count = self.count[classes]  # [B, N]
        keys = torch.rand(num_tasks, n, int(self.count.max()), generator=g)
        keys[torch.arange(keys.shape[-1]) >= count.unsqueeze(-1)] = 2.0  # past the class's end
        picks = keys.argsort(dim=-1)[..., :per]  # [B, N, K+Q] distinct instances per class
        index = (self.start[classes].unsqueeze(-1) + picks).to(self.device)
        x = self.images[index].float().div_(255.0)  # [B, N, K+Q, C, H, W]
        if self.affine:
            x = random_affine(x.flatten(0, 2), g, padding=self.padding).view(x.shape)
        labels = torch.arange(n, device=self.device).view(1, n, 1)
        y = labels.expand(num_tasks, n, per)
        k = self.shots

        def flat(t: torch.Tensor) -> torch.Tensor:  # [B, N, k, ...] -> [B, N*k, ...]
            return t.reshape(num_tasks, -1, *t.shape[3:])

        return Episode(flat(x[:, :, :k]), flat(y[:, :, :k]), flat(x[:, :, k:]), flat(y[:, :, k:]),
                       n, k, self.queries, classes)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator state, enough to resume the exact task sequence."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a state from `state_dict()`."""
        self.generator.set_state(state["generator"])
