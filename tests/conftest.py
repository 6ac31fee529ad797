"""Shared fixtures: a per-session data cache, tiny configs, a synthetic image folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from metagan.config import Config, build_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test (and subprocess) preprocesses into one fresh cache directory."""
    cache = tmp_path_factory.mktemp("metagan-cache")
    os.environ["METAGAN_CACHE"] = str(cache)
    return cache


TINY: dict[str, Any] = {
    "task": {"ways": 5, "shots": 1, "queries": 2, "meta_batch": 4},
    "model": {"hidden": 8, "depth": 4},
    "train": {"iterations": 6, "log_every": 1, "eval_episodes": 8, "test_episodes": 8,
              "checkpoint_every": 3},
}


def tiny_data(algorithm: str = "protonet", **overrides: Any) -> dict[str, Any]:
    """Nested config data for a seconds-long run of `algorithm`."""
    import copy

    data = copy.deepcopy(TINY)
    data["meta"] = {"algorithm": algorithm, "inner_lr": 0.4, "inner_steps": 1}
    if algorithm == "reptile":
        data["optim"] = {"name": "adam", "lr": 0.001}
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def tiny_config(algorithm: str = "protonet", **overrides: Any) -> Config:
    """A validated tiny config."""
    return build_config(tiny_data(algorithm, **overrides))


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write nested data as YAML."""
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `metagan ARGS` in a fresh interpreter, capturing output."""
    return subprocess.run([sys.executable, "-m", "metagan.cli", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/<class>/*.png with 12 classes of 6 distinct random images each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for c in range(12):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(d / f"{i}.png")
    return root
