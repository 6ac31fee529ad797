"""Checkpoints are directories: state.pt (plain tensors and dicts), config.yaml, metrics.json."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import Config, ConfigError, build_config, dump_yaml, read_yaml

STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"


def save_checkpoint(directory: str | Path, cfg: Config, state: dict[str, Any],
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically (a crash mid-write leaves the old one intact)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    torch.save(state, tmp / STATE_FILE)
    dump_yaml(cfg, tmp / CONFIG_FILE)
    (tmp / METRICS_FILE).write_text(json.dumps(metrics or {}, indent=2, sort_keys=True))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[Config, dict[str, Any], dict[str, Any]]:
    """Read (config, state, metrics) from a checkpoint directory, tensors only (weights_only)."""
    directory = Path(directory)
    if not (directory / STATE_FILE).is_file():
        raise ConfigError(f"{directory}: not a metagan checkpoint (no {STATE_FILE})")
    cfg = build_config(read_yaml(directory / CONFIG_FILE))
    state = torch.load(directory / STATE_FILE, map_location=map_location, weights_only=True)
    metrics_path = directory / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return cfg, state, metrics
