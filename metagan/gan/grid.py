"""Sample grids a person can look at: a row of real support drawings, then rows of samples."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ..config import Config, ConfigError
from ..data import Splits
from ..data.preprocess import inverts
from ..meta.base import Method


class TrainedRun(Protocol):
    """What sample_loop reads of an EpisodeLoop (described here: the loop sits above gan/)."""

    cfg: Config
    splits: Splits
    device: torch.device
    method: Method


def save_grid(real: torch.Tensor, fake: torch.Tensor, path: str | Path, columns: int = 10,
              scale: int = 2, pad: int = 2, invert: bool = True) -> Path:
    """Write real [k, C, H, W] as the first row and fake [n, C, H, W] below (C = 1: grayscale,
    3: RGB); `invert`: the images hold strokes as 1 (Omniglot's reading), drawn in black."""
    channels, h, w = real.shape[-3:]
    rows_fake = -(-fake.shape[0] // columns)
    cell_h, cell_w = h + pad, w + pad
    shape = ((1 + rows_fake) * cell_h + pad + 4, columns * cell_w + pad)
    canvas = np.full(shape if channels == 1 else (*shape, channels), 255, np.uint8)

    def put(img: torch.Tensor, row: int, col: int, offset: int = 0) -> None:
        unit = img.clamp(0, 1)
        unit = 1 - unit if invert else unit
        pixels = (255 * unit).round().byte().cpu().permute(1, 2, 0).numpy()  # [H, W, C]
        y, x = pad + row * cell_h + offset, pad + col * cell_w
        canvas[y:y + h, x:x + w] = pixels[..., 0] if channels == 1 else pixels

    for i, img in enumerate(real[:columns]):
        put(img, 0, i)
    canvas[cell_h + pad // 2: cell_h + pad // 2 + 2, :] = 128  # a rule under the real row
    for i, img in enumerate(fake):
        put(img, 1 + i // columns, i % columns, offset=4)
    image = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale),
                                           Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def sample_loop(loop: TrainedRun, path: str | Path, split: str = "val", samples: int = 30,
                seed: int = 0, support: torch.Tensor | None = None) -> Path:
    """Grid of a generating loop's samples for `support` (default: an unseen character of `split`)."""
    from .evaluation import character_sets

    method, cfg = loop.method, loop.cfg
    if not method.samples:
        raise ConfigError(f"method {cfg.method!r} has no generator to sample from")
    if support is None:
        sets, _ = character_sets(loop.splits.get(split), 1, cfg.gan.eval_shots,
                                 np.random.default_rng(seed))
        support = sets[0]
    rng = torch.Generator().manual_seed(seed)
    fake = method.adapt_and_sample(support.unsqueeze(0).to(loop.device), samples,
                                   cfg.gan.eval_adapt_steps, rng)[0]
    return save_grid(support, fake.cpu(), path, invert=inverts(cfg.data.source))
