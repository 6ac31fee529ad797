"""An in-memory labelled image set, its splits by group (alphabet) and rotation classes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(RuntimeError):
    """A dataset that cannot be read, downloaded or verified."""


@dataclass(frozen=True)
class ImageSet:
    """Images of many classes, each class belonging to a group (an Omniglot alphabet).

    images: [N, H, W] uint8, 255 = stroke, 0 = background; labels: [N] class indices.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: tuple[str, ...]  # groups[c] is the group of class c

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def class_counts(self) -> np.ndarray:
        """Images per class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def select_groups(self, groups: set[str]) -> ImageSet:
        """The subset whose classes belong to `groups`, classes renumbered 0..C-1."""
        keep = [c for c in range(self.num_classes) if self.groups[c] in groups]
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        mask = remap[self.labels] >= 0
        return ImageSet(self.images[mask], remap[self.labels[mask]],
                        tuple(self.classes[c] for c in keep), tuple(self.groups[c] for c in keep))


def with_rotations(images: ImageSet) -> ImageSet:
    """Add the 90/180/270-degree rotations of every class as new classes (same group)."""
    xs, ys, classes, groups = [images.images], [images.labels], list(images.classes), list(images.groups)
    c = images.num_classes
    for k in (1, 2, 3):
        xs.append(np.ascontiguousarray(np.rot90(images.images, k, axes=(1, 2))))
        ys.append(images.labels + k * c)
        classes += [f"{name}@rot{90 * k}" for name in images.classes]
        groups += list(images.groups)
    return ImageSet(np.concatenate(xs), np.concatenate(ys), tuple(classes), tuple(groups))


def split_groups(groups: list[str], val: int, test: int, seed: int) -> dict[str, list[str]]:
    """Assign whole groups to meta-train / meta-val / meta-test by a seeded permutation."""
    unique = sorted(set(groups))
    if val + test >= len(unique):
        raise DataError(f"cannot hold out {val} validation + {test} test groups from "
                        f"{len(unique)} groups: meta-train would be empty")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    return {"test": sorted(order[:test]), "val": sorted(order[test:test + val]),
            "train": sorted(order[test + val:])}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """$METAGAN_CACHE, else ~/.cache/metagan."""
    return Path(os.environ.get("METAGAN_CACHE", Path.home() / ".cache" / "metagan"))


def cached_image_set(cache_dir: Path, key: str, build: Callable[[], ImageSet]) -> ImageSet:
    """Load the preprocessed set stored under `key`, building and storing it on a miss."""
    path = cache_dir / f"{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return ImageSet(z["images"], z["labels"], tuple(z["classes"].tolist()),
                            tuple(z["groups"].tolist()))
    result = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written to a temporary file then renamed, so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, images=result.images, labels=result.labels,
                 classes=np.array(result.classes), groups=np.array(result.groups))
    os.replace(tmp, path)
    return result
