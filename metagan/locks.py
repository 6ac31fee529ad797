"""An exclusive file lock, so concurrent runs on one machine build a cached artefact once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside `path` (POSIX), so concurrent runs of one key build it once."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks: concurrent runs may both build (the write is atomic)
        yield
        return
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
