"""Shared fixtures: a per-session data cache, tiny configs, a synthetic image folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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


@pytest.fixture(scope="session", autouse=True)
def no_outside_ray():
    """No test (nor a CLI it starts) joins a Ray cluster that RAY_ADDRESS names in the caller's shell."""
    saved = os.environ.pop("RAY_ADDRESS", None)
    yield
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved


TINY: dict[str, Any] = {
    "task": {"ways": 5, "shots": 1, "queries": 2, "meta_batch": 4},
    "model": {"hidden": 8, "depth": 4},
    "train": {"iterations": 6},
    "schedule": {"log_every": 1, "eval_episodes": 8, "test_episodes": 8, "checkpoint_every": 3},
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


@pytest.fixture(scope="session")
def omniglot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/<character>/*.png: every character of the bundled meta-train and meta-val
    alphabets (192, 20 drawings each) as a user's files, dark strokes on white like Omniglot's
    own PNGs; the meta-test alphabets are left out."""
    from metagan.config import DataConfig
    from metagan.data import load_splits

    root = tmp_path_factory.mktemp("omniglot-folder") / "characters"
    splits = load_splits(DataConfig(rotations=False))
    for part in (splits.train, splits.val):
        for c, name in enumerate(part.classes):
            d = root / name.replace("/", "_")
            d.mkdir(parents=True)
            for i, img in enumerate(part.images[part.labels == c]):
                Image.fromarray(255 - img).save(d / f"{i:02d}.png")
    return root


# A secret no log, result or checkpoint may ever contain (checked by the S3 tests).
S3_SECRET = "metagan-test-secret-6f1c2a"


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 server on 127.0.0.1 behind a blockable proxy; AWS variables point at it.

    Set up before Ray starts, so trial actors inherit the same endpoint and credentials.
    """
    import boto3

    from .services import MotoS3, TcpProxy

    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    proxy = TcpProxy(server.port)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": proxy.url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
    client.create_bucket(Bucket="metagan")
    try:
        yield {"server": server, "proxy": proxy, "client": client, "bucket": "metagan"}
    finally:
        proxy.stop()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ray_node_pids() -> set[int]:
    """The PIDs of the processes this pytest's own Ray node started (raylet, GCS, ...)."""
    import ray

    node = ray._private.worker._global_node
    return {p.process.pid for procs in node.all_processes.values() for p in procs}


def started_by_this_ray(proc: Any) -> bool:
    """Whether a psutil process descends from this pytest's Ray node (not another Ray's)."""
    import psutil

    ours = ray_node_pids()
    try:
        return any(parent.pid in ours for parent in proc.parents())
    except psutil.Error:  # gone meanwhile
        return False


@pytest.fixture(scope="session")
def ray_cluster(s3, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One local Ray for the session (2 CPUs); its GCS address, for CLI drivers to join.

    Started new whatever Ray state the machine holds: `address="local"` never joins the cluster
    Ray remembers in /tmp/ray/ray_current_cluster (stale after `ray start` + `ray stop`) nor the
    one RAY_ADDRESS names, and its own temp dir keeps it apart from any Ray running beside it.
    Stopped by the PIDs it started, and only those.
    """
    import psutil
    import ray

    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                   _temp_dir=str(temp))
    started = sorted(ray_node_pids())
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()
        for pid in started:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(temp, ignore_errors=True)
