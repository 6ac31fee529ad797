"""The public Python API: submit searches, read experiments from storage, load the best model.

Everything that reads results works from a fresh process with only the storage URI and the
usual AWS credentials (or a local path): no Ray cluster is needed.

    from metagan import api
    job = api.submit("search_spaces/maml.yaml", "http://head:8265", "s3://bucket/searches")
    api.status(job, "http://head:8265")
    api.list_experiments("s3://bucket/searches")
    best = api.best_result("search-20261126-101500", "s3://bucket/searches")
    model = api.load_best_model("search-20261126-101500", "s3://bucket/searches")
    model.predict(["a1.png", "b1.png"], ["a", "b"], ["q1.png", "q2.png"]).labels  # your images
    model.sample("my_character/", 10)  # 10 new drawings (generating methods)
    model.accuracy(episode)            # adapt to the support set, score the queries
    model.within_alphabet_accuracy()   # 20-way one-shot tasks within one alphabet each
    local = api.load_model("runs/protonet")  # a local run or checkpoint directory
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import results
from .config import HEAD_ALGORITHMS, Config, ConfigError
from .data.episodes import Episode
from .inputs import Images, as_batch
from .loop import EpisodeLoop
from .meta import Method
from .meta.base import adaptation_steps
from .results import BestResult, Experiment
from .storage import StorageError

__all__ = ["submit", "status", "list_experiments", "best_result", "load_best_model",
           "download_checkpoint", "load_model", "BestResult", "FewShotModel", "Prediction",
           "StorageError"]


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
    """The stored checkpoint with the best `metric` (default: the search's own metric and mode,
    where a search that re-scored its top trials answers with the re-scored winner).

    The results store's one answer (`metagan.results.Experiment.best`), the same the search
    summary and `metagan report` give.
    """
    return Experiment.open(storage, experiment).best(metric, mode)


def download_checkpoint(experiment: str, storage: str, dest: str | Path | None = None,
                        checkpoint: str | None = None) -> Path:
    """Copy a checkpoint directory (default: the best one) to a local folder; returns it."""
    return Experiment.open(storage, experiment).download(checkpoint, dest)


@dataclass(frozen=True)
class Prediction:
    """What `FewShotModel.predict` answers: a label per query and its class probabilities."""

    labels: list[Hashable]       # [m] the predicted support label of each query
    probabilities: torch.Tensor  # [m, ways], columns in the order of `classes`
    classes: list[Hashable]      # the support labels, each once


class FewShotModel:
    """A trained method restored from a checkpoint, ready to adapt to new tasks or sample.

    Loading reads the checkpoint alone (config and weights), never the training data; only
    the evaluations over the run's own splits (within_alphabet_accuracy,
    per_alphabet_accuracy) read the data, when first asked.
    """

    def __init__(self, config: Config, module: Method, path: Path,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.module = module.eval()
        self.path = path
        self._device = torch.device(device)
        self._loop: EpisodeLoop | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def loop(self) -> EpisodeLoop:
        """The run's episode loop over its data splits (read on first use)."""
        if self._loop is None:
            from .run import load_loop

            self._loop = load_loop(self.path, device=str(self._device))
            self.module = self._loop.method.eval()  # one copy of the weights, not two
        return self._loop

    def _require(self, capability: str, what: str) -> None:
        if not getattr(type(self.module), capability):
            does = "generates" if self.module.generates else "does not sample"
            raise ConfigError(f"method {self.config.method!r} {does}: {what} needs a method "
                              f"that {'classifies' if capability == 'classifies' else 'samples'}")

    def accuracy(self, episode: Episode, seed: int = 0) -> torch.Tensor:
        """Adapt to each task's support set and return its query accuracy (one value per task)."""
        self._require("classifies", "accuracy")
        rng = torch.Generator().manual_seed(seed)
        with torch.enable_grad():
            return self.module.task_accuracy(episode, rng)

    def predict(self, support_images: Images, support_labels: Sequence[Hashable],
                query_images: Images, seed: int = 0) -> Prediction:
        """Adapt to the labelled support images and classify the query images.

        Images are tensors [n, C, S, S] in [0, 1], PIL images or files (folders: their image
        files), files and PIL images preprocessed as the training data was. Labels are any
        hashable values, one per support image; every label is a class of the task.
        """
        self._require("classifies", "predict")
        support = as_batch(support_images, self.config.data, "support_images")
        query = as_batch(query_images, self.config.data, "query_images")
        # A tensor's or array's elements hash by identity: compare their values.
        labels = (support_labels.tolist() if hasattr(support_labels, "tolist")
                  else list(support_labels))
        if len(labels) != support.shape[0]:
            raise ConfigError(f"support_labels: {len(labels)} labels for {support.shape[0]} "
                              "support images")
        classes = sorted(set(labels), key=str)
        ways = len(classes)
        if ways < 2:
            raise ConfigError(f"support_labels: a task needs at least 2 classes, got {ways}")
        head = self.config.task.ways
        if self.config.meta.algorithm in HEAD_ALGORITHMS and ways != head:
            raise ConfigError(f"support_labels: {ways} classes, but this "
                              f"{self.config.meta.algorithm} model has a {head}-way classifier "
                              f"head: give exactly {head} classes")
        index = {c: i for i, c in enumerate(classes)}
        support_y = torch.tensor([index[c] for c in labels])
        episode = Episode(support.unsqueeze(0).to(self.device),
                          support_y.unsqueeze(0).to(self.device),
                          query.unsqueeze(0).to(self.device),
                          torch.zeros(1, query.shape[0], dtype=torch.long, device=self.device),
                          ways, max(1, support.shape[0] // ways), query.shape[0],
                          torch.arange(ways, device=self.device).unsqueeze(0))
        with torch.enable_grad():  # MAML-style learners differentiate while adapting
            logits = self.module.task_logits(episode, torch.Generator().manual_seed(seed))[0]
        probabilities = logits.detach().float().softmax(-1).cpu()
        return Prediction([classes[i] for i in probabilities.argmax(-1).tolist()],
                          probabilities, classes)

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

    def sample(self, support: Images, n: int, seed: int = 0,
               adapt_steps: int | None = None) -> torch.Tensor:
        """n new drawings [n, C, S, S] in [0, 1] of the character shown in `support` (tensors,
        PIL images or files, as for predict), for generating methods. `adapt_steps`: a few-shot
        generator's adaptation steps (default gan.eval_adapt_steps; a length selected on
        meta-val with `metagan evaluate --adapt-steps` may do better)."""
        self._require("samples", "sample")
        if n <= 0:
            raise ConfigError(f"n: must be positive, got {n}")
        steps = adaptation_steps(self.config, self.module, adapt_steps)
        drawings = as_batch(support, self.config.data, "support")
        return self.module.adapt_and_sample(drawings[None].to(self.device), n, steps,
                                            torch.Generator().manual_seed(seed))[0]


def load_model(path: str | Path, device: str = "cpu") -> FewShotModel:
    """The model of a local run directory or checkpoint directory (`metagan train --out`),
    from the checkpoint alone: its training data need not be on this machine."""
    from .run import load_module

    cfg, module, where = load_module(path, device)
    return FewShotModel(cfg, module, where, device)


def load_best_model(experiment: str, storage: str, device: str = "cpu",
                    metric: str | None = None, mode: str | None = None
                    ) -> tuple[FewShotModel, BestResult]:
    """The best checkpoint's model (weights loaded with weights_only=True) and its record."""
    found = Experiment.open(storage, experiment)
    best = found.best(metric, mode)
    return load_model(found.download(best.checkpoint), device), best
