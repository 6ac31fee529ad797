"""The results store: the one place that knows how an experiment lies in storage, and which is best.

An experiment is a directory under a storage root (a local path or s3://bucket/prefix):

    NAME/metagan_space.yaml                    the validated search space (`SPACE_FILE`)
    NAME/confirmed.json                        the top trials re-scored (`CONFIRMED_FILE`, optional)
    NAME/EpisodeTrainable_<trial id>_.../      one directory per trial, named by Ray Tune
        result.json                            every report, one JSON object per line
        checkpoint_NNNNNN/                     the checkpoints Tune kept (`keep`, by score)
            state.pt config.yaml metrics.json  a complete checkpoint (`metagan.checkpoint`)
            params.json [samples.png]          the trial's sampled values, a generator's grid

"Which is best" has one answer, `Experiment.best()`: the stored checkpoint whose metrics.json
holds the best value of the metric (default: the search's own metric and mode). Stored
checkpoints are ranked rather than reports because only they can be loaded: a search that
checkpoints less often than it reports, or keeps few checkpoints, may have reported a value
that no stored checkpoint holds. The search summary, `metagan.api` and `metagan report` all
ask this one method. When the search re-scored its best trials on more meta-val tasks
(`search.confirm_top`, metagan/confirm.py), the re-scored winner is the answer for the search's
own metric and mode. No Ray here: everything reads through a pyarrow filesystem.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import yaml

from .checkpoint import COMPLETE, CONFIG_FILE, METRICS_FILE
from .config import ConfigError
from .records import parse_records
from .storage import Storage, check_name, check_readable, parse_storage

SPACE_FILE = "metagan_space.yaml"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
SAMPLES_FILE = "samples.png"
CONFIRMED_FILE = "confirmed.json"
# Tune names a trial's directory after the trainable: <TRIAL_NAME>_<trial id>_<n>_<params>_<date>.
TRIAL_NAME = "EpisodeTrainable"
CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")
# What a trial stores in each checkpoint: a complete checkpoint (`metagan.checkpoint`) and the
# trial's sampled values. Without all of them a checkpoint is being written or deleted.
CHECKPOINT_FILES = (*COMPLETE, PARAMS_FILE)
MODES = ("min", "max")

# Called with a message naming a damaged file and what was left out because of it; None: raise.
OnDamaged = Callable[[str], None] | None


def warn(message: str) -> None:
    """An `OnDamaged` for readers that go on without what is damaged: one warning line."""
    print(f"warning: {message}", file=sys.stderr)


class SearchFailed(RuntimeError):
    """No trial of a search reported its metric (every trial failed)."""


class NoExperiment(ConfigError):
    """No stored space under that name: not an experiment of this storage."""


def filesystem(storage: str | Storage) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a storage URI or local path, and the root path on it."""
    store = parse_storage(storage) if isinstance(storage, str) else storage
    if store.is_s3:
        return store.filesystem, store.storage_path  # the resilient S3 filesystem Tune writes with
    return pafs.LocalFileSystem(), store.storage_path


def open_storage(storage: str | Storage) -> Storage:
    """A parsed storage that exists and can be read (a StorageError naming it otherwise)."""
    store = parse_storage(storage) if isinstance(storage, str) else storage
    check_readable(store)
    return store


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def is_file(fs: pafs.FileSystem, path: str) -> bool:
    """Whether `path` is a file on `fs`."""
    return fs.get_file_info(path).type == pafs.FileType.File


def _dirs(fs: pafs.FileSystem, path: str) -> list[str]:
    """Names of the directories right under `path`, sorted (none if it does not exist)."""
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


# --- the stored space ----------------------------------------------------------------------

def space_path(storage: Storage, name: str) -> str:
    """Where experiment `name` keeps its space, on the storage's filesystem."""
    return posixpath.join(storage.experiment_path(name), SPACE_FILE)


def space_exists(storage: Storage, name: str) -> bool:
    """Whether experiment `name` exists (its space is stored)."""
    fs, _ = filesystem(storage)
    return is_file(fs, space_path(storage, name))


