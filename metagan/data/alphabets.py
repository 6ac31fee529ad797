"""Alphabets (groups) of an image set: one alphabet's classes, its unrotated characters, and a
stable per-alphabet seed offset for evaluation tasks."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from .images import ImageSet

# The suffix `with_rotations` gives the rotated copy of a class.
ROTATED = re.compile(r"@rot(90|180|270)$")


def alphabet_offset(name: str) -> int:
    """A seed offset of an alphabet from its name: the same in every process (sha256, not the
    salted built-in hash), below 2**31."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") >> 1


def alphabets(images: ImageSet) -> list[str]:
    """The alphabets (groups) of a set, sorted."""
    return sorted(set(images.groups))


def select_classes(images: ImageSet, keep: list[int]) -> ImageSet:
    """The subset of classes `keep` (in that order), renumbered 0..len(keep)-1."""
    remap = np.full(images.num_classes, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    mask = remap[images.labels] >= 0
    return ImageSet(images.images[mask], remap[images.labels[mask]],
                    tuple(images.classes[c] for c in keep), tuple(images.groups[c] for c in keep))


def alphabet_set(images: ImageSet, name: str, rotated: bool = True) -> ImageSet:
    """One alphabet's classes; with `rotated` False, its unrotated characters only (the classes
    `with_rotations` added, named "<class>@rot90" etc., left out)."""
    if name not in images.groups:
        raise ValueError(f"no alphabet {name!r} (there are: {', '.join(alphabets(images))})")
    keep = [c for c in range(images.num_classes) if images.groups[c] == name
            and (rotated or not ROTATED.search(images.classes[c]))]
    return select_classes(images, keep)
