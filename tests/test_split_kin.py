"""Families of near-identical alphabets stay on one side of the split (issue 10)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metagan.config import DataConfig
from metagan.data import DataError, load_splits, omniglot
from metagan.data.images import group_units, split_groups

BUNDLED = ["Balinese", "Early_Aramaic", "Greek", "Japanese_(katakana)", "Korean", "Latin",
           "Sanskrit", "Tagalog"]
SEEDS = range(51)


def side(split: dict[str, list[str]], group: str) -> str:
    """The split a group landed in."""
    return next(name for name, groups in split.items() if group in groups)


def test_bundled_alphabets_are_the_declared_names() -> None:
    full = omniglot.load_zips(omniglot.bundled_paths())
    assert sorted(set(full.groups)) == BUNDLED
    # The family members present in the bundled data are spelt as its folders are.
    members = set().union(*omniglot.FAMILIES)
    assert members & set(BUNDLED) == {"Greek", "Latin", "Japanese_(katakana)"}


@pytest.mark.parametrize("seed", SEEDS)
def test_greek_and_latin_always_share_a_split(seed: int) -> None:
    split = split_groups(BUNDLED, 1, 2, seed, omniglot.FAMILIES)
    assert side(split, "Greek") == side(split, "Latin")
    # Disjoint and covering, with the asked number of alphabets on each held-out side.
    assert sorted(sum(split.values(), [])) == BUNDLED
    assert (len(split["test"]), len(split["val"]), len(split["train"])) == (2, 1, 5)
    assert split == split_groups(list(reversed(BUNDLED)), 1, 2, seed, omniglot.FAMILIES)


def test_split_is_deterministic_and_seed_dependent() -> None:
    splits = [split_groups(BUNDLED * 3, 1, 2, s, omniglot.FAMILIES) for s in SEEDS]
    assert splits == [split_groups(BUNDLED, 1, 2, s, omniglot.FAMILIES) for s in SEEDS]
    assert len({str(s) for s in splits}) > 5  # the seed still chooses among many splits


def test_family_lands_together_on_every_side() -> None:
    sides = {side(split_groups(BUNDLED, 1, 2, s, omniglot.FAMILIES), "Greek") for s in SEEDS}
    assert sides == {"train", "test"}  # meta-val holds one alphabet: never the pair
    sides = {side(split_groups(BUNDLED, 2, 2, s, omniglot.FAMILIES), "Latin") for s in SEEDS}
    assert sides == {"train", "val", "test"}


def test_full_background_families() -> None:
    background = sorted({"Alphabet_of_the_Magi", "Cyrillic", "Greek", "Latin", "Korean",
                         "Japanese_(hiragana)", "Japanese_(katakana)", "Hebrew", "Braille",
                         "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Tifinagh",
                         "Ojibwe_(Canadian_Aboriginal_Syllabics)",
                         "Blackfoot_(Canadian_Aboriginal_Syllabics)"})
    units = group_units(background, omniglot.FAMILIES)
    assert ("Cyrillic", "Greek", "Latin") in units
    assert ("Japanese_(hiragana)", "Japanese_(katakana)") in units
    assert len(units) == len(background) - 2 - 1 - 2
    for seed in range(20):
        split = split_groups(background, 3, 0, seed, omniglot.FAMILIES)
        assert split["test"] == [] and len(split["val"]) == 3
        for family in omniglot.FAMILIES:
            assert len({side(split, g) for g in family if g in background}) <= 1


def omniglot_zip(path: Path, alphabets: list[str]) -> None:
    """An official-layout zip <set>/<Alphabet>/<character>/*.png, one tiny character each."""
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(buf, format="PNG")
    with zipfile.ZipFile(path, "w") as zf:
        for a in alphabets:
            for i in range(2):
                zf.writestr(f"{path.stem}/{a}/character01/{i}.png", buf.getvalue())


def test_full_omniglot_source_keeps_families_in_its_val_split(tmp_path: Path) -> None:
    background = ["Cyrillic", "Greek", "Hebrew", "Japanese_(hiragana)", "Japanese_(katakana)",
                  "Korean", "Latin", "Tifinagh"]
    omniglot_zip(tmp_path / "images_background.zip", background)
    omniglot_zip(tmp_path / f"{omniglot.EVALUATION}.zip", ["Angelic", "Old_Church_Slavonic_(Cyrillic)"])
    sides = set()
    for seed in range(24):
        groups = load_splits(DataConfig(source="omniglot", root=str(tmp_path), val_groups=3,
                                         rotations=False, split_seed=seed, image_size=8,
                                         cache_dir=str(tmp_path / "cache"))).groups
        assert groups["test"] == ["Angelic", "Old_Church_Slavonic_(Cyrillic)"]  # the standard split
        assert len(groups["val"]) == 3 and sorted(groups["val"] + groups["train"]) == background
        assert side(groups, "Greek") == side(groups, "Latin") == side(groups, "Cyrillic")
        assert side(groups, "Japanese_(hiragana)") == side(groups, "Japanese_(katakana)")
        sides.add(side(groups, "Latin"))
    assert sides == {"train", "val"}


def test_impossible_counts_are_one_clear_error() -> None:
    with pytest.raises(DataError, match="meta-train would be empty") as e:
        split_groups(BUNDLED, 3, 5, 0, omniglot.FAMILIES)
    assert "\n" not in str(e.value)
    # Three groups, two of them a family: one test and one val alphabet cannot both be met.
    with pytest.raises(DataError, match=r"exactly 1 validation \+ 1 test .*Greek\+Latin") as e:
        split_groups(["Greek", "Latin", "Korean"], 1, 1, 0, omniglot.FAMILIES)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="two families"):
        split_groups(["a", "b", "c", "d"], 1, 1, 0, [{"a", "b"}, {"b", "c"}])


def test_without_families_the_split_is_the_plain_permutation() -> None:
    names = [f"g{i:02d}" for i in range(12)]
    for seed in range(20):
        split = split_groups(names, 2, 3, seed)
        assert split == split_groups(names, 2, 3, seed, omniglot.FAMILIES)  # none present
        assert split == split_groups(names, 2, 3, seed, [{"absent", "also absent"}])
        order = [names[i] for i in np.random.default_rng(seed).permutation(12)]
        assert split == {"test": sorted(order[:3]), "val": sorted(order[3:5]),
                         "train": sorted(order[5:])}


def test_folder_source_split_is_unchanged(image_folder: Path, tmp_path: Path) -> None:
    cfg = DataConfig(source="folder", root=str(image_folder), val_groups=2, test_groups=3,
                     rotations=False, cache_dir=str(tmp_path))
    groups = load_splits(cfg).groups
    classes = sorted(groups["train"] + groups["val"] + groups["test"])
    assert groups == split_groups(classes, 2, 3, cfg.split_seed)


def test_default_bundled_split_keeps_greek_with_latin() -> None:
    for seed in range(5):
        groups = load_splits(DataConfig(split_seed=seed)).groups
        assert side(groups, "Greek") == side(groups, "Latin")