def write_space(storage: Storage, name: str, space: dict[str, Any]) -> None:
    """Store a validated space (SearchSpec.to_dict()) as experiment `name`'s."""
    fs, _ = filesystem(storage)
    path = space_path(storage, name)
    if not storage.is_s3:  # S3 has no directories (creating one would store a marker object)
        fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(yaml.safe_dump(space, sort_keys=False).encode())


def list_experiments(storage: Storage) -> list[str]:
    """Names of the experiments under a storage root (directories holding a stored space)."""
    fs, root = filesystem(storage)
    return [d for d in _dirs(fs, root) if is_file(fs, posixpath.join(root, d, SPACE_FILE))]


def read_space(storage: Storage, name: str) -> dict[str, Any]:
    """The stored space of experiment `name` as data (parse it with space.parse_spec).

    NoExperiment when there is none; a ConfigError naming the file when it is damaged.
    """
    fs, _ = filesystem(storage)
    path = space_path(storage, name)
    where = storage.uri_of(path)
    try:
        text = _read(fs, path).decode()
    except FileNotFoundError:
        known = ", ".join(list_experiments(storage)) or "none"
        raise NoExperiment(f"no experiment {name!r} in {storage.uri} (experiments there: {known})"
                           ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: damaged (not text)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: damaged (not YAML)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: damaged (not a search space)")
    return data


# --- an experiment's trials and checkpoints ------------------------------------------------

@dataclass(frozen=True)
class StoredCheckpoint:
    """A complete checkpoint directory of one trial, with the metrics it was saved with."""

    trial: str                 # the trial's directory name
    index: int                 # NNNNNN of checkpoint_NNNNNN
    path: str                  # on the storage's filesystem
    uri: str                   # s3://... or a local path
    metrics: dict[str, Any]

    def value(self, metric: str) -> float | None:
        """The checkpoint's `metric`, if it holds a finite number for it."""
        v = self.metrics.get(metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)


def checkpoint_key(stored: StoredCheckpoint) -> str:
    """A stored checkpoint's name within its experiment: `trial/checkpoint_N`."""
    return f"{stored.trial}/{posixpath.basename(stored.path)}"


@dataclass
class BestResult:
    """The best stored checkpoint of an experiment (`Experiment.best`)."""

    experiment: str
    trial: str                 # the trial's directory name
    metric: str
    mode: str
    value: float               # `metric` in the checkpoint's metrics.json
    params: dict[str, Any]     # the trial's sampled values (params.json)
    config: dict[str, Any]     # the resolved run config (config.yaml)
    checkpoint: str            # URI of the checkpoint directory
    iteration: int             # the meta-iteration it was saved at
    trial_id: str              # Tune's trial id (as in every result record and the search summary)
    confirmed: float | None = None  # `metric` re-scored on `confirmed_episodes` meta-val tasks
    confirmed_episodes: int = 0


class Experiment:
    """One stored experiment, opened once: its space is read on opening, its trials and
    checkpoints listed on first use and then kept (a snapshot; open it again to see newer ones).

    `on_damaged` receives a message for each damaged result.json or metrics.json that is left
    out; without it, a damaged file is a ConfigError naming it.
    """

    def __init__(self, storage: Storage, name: str, on_damaged: OnDamaged = None) -> None:
        self.storage, self.name = storage, check_name(name, "experiment")
        self.on_damaged = on_damaged
        self.fs, _ = filesystem(storage)
        self.path = storage.experiment_path(name)
        self.uri = storage.uri_of(self.path)
        self.space = read_space(storage, name)
        search = self.space.get("search")
        if not isinstance(search, dict) or not isinstance(search.get("metric"), str) \
                or search.get("mode") not in MODES:
            raise ConfigError(f"{storage.uri_of(space_path(storage, name))}: damaged "
                              "(no search.metric and search.mode)")
        self.metric: str = search["metric"]
        self.mode: str = search["mode"]
        self._trials: list[str] | None = None
        self._checkpoints: list[StoredCheckpoint] | None = None
        self._stale_warned = False

    @classmethod
    def open(cls, storage: str | Storage, name: str, on_damaged: OnDamaged = None) -> Experiment:
        """Experiment `name` of a storage URI (checked readable first)."""
        return cls(open_storage(storage), name, on_damaged)

    def _damaged(self, error: ConfigError, left_out: str) -> None:
        if self.on_damaged is None:
            raise error
        self.on_damaged(f"{error}; {left_out} left out")

    def read_bytes(self, path: str) -> bytes:
        """A file of this experiment (a path on its filesystem); FileNotFoundError if missing."""
        return _read(self.fs, path)

    def trials(self) -> list[str]:
        """The trial directories' names, sorted."""
        if self._trials is None:
            self._trials = [d for d in _dirs(self.fs, self.path) if d.startswith(TRIAL_NAME + "_")]
        return self._trials

    def trial_path(self, trial: str) -> str:
        return posixpath.join(self.path, trial)

    def histories(self) -> dict[str, list[dict[str, Any]]]:
        """Per trial directory, its reports in order (a torn last line is dropped)."""
        out = {}
        for trial in self.trials():
            path = posixpath.join(self.trial_path(trial), RESULT_FILE)
            try:
                text = self.read_bytes(path).decode(errors="replace")
            except FileNotFoundError:
                continue  # a trial that has not reported yet
            try:
                out[trial] = parse_records(text, self.storage.uri_of(path))
            except ConfigError as e:  # one damaged trial does not hide the others
                self._damaged(e, "trial")
        return out

    def trial_id(self, trial: str) -> str:
        """Tune's id of a trial (from its first report); the directory name if it has none."""
        try:
            first = self.read_bytes(posixpath.join(self.trial_path(trial), RESULT_FILE)).split(b"\n", 1)[0]
            record = json.loads(first)
        except (FileNotFoundError, ValueError):
            return trial
        found = record.get("trial_id") if isinstance(record, dict) else None
        return str(found) if found else trial

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every complete stored checkpoint (all of CHECKPOINT_FILES present), by trial and
        index. One being written or deleted is not complete, so not listed."""
        if self._checkpoints is None:
            self._checkpoints = [c for trial in self.trials() for c in self._trial_checkpoints(trial)]
        return self._checkpoints

    def checkpoints_of(self, trial: str, metric: str) -> list[StoredCheckpoint]:
        """One trial's stored checkpoints that hold `metric`, oldest first (what a re-scoring
        scores, metagan/confirm.py)."""
        return sorted((c for c in self.checkpoints() if c.trial == trial and c.value(metric) is not None),
                      key=lambda c: c.index)

    def _trial_checkpoints(self, trial: str) -> list[StoredCheckpoint]:
        base = self.trial_path(trial)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        files: dict[str, set[str]] = {}   # checkpoint directory -> its files
        for info in infos:
            parts = info.path[len(base) + 1:].split("/")
            if info.type == pafs.FileType.File and len(parts) == 2 and CHECKPOINT_DIR.match(parts[0]):
                files.setdefault(parts[0], set()).add(parts[1])
        out = []
        for index, name in sorted((int(name.split("_")[1]), name) for name in files):
            if not set(CHECKPOINT_FILES) <= files[name]:
                continue
            path = posixpath.join(base, name)
            uri = self.storage.uri_of(path)
            try:
                metrics = json.loads(self.read_bytes(posixpath.join(path, METRICS_FILE)))
            except FileNotFoundError:
                continue  # deleted since the listing (rotated out by keep)
            except ValueError:
                self._damaged(ConfigError(f"{uri}/{METRICS_FILE}: damaged (not JSON)"), "checkpoint")
                continue
            if not isinstance(metrics, dict):
                self._damaged(ConfigError(f"{uri}/{METRICS_FILE}: damaged (not a JSON object)"),
                              "checkpoint")
                continue
            out.append(StoredCheckpoint(trial, index, path, uri, metrics))
        return out

    def _objective(self, metric: str | None, mode: str | None) -> tuple[str, str]:
        metric, mode = metric or self.metric, mode or self.mode
        if mode not in MODES:
            raise ConfigError(f"mode: expected min or max, got {mode!r}")
        return metric, mode

    def ranking(self, metric: str | None = None, mode: str | None = None) -> list[StoredCheckpoint]:
        """Each trial's best stored checkpoint by `metric`, best first (ties: the earlier trial,
        and within a trial the earlier checkpoint). Trials with no checkpoint holding it are absent."""
        metric, mode = self._objective(metric, mode)
        sign = -1.0 if mode == "max" else 1.0
        per_trial: dict[str, tuple[float, StoredCheckpoint]] = {}
        for c in self.checkpoints():
            v = c.value(metric)
            if v is not None and (c.trial not in per_trial or sign * v < sign * per_trial[c.trial][0]):
                per_trial[c.trial] = (v, c)
        return [c for _, c in sorted(per_trial.values(), key=lambda vc: sign * vc[0])]

    def best(self, metric: str | None = None, mode: str | None = None) -> BestResult:
        """Which trial and which stored checkpoint is best: the one whose metrics.json holds the
        best `metric` (default: the search's metric and mode), or for those the re-scored winner
        when the search confirmed its top trials. A ConfigError if none holds it."""
        metric, mode = self._objective(metric, mode)
        own = (metric, mode) == (self.metric, self.mode)
        for _ in range(3):
            ranked = self.ranking(metric, mode)
            if not ranked:
                raise ConfigError(f"experiment {self.name!r} in {self.storage.uri}: no stored "
                                  f"checkpoint holds {metric!r}")
            top, record = ranked[0], self._current_confirmation(ranked) if own else None
            if record is not None:
                top = next(c for c in self.checkpoints() if checkpoint_key(c) == record["best"]["key"])
            try:
                best = self._best_result(top, metric, mode)
            except FileNotFoundError:  # rotated out (keep) since the listing: list again
                self._checkpoints = None
                continue
            if record is not None:
                best.confirmed = float(record["best"]["confirmed"])
                best.confirmed_episodes = int(record["episodes"])
            return best
        raise ConfigError(f"experiment {self.name!r} in {self.storage.uri}: its checkpoints keep "
                          "changing (a search still running?); try again")

    def _current_confirmation(self, ranked: list[StoredCheckpoint]) -> dict[str, Any] | None:
        """The stored re-scoring, if its candidates are still the search's top trials and their
        stored checkpoints the ones re-scored (a search resumed since, or still running, may have
        new leaders or new checkpoints that were never re-scored)."""
        record = self.confirmed()
        if record is None:
            return None
        rescored = record["candidates"] + ([record["base"]] if "base" in record else [])

        def stored(trial: str) -> set[str]:
            return {checkpoint_key(c) for c in self.checkpoints_of(trial, self.metric)}

        def ranked_key(c: dict[str, Any]) -> str:  # records before per-checkpoint re-scoring: key
            return str(c.get("ranked_key", c["key"]))

        def unchanged(c: dict[str, Any]) -> bool:
            if "checkpoints" not in c:
                return True
            return {str(k["key"]) for k in c["checkpoints"]} == stored(c["trial"])

        per_trial = {c.trial: checkpoint_key(c) for c in ranked}
        keys = [ranked_key(c) for c in record["candidates"]]
        base = record.get("base")  # search.keep_base: the base trial's best must be unchanged too
        if ([checkpoint_key(c) for c in ranked[:len(keys)]] != keys
                or (base is not None and per_trial.get(base["trial"]) != ranked_key(base))
                or not all(unchanged(c) for c in rescored)
                or record["best"]["key"] not in stored(record["best"]["trial"])):
            if not self._stale_warned:
                self._stale_warned = True
                warn(f"{self.uri}/{CONFIRMED_FILE}: its candidates are no longer the best trials, or "
                     "their stored checkpoints changed (the search went on after it); ranking by "
                     "the search's own reports")
            return None
        return record

    def _best_result(self, top: StoredCheckpoint, metric: str, mode: str) -> BestResult:
        files = {}
        for name in (CONFIG_FILE, PARAMS_FILE):
            where = posixpath.join(top.path, name)
            try:
                text = self.read_bytes(where).decode()
                files[name] = yaml.safe_load(text) if name == CONFIG_FILE else json.loads(text)
            except (UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError):
                raise ConfigError(f"{self.storage.uri_of(where)}: damaged") from None
            if not isinstance(files[name], dict):
                raise ConfigError(f"{self.storage.uri_of(where)}: damaged (not a mapping)")
        config, params = files[CONFIG_FILE], files[PARAMS_FILE]
        value = top.value(metric)
        assert value is not None  # ranked checkpoints hold the metric
        return BestResult(experiment=self.name, trial=top.trial, metric=metric, mode=mode,
                          value=value, params=params, config=config, checkpoint=top.uri,
                          iteration=int(top.metrics.get("iteration", 0)),
                          trial_id=self.trial_id(top.trial))

    def params(self, stored: StoredCheckpoint) -> dict[str, Any]:
        """A stored checkpoint's trial's sampled values (its params.json); {} if damaged."""
        try:
            params = json.loads(self.read_bytes(posixpath.join(stored.path, PARAMS_FILE)))
        except (FileNotFoundError, ValueError):
            return {}
        return params if isinstance(params, dict) else {}

    def confirmed(self) -> dict[str, Any] | None:
        """The stored re-scoring of the top trials (see metagan/confirm.py), if there is one,
        with each candidate's "checkpoint" URI where the experiment is now; its "best" is the
        winning candidate (or its "base", the base config's trial, under search.keep_base)."""
        where = posixpath.join(self.path, CONFIRMED_FILE)
        try:
            data = json.loads(self.read_bytes(where))
            def here(c: dict[str, Any]) -> dict[str, Any]:  # the URI where the experiment is now
                return {**c, "checkpoint": self.storage.uri_of(posixpath.join(self.path, c["key"])),
                        "confirmed": float(c["confirmed"])}

            candidates = [here(c) for c in data["candidates"]]
            base = [here(data["base"])] if "base" in data else []  # search.keep_base
            best = next(c for c in candidates + base if c["key"] == data["best"])
            for c in candidates + base:  # each re-scored checkpoint of a trial, the chosen among them
                if "checkpoints" in c and c["key"] not in [str(k["key"]) for k in c["checkpoints"]]:
                    raise ValueError("the chosen checkpoint was not re-scored")
                if not isinstance(c.get("ranked_key", c["key"]), str):
                    raise ValueError("a ranked_key that is not a checkpoint key")
            if (data["metric"], data["mode"]) != (self.metric, self.mode):
                raise ValueError("another objective")
            int(data["episodes"]), int(data["top"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, StopIteration):
            self._damaged(ConfigError(f"{self.storage.uri_of(where)}: damaged"),
                          "the re-scoring (the search's own reports rank)")
            return None
        return {**data, "candidates": candidates, "best": best, **({"base": base[0]} if base else {})}

    def write_confirmed(self, record: dict[str, Any]) -> None:
        """Store a re-scoring of the top trials (metagan/confirm.py writes it)."""
        with self.fs.open_output_stream(posixpath.join(self.path, CONFIRMED_FILE)) as f:
            f.write(json.dumps(record, indent=2).encode())

    def checkpoint_path(self, uri: str) -> str:
        """The filesystem path of one of this experiment's checkpoint URIs (else a ConfigError)."""
        path = posixpath.normpath(self.storage.path_of(uri))
        inside = path[len(self.path) + 1:].split("/") if path.startswith(self.path + "/") else []
        if len(inside) != 2 or not CHECKPOINT_DIR.match(inside[1]):  # <trial>/checkpoint_N
            raise ConfigError(f"{uri}: not a checkpoint of experiment {self.name!r} in {self.storage.uri}")
        return path

    def read_checkpoint_file(self, checkpoint: str, name: str) -> bytes:
        """File `name` (e.g. SAMPLES_FILE) of one of this experiment's checkpoints, by URI."""
        return self.read_bytes(posixpath.join(self.checkpoint_path(checkpoint), name))

    def download(self, checkpoint: str | None = None, dest: str | Path | None = None) -> Path:
        """Copy a checkpoint directory (default: the best one) to a local folder; returns it."""
        source = self.checkpoint_path(checkpoint or self.best().checkpoint)
        local = Path(dest or tempfile.mkdtemp(prefix="metagan-ckpt-"))
        local.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(source, str(local), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return local
