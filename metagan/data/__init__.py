"""Datasets for few-shot learning: Omniglot zips, image folders, alphabet-disjoint splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, DataConfig
from . import omniglot
from .folder import load_folder
from .images import DataError, ImageSet, default_cache_dir, split_groups, with_rotations
from .remote import fetch, is_remote

__all__ = ["DataError", "ImageSet", "Splits", "load_splits"]


@dataclass(frozen=True)
class Splits:
    """Meta-train / meta-val / meta-test image sets and the groups each was drawn from."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    groups: dict[str, list[str]]

    def get(self, split: str) -> ImageSet:
        """The image set of a split by name."""
        parts = {"train": self.train, "val": self.val, "test": self.test}
        if split not in parts:
            raise ValueError(f"unknown split {split!r} (train, val or test)")
        return parts[split]


def load_splits(cfg: DataConfig) -> Splits:
    """Read the configured source and split it by group (alphabet), never mixing alphabets
    and keeping each family of near-identical Omniglot alphabets (omniglot.FAMILIES) whole."""
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
    root = cfg.root
    if root is not None and is_remote(root):  # fetched once per machine, then read locally
        root = str(fetch(root, cache or default_cache_dir()))
    if cfg.source == "bundled":
        full = omniglot.load_zips(omniglot.bundled_paths(), cfg.image_size, cache)
        test_set = None
        families = omniglot.FAMILIES
    elif root is None:  # config validation rejects this too
        raise ConfigError(f"data.root: required when data.source is {cfg.source!r}")
    elif cfg.source == "omniglot":
        zips = Path(root).expanduser()
        full = omniglot.load_zips([zips / "images_background.zip"], cfg.image_size, cache)
        # The evaluation alphabets are meta-test only; they never reach train or val.
        test_set = omniglot.load_zips([zips / f"{omniglot.EVALUATION}.zip"], cfg.image_size, cache)
        families = omniglot.FAMILIES  # they shape the meta-val split of the background alphabets
    else:
        full = load_folder(root, cfg.image_size, cache, cfg.channels)
        test_set = None
        families = ()  # user folders declare no families
    test_count = 0 if test_set is not None else cfg.test_groups
    groups = split_groups(list(full.groups), cfg.val_groups, test_count, cfg.split_seed,
                          families)
    parts = {name: full.select_groups(set(g)) for name, g in groups.items()}
    if test_set is not None:
        parts["test"] = test_set
        groups["test"] = sorted(set(test_set.groups))
    if cfg.rotations:
        parts = {name: with_rotations(s) for name, s in parts.items()}
    return Splits(parts["train"], parts["val"], parts["test"], groups)
