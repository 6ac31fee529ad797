"""Checkpoints are directories: state.pt (plain tensors and dicts), config.yaml, metrics.json.

A save never leaves a moment without a complete checkpoint: the new one is written beside the
old, the old is renamed to `.NAME.prev`, the new renamed into place, and only then the old
removed. A process killed at any point leaves NAME or `.NAME.prev` complete, and loading
takes NAME when it is complete, else `.NAME.prev`.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import Config, ConfigError, build_config, dump_yaml, read_yaml

STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
COMPLETE = (STATE_FILE, CONFIG_FILE, METRICS_FILE)


def _previous(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.prev"


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in COMPLETE)


def latest(directory: str | Path) -> Path | None:
    """The complete checkpoint saved as `directory` (or its kept predecessor); None if neither."""
    directory = Path(directory)
    for candidate in (directory, _previous(directory)):
        if _complete(candidate):
            return candidate
    return None


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a file's content so that a reader sees the old or the new text, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_files(directory: Path, cfg: Config, state: dict[str, Any],
                metrics: dict[str, Any] | None = None) -> None:
    """The files of a checkpoint, into an existing directory: the one writer of both drivers
    (a trial's directory is Tune's local staging one; it uploads it after this returns)."""
    torch.save(state, directory / STATE_FILE)
    dump_yaml(cfg, directory / CONFIG_FILE)
    (directory / METRICS_FILE).write_text(json.dumps(metrics or {}, indent=2, sort_keys=True))


def save_checkpoint(directory: str | Path, cfg: Config, state: dict[str, Any],
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory; a crash at any point leaves a complete one (see above)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.new."))
    write_files(tmp, cfg, state, metrics)
    previous = _previous(directory)
    for stale in directory.parent.glob(f".{directory.name}.new.*"):
        if stale != tmp:  # the half-written new checkpoint of an interrupted save
            shutil.rmtree(stale, ignore_errors=True)
    if directory.exists() and not _complete(directory):
        shutil.rmtree(directory)  # not a checkpoint; `previous`, if any, is the complete one
    if directory.exists():
        if previous.exists():  # left by an earlier interrupted save; `directory` is newer
            shutil.rmtree(previous)
        os.replace(directory, previous)
    os.replace(tmp, directory)
    if previous.exists():
        shutil.rmtree(previous)
    return directory


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A state.pt read with weights_only=True; a damaged or foreign file is a ConfigError."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile,
            OSError, AttributeError, TypeError) as e:
        # torch's own message may advise weights_only=False: unsafe, so not repeated.
        raise ConfigError(f"{path}: damaged or not a metagan checkpoint state "
                          f"({type(e).__name__})") from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise ConfigError(f"{path}: not a metagan checkpoint state (no iteration counter)")
    return state


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu",
                    check_paths: bool = True) -> tuple[Config, dict[str, Any], dict[str, Any]]:
    """Read (config, state, metrics) from a checkpoint directory, tensors only (weights_only).
    `check_paths=False`: the config's data paths need not exist here (a model only used)."""
    found = latest(directory)
    if found is None:
        raise ConfigError(f"{directory}: not a metagan checkpoint (no complete {STATE_FILE}, "
                          f"{CONFIG_FILE} and {METRICS_FILE})")
    try:
        cfg = build_config(read_yaml(found / CONFIG_FILE), check_paths=check_paths)
    except ConfigError as e:
        where = str(found / CONFIG_FILE)
        raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    state = load_state(found / STATE_FILE, map_location)
    try:
        metrics = json.loads((found / METRICS_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{found / METRICS_FILE}: damaged ({e.__class__.__name__})") from None
    return cfg, state, metrics
