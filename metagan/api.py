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
    model.within_alphabet_accuracy()   # 20-way one-shot tasks within one alphabet each
    local = api.load_model("runs/protonet")  # a local run or checkpoint directory
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import results
from .config import Config, ConfigError
from .data.episodes import Episode
from .loop import EpisodeLoop
from .results import BestResult, Experiment
from .storage import StorageError

__all__ = ["submit", "status", "list_experiments", "best_result", "load_best_model",
           "download_checkpoint", "load_model", "BestResult", "FewShotModel", "StorageError"]


def submit(space: str | Path, address: str, storage: str, name: str | None = None) -> str:
    """Submit `metagan search SPACE` as a Ray Job; returns the job id."""
    from .jobs import submit as submit_job

    return submit_job(space, address, storage, name).job_id


def status(job_id: str, address: str) -> str:
    """The job's status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    from .jobs import status as job_status

    return job_status(job_id, address)[0]["status"]


def list_experiments(storage: str) -> list[str]:
    """Names of the metagan experiments under a storage URI."""
    return results.list_experiments(results.open_storage(storage))


def best_result(experiment: str, storage: str, metric: str | None = None,
                mode: str | None = None) -> BestResult:
    """The stored checkpoint with the best `metric` (default: the search's own metric and mode).

    The results store's one answer (`metagan.results.Experiment.best`), the same the search
    summary and `metagan report` give.
    """
    return Experiment.open(storage, experiment).best(metric, mode)


def download_checkpoint(experiment: str, storage: str, dest: str | Path | None = None,
                        checkpoint: str | None = None) -> Path:
    """Copy a checkpoint directory (default: the best one) to a local folder; returns it."""
    return Experiment.open(storage, experiment).download(checkpoint, dest)


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
        if not self.module.classifies:
            raise ConfigError(f"method {self.config.method!r} generates; it does not classify "
                              "(FewShotModel.sample draws from it)")
        rng = torch.Generator().manual_seed(seed)
        with torch.enable_grad():
            return self.module.task_accuracy(episode, rng)

    def within_alphabet_accuracy(self, split: str = "test", episodes: int = 100,
                                 ways: int = 20) -> dict[str, Any]:
        """Within-alphabet one-shot accuracy (Lake et al. 2015, approximated): `episodes` tasks
        per alphabet of the split, each of `ways` unrotated characters of that one alphabet with
        one support and one other query drawing each.

        Returns "accuracy", "error", "ci95", "episodes" over all tasks, "alphabets" (the same
        figures per alphabet) and "skipped" (alphabets with fewer than `ways` characters, and
        why). A learner with a classifier head of other ways is refused (ConfigError).
        """
        return self.loop.evaluate_within_alphabet(split, episodes, ways)

    def per_alphabet_accuracy(self, split: str = "val", episodes: int = 100) -> dict[str, Any]:
        """The run's evaluation tasks restricted to each alphabet of the split in turn
        (`episodes` per alphabet): {"alphabets": {name: {"accuracy", "ci95", "episodes"}},
        "skipped": {name: why}, ...}."""
        return self.loop.evaluate_per_group(split, episodes)

    def sample(self, support: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
        """n new drawings of the character shown in `support` [k, 1, H, W] (generating methods)."""
        if not self.module.samples:
            raise ConfigError(f"method {self.config.method!r} has no generator")
        return self.module.adapt_and_sample(support[None].to(self.device), n,
                                            self.config.gan.eval_adapt_steps,
                                            torch.Generator().manual_seed(seed))[0]


def load_model(path: str | Path, device: str = "cpu") -> FewShotModel:
    """The model of a local run directory or checkpoint directory (`metagan train --out`)."""
    from .run import load_loop

    return FewShotModel(load_loop(path, device=device))


def load_best_model(experiment: str, storage: str, device: str = "cpu",
                    metric: str | None = None, mode: str | None = None
                    ) -> tuple[FewShotModel, BestResult]:
    """The best checkpoint's model (weights loaded with weights_only=True) and its record."""
    from .run import load_loop

    found = Experiment.open(storage, experiment)
    best = found.best(metric, mode)
    local = found.download(best.checkpoint)
    return FewShotModel(load_loop(local, device=device)), best
