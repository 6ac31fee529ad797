"""The trial actor: a Ray Tune `Trainable`, a thin adapter over the runner (runner.py).

Each `step()` is one segment of the run's schedule (to the next evaluation or checkpoint,
`schedule.eval_every` / `checkpoint_every`) reported to Tune, asking Tune for a checkpoint when
the schedule does; checkpoints are the runner's files plus the sampled parameters and, for
generating methods, a sample grid. The runner and the loop know nothing of Ray.
"""

from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray
import torch
from ray import tune
from ray.train._internal.checkpoint_manager import _TrainingResult

from ..checkpoint import METRICS_FILE, STATE_FILE, load_state, write_files
from ..loop import EpisodeLoop
from ..results import CHECKPOINT_DIR, CHECKPOINT_FILES, PARAMS_FILE, SAMPLES_FILE, is_file
from ..runner import Runner
from ..runtime import tune_allocator
from ..space import GRID, SearchSpec, cast_sample, flatten_sample
from .dashboard import TrialGauges

# Tune's own counter, stored beside our metrics so a checkpoint can be restored on its own.
TUNE_ITERATION = "training_iteration"

log = logging.getLogger(__name__)


def newest_stored_checkpoint(fs: pafs.FileSystem, missing: str) -> str | None:
    """The newest complete checkpoint directory beside `missing` (a trial's checkpoint path)."""
    infos = fs.get_file_info(pafs.FileSelector(posixpath.dirname(missing), allow_not_found=True))
    indexed = sorted((int(m.group(1)), info.path) for info in infos
                     if info.type == pafs.FileType.Directory
                     and (m := CHECKPOINT_DIR.search(posixpath.basename(info.path))))
    for _, path in reversed(indexed):
        if all(is_file(fs, posixpath.join(path, name)) for name in CHECKPOINT_FILES):
            return path
    return None


def trial_device(gpus: float) -> torch.device:
    """The device Ray assigned: its (first) visible GPU when the trial asked for one."""
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES for the actor
    return torch.device("cpu")


def worst_value(mode: str) -> float:
    """The metric a trial reports when it has nothing better (diverged before any evaluation)."""
    return 0.0 if mode == "max" else 1e12


class EpisodeTrainable(tune.Trainable):
    """One trial: the sampled config's episode loop, stepped by Tune."""

    # Tune hands tune.with_parameters values to setup as keyword arguments (its documented
    # pattern), which a signature narrower than Trainable.setup cannot express.
    def setup(self, config: dict[str, Any], spec: SearchSpec,  # type: ignore[override]
              experiment: str = "") -> None:
        tune_allocator()
        self.spec = spec
        self.experiment = experiment
        self.gauges = TrialGauges()
        torch.set_num_threads(max(1, int(spec.resources.cpu)))
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        config = config.get(GRID, config)
        params = cast_sample(self.spec.params, flatten_sample(config))
        self.params = params
        self.cfg = self.spec.config_for(params)
        old = getattr(self, "loop", None)
        splits = old.splits if old is not None and old.cfg.data == self.cfg.data else None
        self.loop = EpisodeLoop(self.cfg, splits, trial_device(self.spec.resources.gpu))
        self.runner = Runner(self.loop)
        self.last: dict[str, Any] = {}

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for another trial (Tune's reuse_actors)."""
        self._build(new_config)
        return True

    def step(self) -> dict[str, Any]:
        """The runner's next segment (to the next evaluation or checkpoint), as a Tune report."""
        segment = self.runner.advance()
        metric, mode = self.spec.search.metric, self.spec.search.mode
        if segment.diverged:
            # The searcher sees the worst value, so it does not keep sampling near a
            # configuration that blew up; the last good value stays on record beside it.
            return {**self.last, **segment.summary, metric: worst_value(mode),
                    f"last_good_{metric}": self.last.get(metric), "done": True}
        last = {**segment.summary, "cuda": int(self.loop.device.type == "cuda")}
        # Tune's progress table shows the first few metrics: the searched one first.
        first = (metric, "iteration", "tasks_per_s", "loss")
        self.last = {**{k: last[k] for k in first if k in last}, **last}
        where: dict[str, Any] = {}
        if ray.is_initialized():  # always on a trial actor; not in an in-process Trainable
            self.gauges.report(self.experiment, self.trial_id, self.last)
            where["node_id"] = ray.get_runtime_context().get_node_id()
        # Tune stores a checkpoint when a result asks for one (its checkpoint_frequency is 0).
        return {**self.last, **where, "done": segment.done, "should_checkpoint": segment.checkpoint}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """The runner's checkpoint files, Tune's counter, the sampled parameters (and a grid
        for generators)."""
        d = Path(checkpoint_dir)
        write_files(d, self.cfg, self.loop.state_dict(), {**self.last, TUNE_ITERATION: self.iteration})
        (d / PARAMS_FILE).write_text(json.dumps(self.params, indent=2, sort_keys=True))
        if self.loop.method.generates:
            from ..gan.grid import sample_loop

            sample_loop(self.loop, d / SAMPLES_FILE, "val", seed=self.cfg.train.seed)

    def restore(self, checkpoint_path: Any) -> None:
        """Tune's restore; from this trial's newest stored checkpoint when the one Tune names is gone.

        Tune snapshots the experiment about every 10 s, and `num_to_keep` may delete the
        checkpoint a snapshot names before the next snapshot: a driver killed in between would
        otherwise leave the trial unrecoverable on --resume.
        """
        ckpt = checkpoint_path.checkpoint if isinstance(checkpoint_path, _TrainingResult) else None
        if ckpt is not None and ckpt.filesystem is not None:
            fs = ckpt.filesystem
            # Gone, or half deleted (an S3 prefix is removed object by object).
            if not all(is_file(fs, posixpath.join(ckpt.path, name)) for name in CHECKPOINT_FILES):
                newer = newest_stored_checkpoint(fs, ckpt.path)
                if newer is not None:
                    with fs.open_input_stream(posixpath.join(newer, METRICS_FILE)) as f:
                        stored = json.loads(f.read().decode())
                    log.warning("checkpoint %s is gone or incomplete (rotated out after the last snapshot); "
                                "continuing from %s", ckpt.path, newer)
                    checkpoint_path = _TrainingResult(
                        checkpoint=tune.Checkpoint(newer, filesystem=fs),
                        metrics={TUNE_ITERATION: int(stored.get(TUNE_ITERATION, 0)),
                                 "time_total_s": float(stored.get("loop_s", 0.0))})
        super().restore(checkpoint_path)

    # A class Trainable that saves into the directory it is given is restored from a path.
    def load_checkpoint(self, checkpoint_dir: str) -> None:  # type: ignore[override]
        """Continue exactly where the checkpoint stopped (tensors only: weights_only=True)."""
        d = Path(checkpoint_dir)
        state = load_state(d / STATE_FILE, self.loop.device)  # a damaged file: one clear line
        self.loop.load_state_dict(state)
        metrics = d / METRICS_FILE
        self.last = json.loads(metrics.read_text()) if metrics.is_file() else {}
        self.last.pop(TUNE_ITERATION, None)
        self.runner.loop_s = float(self.last.get("loop_s", 0.0))
