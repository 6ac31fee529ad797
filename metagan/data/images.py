"""An in-memory labelled image set, its splits by group (alphabet) and rotation classes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(RuntimeError):
    """A dataset that cannot be read, downloaded or verified."""


@dataclass(frozen=True)
class ImageSet:
    """Images of many classes, each class belonging to a group (an Omniglot alphabet).

    images: [N, H, W] uint8 (grayscale; Omniglot: 255 = stroke, 0 = background) or
    [N, H, W, 3] (RGB); labels: [N] class indices.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: tuple[str, ...]  # groups[c] is the group of class c

    @property
    def channels(self) -> int:
        """Colour channels of the images: 1 (grayscale) or 3 (RGB)."""
        return 1 if self.images.ndim == 3 else int(self.images.shape[-1])

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


def channels_first(pixels: np.ndarray, channels: int) -> np.ndarray:
    """ImageSet pixels [..., H, W] (channels 1) or [..., H, W, C] as a contiguous
    [..., C, H, W], the models' layout."""
    if channels == 1:
        return np.ascontiguousarray(pixels[..., None, :, :])
    return np.ascontiguousarray(np.moveaxis(pixels, -1, -3))


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


def group_units(groups: list[str], families: Iterable[Iterable[str]] = ()) -> list[tuple[str, ...]]:
    """The units a split assigns whole: each family's members present in `groups` as one unit,
    every other group alone; members and units sorted by name."""
    present = set(groups)
    units: dict[str, tuple[str, ...]] = {}
    for family in families:
        members = tuple(sorted(present & set(family)))
        if members:
            for g in members:
                if g in units:
                    raise DataError(f"group {g!r} is in two families: {units[g]} and {members}")
                units[g] = members
    for g in present - set(units):
        units[g] = (g,)
    return sorted(set(units.values()))


def _fillable(sizes: list[int], test: int, val: int) -> list[set[tuple[int, int]]]:
    """fill[i]: the (test, val) counts that units i.. can meet exactly (the rest to train)."""
    fill: list[set[tuple[int, int]]] = [set() for _ in sizes] + [{(0, 0)}]
    for i in reversed(range(len(sizes))):
        s, after = sizes[i], fill[i + 1]
        fill[i] = (after | {(a + s, b) for a, b in after if a + s <= test}
                   | {(a, b + s) for a, b in after if b + s <= val})
    return fill


def split_groups(groups: list[str], val: int, test: int, seed: int,
                 families: Iterable[Iterable[str]] = ()) -> dict[str, list[str]]:
    """Assign whole groups to meta-train / meta-val / meta-test by a seeded permutation.

    The permutation is over units (group_units): the groups of a family present in the data
    (e.g. alphabets with near-identical characters) always land in the same split. `val` and
    `test` count groups, not units, and are met exactly: taking the units in the seeded order,
    each goes to meta-test, else meta-val, else meta-train, the first whose count it still fits
    in while the units after it can fill both counts exactly (so a family, needing room for
    all its groups, is held out less often than a lone group). Without families (or with none
    present) this is the plain permutation of groups: the first `test` to meta-test, the next
    `val` to meta-val. Counts the units cannot meet, or that leave meta-train empty, raise a
    one-line DataError.
    """
    units = group_units(groups, families)
    total = sum(map(len, units))
    if val + test >= total:
        raise DataError(f"cannot hold out {val} validation + {test} test groups from "
                        f"{total} groups: meta-train would be empty")
    order = [units[i] for i in np.random.default_rng(seed).permutation(len(units))]
    fill = _fillable([len(u) for u in order], test, val)
    if (test, val) not in fill[0]:
        kept = "; ".join("+".join(u) for u in units if len(u) > 1)
        raise DataError(f"cannot hold out exactly {val} validation + {test} test groups from "
                        f"{total} groups with families kept whole ({kept}): change "
                        "data.val_groups or data.test_groups")
    out: dict[str, list[str]] = {"test": [], "val": [], "train": []}
    need = {"test": test, "val": val}
    for i, unit in enumerate(order):
        s = len(unit)
        if s <= need["test"] and (need["test"] - s, need["val"]) in fill[i + 1]:
            split = "test"
        elif s <= need["val"] and (need["test"], need["val"] - s) in fill[i + 1]:
            split = "val"
        else:
            split = "train"
        if split != "train":
            need[split] -= s
        out[split] += unit
    return {k: sorted(v) for k, v in out.items()}


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


def cache_root(cache_dir: str | None) -> Path:
    """Where stored artefacts go: a config's data.cache_dir (expanded), else default_cache_dir()."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


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
