"""A user's own image folder, `root/<class>/*.png|jpg`, read into an ImageSet."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .images import DataError, ImageSet, cached_image_set, default_cache_dir
from .preprocess import image_files, read_file


def class_files(root: Path) -> dict[str, list[Path]]:
    """The image files of `root/<class>/*` by class folder name (sorted); a DataError line when
    `root` is not a folder or holds no class folder with images."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected {root}/<class>/*.png)")
    classes = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = image_files(d)
        if files:
            classes[d.name] = files
    if not classes:
        raise DataError(f"{root}: no class folders with .png/.jpg images (expected root/<class>/*.png)")
    return classes


def load_folder(root: str | Path, size: int = 28, cache_dir: Path | None = None,
                channels: int = 1) -> ImageSet:
    """Read `root/<class>/*` as grayscale (channels 1) or RGB images as they are (white = 255;
    data.preprocess), one group per class folder."""
    root = Path(root).expanduser()
    classes = class_files(root)
    # v2: transparent pixels composited onto white (data.preprocess)
    h = hashlib.sha256(f"folder-{size}-v2".encode() + (b"" if channels == 1 else b"-rgb"))
    for name, files in classes.items():
        for f in files:
            st = f.stat()
            h.update(f"{name}/{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())

    def build() -> ImageSet:
        images, labels = [], []
        for c, files in enumerate(classes.values()):
            for f in files:
                images.append(read_file(f, size, invert=False, channels=channels))
                labels.append(c)
        names = tuple(classes)
        return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64), names, names)

    return cached_image_set(cache_dir or default_cache_dir(), f"folder-{h.hexdigest()[:20]}", build)
