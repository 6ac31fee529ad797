"""The official Omniglot zips: bundled minimal splits, checksummed download, preprocessing."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import preprocess
from .images import DataError, ImageSet, cached_image_set, default_cache_dir, file_sha256

BUNDLED_DIR = Path(__file__).parent / "bundled"
URL_PREFIX = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
PREPROCESS_VERSION = 1  # bump when preprocessing changes, to invalidate caches


@dataclass(frozen=True)
class Archive:
    """One official zip and its checksum ("sha256:..." or "md5:...")."""

    name: str
    checksum: str

    @property
    def url(self) -> str:
        """Where the Omniglot authors publish it."""
        return f"{URL_PREFIX}/{self.name}.zip"


ARCHIVES = {
    a.name: a
    for a in (
        Archive("images_background", "md5:68d2efa1b9178cc56df9314c21c6e718"),
        Archive("images_evaluation", "md5:6b91aef0f799c5bb55b94e3f2daec811"),
        Archive("images_background_small1",
                "sha256:f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"),
        Archive("images_background_small2",
                "sha256:3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"),
    )
}
BUNDLED = ("images_background_small1", "images_background_small2")
EVALUATION = "images_evaluation"

# Alphabets whose characters are near-copies of one another's (Omniglot folder names: Greek,
# Latin and Japanese_(katakana) as in the bundled zips, the others as in images_background /
# images_evaluation). A split putting two of a family on different sides lets meta-test
# characters be learnt in meta-train (issue 10), so split_groups keeps each family whole.
FAMILIES: tuple[frozenset[str], ...] = (
    # Latin and Cyrillic both descend from Greek: A/α, B/β/В, E/ε/Е, K/κ/К, O/ο/О, P/ρ/Р,
    # T/τ/Т, X/χ/Х, ι/i, ν/v, ... are drawn alike. Old Church Slavonic is an early Cyrillic;
    # it is in the standard evaluation set, which the full-Omniglot source keeps as meta-test
    # for comparability, so there the family only groups its background members.
    frozenset({"Latin", "Greek", "Cyrillic", "Old_Church_Slavonic_(Cyrillic)"}),
    # Two syllabaries of the same sounds, several signs nearly the same shape (へ/ヘ, り/リ,
    # か/カ, き/キ, も/モ, ...).
    frozenset({"Japanese_(hiragana)", "Japanese_(katakana)"}),
    # One script, Canadian Aboriginal Syllabics, written for three languages: the same
    # triangles, hooks and arcs in four rotations.
    frozenset({"Inuktitut_(Canadian_Aboriginal_Syllabics)",
               "Ojibwe_(Canadian_Aboriginal_Syllabics)",
               "Blackfoot_(Canadian_Aboriginal_Syllabics)"}),
)


def verify(path: Path, checksum: str) -> None:
    """Raise DataError unless `path` matches `checksum`."""
    algo, expected = checksum.split(":", 1)
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise DataError(f"{path}: {algo} checksum {h.hexdigest()} does not match the official "
                        f"{expected}; delete the file and download it again")


def bundled_paths() -> list[Path]:
    """The minimal background splits shipped inside the package."""
    return [BUNDLED_DIR / f"{name}.zip" for name in BUNDLED]


def download(names: list[str], dest: str | Path, timeout: float = 30.0) -> list[Path]:
    """Download official zips into `dest` (skipping verified ones) and verify their checksums."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        if name not in ARCHIVES:
            raise DataError(f"unknown Omniglot archive {name!r} (known: {', '.join(ARCHIVES)})")
        archive = ARCHIVES[name]
        path = dest / f"{name}.zip"
        if path.is_file():
            try:
                verify(path, archive.checksum)
                out.append(path)
                continue
            except DataError:
                path.unlink()
        tmp = path.with_suffix(".zip.part")
        try:
            with urllib.request.urlopen(archive.url, timeout=timeout) as r, open(tmp, "wb") as f:
                while block := r.read(1 << 20):
                    f.write(block)
        except (urllib.error.URLError, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot download {archive.url}: {e}. Are you offline? The bundled "
                            "minimal splits (data.source: bundled) need no network.") from None
        verify(tmp, archive.checksum)
        tmp.replace(path)
        out.append(path)
    return out


def _decode(png: bytes, size: int) -> np.ndarray:
    # Omniglot draws black strokes (0) on white (1): inverted so strokes = 255, background = 0.
    return preprocess.to_array(Image.open(io.BytesIO(png)), size, invert=True)


def _read_zips(paths: list[Path], size: int) -> ImageSet:
    # Keyed by (alphabet, character, file) so the alphabets the two minimal splits share
    # (Greek, Latin) are read once.
    entries: dict[tuple[str, str], dict[str, bytes]] = {}
    for path in paths:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{path}: not a readable zip: {e}") from None
        with zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or len(parts) != 4 or not parts[3].endswith(".png"):
                    continue
                _, alphabet, character, fname = parts
                entries.setdefault((alphabet, character), {})[fname] = zf.read(info)
    if not entries:
        raise DataError(f"no <set>/<Alphabet>/<character>/*.png images in {[str(p) for p in paths]}")
    keys = sorted(entries)
    images, labels = [], []
    for c, key in enumerate(keys):
        for fname in sorted(entries[key]):
            images.append(_decode(entries[key][fname], size))
            labels.append(c)
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64),
                    tuple(f"{a}/{ch}" for a, ch in keys), tuple(a for a, _ in keys))


def load_zips(paths: list[Path], size: int = 28, cache_dir: Path | None = None) -> ImageSet:
    """Read official Omniglot zips into one ImageSet, cached by the zips' hashes and the size."""
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: Omniglot archive not found (run `metagan data download`)")
    h = hashlib.sha256(f"v{PREPROCESS_VERSION}-{size}".encode())
    for p in paths:
        h.update(file_sha256(p).encode())
    key = f"omniglot-{h.hexdigest()[:20]}"
    return cached_image_set(cache_dir or default_cache_dir(), key, lambda: _read_zips(paths, size))
