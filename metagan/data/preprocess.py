"""One image preprocessing for training data and a user's own images alike.

An image becomes a uint8 array at the configured side: grayscale [H, W] or RGB [H, W, 3]
(data.channels). Omniglot draws black strokes on white: its sources are inverted so strokes
are 255 and the background 0. A user's folder is read as it is. Reading a trained model's
inputs through the same function as its training data is what makes `FewShotModel.predict`
see what the model learned from.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config import DataConfig, to_dict
from .images import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg"}
# Data sources whose drawings are dark strokes on a light ground, inverted on reading.
INVERTED_SOURCES = ("bundled", "omniglot")


def inverts(source: str) -> bool:
    """Whether images of data source `source` are inverted on reading."""
    return source in INVERTED_SOURCES


def jitter_padding(source: str) -> str:
    """What affine jitter fills uncovered corners with for data of `source`: zeros for Omniglot
    (its background after inversion), the edge pixels for a user's folder (whose background may
    be white or coloured)."""
    return "zeros" if inverts(source) else "border"


def data_key(data: DataConfig) -> dict[str, Any]:
    """The data settings as the cached artefacts built from them (a pre-trained GAN, the
    metric embedding) hash them: every field, less `channels` when 1 and plus the jitter's
    padding when not zeros, so keys made before either existed stay valid."""
    key = to_dict(data)
    if data.channels == 1:
        del key["channels"]
    if data.affine_augment and jitter_padding(data.source) != "zeros":
        key["jitter_padding"] = jitter_padding(data.source)
    return key


def to_array(image: Image.Image, size: int, invert: bool, channels: int = 1) -> np.ndarray:
    """A PIL image as uint8 [size, size] (channels 1) or [size, size, 3] (channels 3):
    converted to L or RGB, inverted when `invert`, shrunk or grown with PIL's antialiased
    bilinear filter."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels are the paper: composite onto white (dropping alpha would make
        # them black, and Omniglot's inversion would turn them into strokes).
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    img = image.convert("L" if channels == 1 else "RGB")
    if invert:
        img = Image.eval(img, lambda v: 255 - v)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode(data: bytes, size: int, invert: bool, where: str, channels: int = 1) -> np.ndarray:
    """An encoded image (PNG/JPEG bytes) read by `to_array`; `where` names it in the
    DataError of an unreadable one."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return to_array(img, size, invert, channels)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{where}: not a readable image ({e})") from None


def read_file(path: str | Path, size: int, invert: bool, channels: int = 1) -> np.ndarray:
    """An image file read by `to_array`; a missing or unreadable file is one DataError line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode(data, size, invert, str(path), channels)


def image_files(folder: Path) -> list[Path]:
    """The .png/.jpg/.jpeg files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
