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
from ..meta.base import Method, adaptation_steps


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
        y, x = pad + row * cell_h + offset, pad + col * cell_w
        canvas[y:y + h, x:x + w] = pixels_of(img, invert)

    for i, img in enumerate(real[:columns]):
        put(img, 0, i)
    canvas[cell_h + pad // 2: cell_h + pad // 2 + 2, :] = 128  # a rule under the real row
    for i, img in enumerate(fake):
        put(img, 1 + i // columns, i % columns, offset=4)
    return save_canvas(canvas, scale, path)


def pixels_of(img: torch.Tensor, invert: bool) -> np.ndarray:
    """An image [C, H, W] in [0, 1] as uint8 [H, W] (C = 1) or [H, W, C]."""
    unit = img.clamp(0, 1)
    unit = 1 - unit if invert else unit
    pixels: np.ndarray = (255 * unit).round().byte().cpu().permute(1, 2, 0).numpy()
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def save_canvas(canvas: np.ndarray, scale: int, path: str | Path) -> Path:
    """Write a uint8 canvas enlarged `scale` times (nearest) as a PNG."""
    image = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale),
                                           Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def save_character_grid(support: torch.Tensor, samples: torch.Tensor, path: str | Path,
                        scale: int = 2, pad: int = 2, invert: bool = True) -> Path:
    """One row per character: its support [T, k, C, H, W], a gap, then its samples
    [T, n, C, H, W]; `invert` as in save_grid."""
    t, k, channels, h, w = support.shape
    n = samples.shape[1]
    gap = 3 * pad
    cell_h, cell_w = h + pad, w + pad
    shape = (t * cell_h + pad, (k + n) * cell_w + gap + pad)
    canvas = np.full(shape if channels == 1 else (*shape, channels), 255, np.uint8)
    for row in range(t):
        for col, img in enumerate(torch.cat([support[row], samples[row]])):
            y, x = pad + row * cell_h, pad + col * cell_w + (gap if col >= k else 0)
            canvas[y:y + h, x:x + w] = pixels_of(img, invert)
    rule = pad + k * cell_w + gap // 2 - 1
    canvas[:, rule:rule + 1] = 128  # a rule between the support and the samples
    return save_canvas(canvas, scale, path)


def sample_loop(loop: TrainedRun, path: str | Path, split: str = "val", samples: int = 30,
                seed: int = 0, support: torch.Tensor | None = None,
                adapt_steps: int | None = None) -> Path:
    """Grid of a generating loop's samples for `support` (default: an unseen character of `split`)."""
    from .evaluation import character_sets

    method, cfg = loop.method, loop.cfg
    if not method.samples:
        raise ConfigError(f"method {cfg.method!r} has no generator to sample from")
    steps = adaptation_steps(cfg, method, adapt_steps)
    if support is None:
        sets, _ = character_sets(loop.splits.get(split), 1, cfg.gan.eval_shots,
                                 np.random.default_rng(seed))
        support = sets[0]
    rng = torch.Generator().manual_seed(seed)
    fake = method.adapt_and_sample(support.unsqueeze(0).to(loop.device), samples, steps, rng)[0]
    return save_grid(support, fake.cpu(), path, invert=inverts(cfg.data.source))
