"""A user's own images as a trained model's inputs: tensors, PIL images or files.

Files and PIL images go through the training data's own preprocessing (`data.preprocess`:
grayscale, Omniglot's inversion where the model was trained on Omniglot, the configured side);
a tensor is taken as already preprocessed and must have the model's shape. Anything else is one
ConfigError line naming the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import ConfigError, DataConfig
from .data.folder import class_files
from .data.images import DataError, channels_first
from .data.preprocess import image_files, inverts, read_file, to_array

# One image: a tensor [C, S, S] (or a batch [n, C, S, S]), a PIL image, or a file; a folder
# stands for the image files directly in it.
ImageLike = torch.Tensor | Image.Image | str | Path
Images = ImageLike | Sequence[ImageLike]


def _tensor_batch(x: torch.Tensor, data: DataConfig, what: str) -> torch.Tensor:
    """A preprocessed tensor [C, S, S] or [n, C, S, S] as float [n, C, S, S] in [0, 1]."""
    size, c = data.image_size, data.channels
    batch = x.unsqueeze(0) if x.dim() == 3 else x
    if batch.dim() != 4 or tuple(batch.shape[1:]) != (c, size, size):
        raise ConfigError(f"{what}: a tensor of shape {tuple(x.shape)}; this model takes images "
                          f"of {c} channel{'s' if c > 1 else ''} at {size}x{size} "
                          f"([n, {c}, {size}, {size}], preprocessed as its training data; pass "
                          "files or PIL images to have them preprocessed)")
    if batch.dtype == torch.uint8:
        return batch.float().div(255.0)
    if not batch.is_floating_point():
        raise ConfigError(f"{what}: a tensor of {batch.dtype}; expected float in [0, 1] or uint8")
    if batch.numel() and (not torch.isfinite(batch).all() or batch.min() < 0 or batch.max() > 1):
        raise ConfigError(f"{what}: tensor values must be finite and in [0, 1] (strokes = 1)")
    return batch.float()


def _expand(images: Images) -> list[ImageLike]:
    """A flat list of single images and batches, folders replaced by their image files."""
    items: list[ImageLike] = list(images) if isinstance(images, (list, tuple)) else [images]  # type: ignore[list-item]
    out: list[ImageLike] = []
    for item in items:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            files = image_files(Path(item))
            if not files:
                raise ConfigError(f"{item}: no .png/.jpg/.jpeg images in this folder")
            out.extend(files)
        else:
            out.append(item)
    return out


def as_batch(images: Images, data: DataConfig, what: str = "images") -> torch.Tensor:
    """Images as the model's input [n, C, S, S], float in [0, 1] (strokes = 1 for Omniglot)."""
    invert = inverts(data.source)
    parts: list[torch.Tensor] = []
    for i, item in enumerate(_expand(images)):
        where = f"{what}[{i}]"
        if isinstance(item, torch.Tensor):
            parts.append(_tensor_batch(item.detach().cpu(), data, where))
            continue
        if isinstance(item, Image.Image):
            try:
                array = to_array(item, data.image_size, invert, data.channels)
            except (OSError, ValueError) as e:
                raise ConfigError(f"{where}: not a readable image ({e})") from None
        elif isinstance(item, (str, Path)):
            if not Path(item).is_file():
                raise ConfigError(f"{what}: {item}: no such image file")
            try:
                array = read_file(item, data.image_size, invert, data.channels)
            except DataError as e:
                raise ConfigError(str(e)) from None
        else:
            raise ConfigError(f"{where}: expected a tensor, a PIL image or a file path, got "
                              f"{type(item).__name__}")
        pixels = channels_first(np.array(array)[None], data.channels)  # [1, C, S, S], a copy
        parts.append(torch.from_numpy(pixels).float().div(255.0))
    if not parts:
        raise ConfigError(f"{what}: no images given")
    return torch.cat(parts)


def labelled_folder(root: str | Path) -> tuple[list[Path], list[str]]:
    """The image files of `root/<class>/*` and their class names (the folder names), read as
    the folder data source reads them."""
    try:
        classes = class_files(Path(root))
    except DataError as e:
        raise ConfigError(str(e)) from None
    files = [f for found in classes.values() for f in found]
    return files, [name for name, found in classes.items() for _ in found]
