"""The public Python API: submit searches, read experiments from storage, load the best model.

Everything that reads results works from a fresh process with only the storage URI and the
usual AWS credentials (or a local path): no Ray cluster is needed.

    from metagan import api
    job = api.submit("search_spaces/maml.yaml", "http://head:8265", "s3://bucket/searches")
    api.status(job, "http://head:8265")
    api.list_experiments("s3://bucket/searches")
    best = api.best_result("search-20261126-101500", "s3://bucket/searches")
    model = api.load_best_model("search-20261126-101500", "s3://bucket/searches")
    model.accuracy(episode)            # adapt to the support set, score the queries
"""

from __future__ import annotations

import json
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from .config import Config, ConfigError
from .data.episodes import Episode
from .loop import EpisodeLoop
from .meta import Generating
from .tune.storage import Storage, StorageError, check_readable, parse_storage

__all__ = ["submit", "status", "list_experiments", "best_result", "load_best_model",
           "download_checkpoint", "BestResult", "FewShotModel"]
SPEC_FILE = "metagan_space.yaml"


def submit(space: str | Path, address: str, storage: str, name: str | None = None) -> str:
    """Submit `metagan search SPACE` as a Ray Job; returns the job id."""
    from .jobs import submit as submit_job

    return submit_job(space, address, storage, name).job_id


def status(job_id: str, address: str) -> str:
    """The job's status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    from .jobs import status as job_status

    return job_status(job_id, address)[0]["status"]


def _fs(storage: Storage) -> tuple[pafs.FileSystem, str]:
    if storage.is_s3:
        return storage.filesystem, storage.storage_path
    return pafs.LocalFileSystem(), storage.storage_path


def _open(storage: str | Storage) -> Storage:
    store = parse_storage(storage) if isinstance(storage, str) else storage
    check_readable(store)
    return store


def _read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def _dirs(fs: pafs.FileSystem, path: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def list_experiments(storage: str) -> list[str]:
    """Names of the metagan experiments under a storage URI."""
    store = _open(storage)
    fs, root = _fs(store)
    return [d for d in _dirs(fs, root)
            if fs.get_file_info(posixpath.join(root, d, SPEC_FILE)).type == pafs.FileType.File]


@dataclass
class BestResult:
    """The best checkpoint of an experiment."""

    experiment: str
    trial: str
    metric: str
    mode: str
    value: float
    params: dict[str, Any]
    config: dict[str, Any]
    checkpoint: str           # URI of the checkpoint directory
    iteration: int


def _experiment(store: Storage, experiment: str) -> tuple[pafs.FileSystem, str, dict[str, Any]]:
    import yaml

    fs, root = _fs(store)
    path = posixpath.join(root, experiment)
    spec_path = posixpath.join(path, SPEC_FILE)
    if fs.get_file_info(spec_path).type != pafs.FileType.File:
        known = ", ".join(list_experiments(store.uri)) or "none"
        raise ConfigError(f"no experiment {experiment!r} in {store.uri} (experiments there: {known})")
    return fs, path, yaml.safe_load(_read_text(fs, spec_path))


def best_result(experiment: str, storage: str, metric: str | None = None,
                mode: str | None = None) -> BestResult:
    """The stored checkpoint with the best `metric` (default: the search's own metric and mode)."""
    store = _open(storage)
    fs, path, spec = _experiment(store, experiment)
    metric = metric or spec["search"]["metric"]
    mode = mode or spec["search"]["mode"]
    if mode not in ("min", "max"):
        raise ConfigError(f"mode: expected min or max, got {mode!r}")
    best: BestResult | None = None
    for trial in _dirs(fs, path):
        for ckpt in _dirs(fs, posixpath.join(path, trial)):
            if not ckpt.startswith("checkpoint_"):
                continue
            d = posixpath.join(path, trial, ckpt)
            try:
                metrics = json.loads(_read_text(fs, posixpath.join(d, "metrics.json")))
                params = json.loads(_read_text(fs, posixpath.join(d, "params.json")))
            except FileNotFoundError:
                continue  # a checkpoint being written or deleted
            value = metrics.get(metric)
            if not isinstance(value, (int, float)):
                continue
            better = best is None or (value > best.value if mode == "max" else value < best.value)
            if better:
                best = BestResult(experiment, trial, metric, mode, float(value), params, {},
                                  store.uri_of(d), int(metrics.get("iteration", 0)))
    if best is None:
        raise ConfigError(f"experiment {experiment!r} in {store.uri}: no checkpoint reports {metric!r}")
    import yaml

    best.config = yaml.safe_load(_read_text(fs, _fs_path(store, best.checkpoint) + "/config.yaml"))
    return best


def _fs_path(store: Storage, uri: str) -> str:
    return uri[len("s3://"):] if store.is_s3 else uri


def download_checkpoint(experiment: str, storage: str, dest: str | Path | None = None,
                        checkpoint: str | None = None) -> Path:
    """Copy a checkpoint directory (default: the best one) to a local folder; returns it."""
    store = _open(storage)
    uri = checkpoint or best_result(experiment, storage).checkpoint
    fs, _ = _fs(store)
    dest = Path(dest or tempfile.mkdtemp(prefix="metagan-ckpt-"))
    dest.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(_fs_path(store, uri), str(dest), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    return dest


class FewShotModel:
    """A trained method restored from a checkpoint, ready to adapt to new tasks or sample."""

    def __init__(self, loop: EpisodeLoop) -> None:
        self.loop = loop
        self.config: Config = loop.cfg
        self.module = loop.method.eval()

    @property
    def device(self) -> torch.device:
        return self.loop.device

    def accuracy(self, episode: Episode, seed: int = 0) -> torch.Tensor:
        """Adapt to each task's support set and return its query accuracy (one value per task)."""
        rng = torch.Generator().manual_seed(seed)
        with torch.enable_grad():
            return self.module.task_accuracy(episode, rng)

    def sample(self, support: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
        """n new drawings of the character shown in `support` [k, 1, H, W] (generating methods)."""
        if not isinstance(self.module, Generating):  # = hasattr(generate_for), typed
            raise ConfigError(f"method {self.config.method!r} has no generator")
        return self.module.generate_for(support.to(self.device), n, torch.Generator().manual_seed(seed))


def load_best_model(experiment: str, storage: str, device: str = "cpu",
                    metric: str | None = None, mode: str | None = None
                    ) -> tuple[FewShotModel, BestResult]:
    """The best checkpoint's model (weights loaded with weights_only=True) and its record."""
    from .run import load_loop

    best = best_result(experiment, storage, metric, mode)
    local = download_checkpoint(experiment, storage, checkpoint=best.checkpoint)
    return FewShotModel(load_loop(local, device=device)), best


__all__ += ["StorageError"]
