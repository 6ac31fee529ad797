"""Omniglot zips, preprocessing cache, alphabet-disjoint splits, image folders, download errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from metagan.config import DataConfig
from metagan.data import DataError, load_splits, omniglot
from metagan.data.folder import load_folder
from metagan.data.images import split_groups, with_rotations


def test_bundled_minimal_splits_union() -> None:
    full = omniglot.load_zips(omniglot.bundled_paths())
    # The README of the data: 8 alphabets, 242 characters, 4,840 drawings (Greek, Latin shared).
    assert len(set(full.groups)) == 8
    assert full.num_classes == 242
    assert full.images.shape == (4840, 28, 28) and full.images.dtype == np.uint8
    assert (full.class_counts() == 20).all()
    # Strokes = 1 (255), background = 0: a drawing is mostly background.
    assert full.images.mean() / 255 < 0.2 and full.images.max() == 255


def test_bundled_zips_are_the_official_files() -> None:
    for path in omniglot.bundled_paths():
        omniglot.verify(path, omniglot.ARCHIVES[path.stem].checksum)
    assert (omniglot.BUNDLED_DIR / "LICENSE").read_text().startswith("The MIT License")


def test_preprocessing_is_cached_by_source_hash(data_cache: Path, tmp_path: Path) -> None:
    omniglot.load_zips(omniglot.bundled_paths(), size=20, cache_dir=tmp_path)
    files = list(tmp_path.glob("omniglot-*.npz"))
    assert len(files) == 1
    # A different source (one zip only) is a different key; the same source hits the cache.
    omniglot.load_zips(omniglot.bundled_paths()[:1], size=20, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("omniglot-*.npz"))) == 2
    again = omniglot.load_zips(omniglot.bundled_paths(), size=20, cache_dir=tmp_path)
    assert again.images.shape == (4840, 20, 20)
    assert len(list(tmp_path.glob("omniglot-*.npz"))) == 2


def test_splits_are_disjoint_by_alphabet_and_recorded() -> None:
    splits = load_splits(DataConfig(val_groups=1, test_groups=2))
    sets = {k: set(v) for k, v in splits.groups.items()}
    assert sum(map(len, sets.values())) == 8
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
    assert not (sets["val"] & sets["test"])
    assert any({"Greek", "Latin"} <= s for s in sets.values())  # a family stays whole
    for name in ("train", "val", "test"):
        assert set(splits.get(name).groups) == sets[name]
        assert all(c.split("/")[0] in sets[name] for c in splits.get(name).classes)
    other = load_splits(DataConfig(split_seed=1))
    assert other.groups != splits.groups  # the seed chooses the split
    assert load_splits(DataConfig(split_seed=0)).groups == splits.groups


def test_rotations_are_extra_classes() -> None:
    plain = load_splits(DataConfig(rotations=False))
    rotated = load_splits(DataConfig(rotations=True))
    assert rotated.train.num_classes == 4 * plain.train.num_classes
    r = with_rotations(plain.train)
    first = np.flatnonzero(r.labels == 0)[0]
    rot90 = np.flatnonzero(r.labels == plain.train.num_classes)[0]
    assert np.array_equal(np.rot90(r.images[first]), r.images[rot90])


def test_split_groups_rejects_empty_train() -> None:
    with pytest.raises(DataError, match="meta-train would be empty"):
        split_groups(["a", "b", "c"], 1, 2, seed=0)


def test_image_folder(image_folder: Path, tmp_path: Path) -> None:
    images = load_folder(image_folder, size=28, cache_dir=tmp_path)
    assert images.num_classes == 12 and images.images.shape == (72, 28, 28)
    assert images.classes[0] == "class00" and images.groups == images.classes
    splits = load_splits(DataConfig(source="folder", root=str(image_folder), val_groups=2,
                                    test_groups=3, rotations=False, cache_dir=str(tmp_path)))
    assert (splits.train.num_classes, splits.val.num_classes, splits.test.num_classes) == (7, 2, 3)


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_folder(tmp_path / "empty")


def test_download_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    monkeypatch.setattr(omniglot, "URL_PREFIX", "http://127.0.0.1:9")
    with pytest.raises(DataError, match="cannot download .*offline"):
        omniglot.download(["images_background"], tmp_path)
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_download_verifies_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Serve the bundled zip over a local file URL under the name of the full archive: its
    # checksum differs from the official one, so the download must be rejected.
    served = tmp_path / "served"
    served.mkdir()
    (served / "images_background.zip").write_bytes(omniglot.bundled_paths()[0].read_bytes())
    monkeypatch.setattr(omniglot, "URL_PREFIX", served.as_uri())
    with pytest.raises(DataError, match="checksum .* does not match"):
        omniglot.download(["images_background"], tmp_path / "dest")
    # A file whose checksum matches is accepted.
    (served / "images_background_small1.zip").write_bytes(omniglot.bundled_paths()[0].read_bytes())
    (path,) = omniglot.download(["images_background_small1"], tmp_path / "dest")
    assert zipfile.is_zipfile(path)


def test_missing_archive_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="metagan data download"):
        omniglot.load_zips([tmp_path / "images_background.zip"])
