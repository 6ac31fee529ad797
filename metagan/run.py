"""A local training run: drives the episode loop, writing metrics, config and checkpoints to a directory.

Layout of a run directory:
  config.yaml      the resolved config
  splits.json      the alphabets (groups) of meta-train / meta-val / meta-test
  metrics.jsonl    one JSON object per logged iteration / evaluation
  checkpoints/last the latest checkpoint (see checkpoint.py)
  checkpoints/best the checkpoint of the best meta-val evaluation so far (methods.selection_of),
                   written with the next checkpoint of `last`, so it is never ahead of it
  result.json      final meta-val and meta-test accuracy (or the divergence record)
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint import METRICS_FILE, latest, load_checkpoint, save_checkpoint, write_text_atomic
from .config import Config, ConfigError, build_config, first_line, to_dict, yaml_text
from .loop import Diverged, EpisodeLoop, build_method
from .meta import Method
from .methods import Mode, selection_of
from .records import parse_records
from .runner import Runner

LAST = "checkpoints/last"
BEST = "checkpoints/best"
log = logging.getLogger(__name__)


# What `train --resume` may change: how long and where it runs and how often it records.
# Everything else would change what was learned or how it is measured.
RESUMABLE = ("train.iterations", "schedule.log_every", "schedule.eval_every",
             "schedule.checkpoint_every", "train.device", "train.threads")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn last line (a killed writer) is dropped."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: damaged (not text)") from None
    return parse_records(text, str(path))


class MetricsLog:
    """Append-only JSON-lines metrics; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_iteration: int | None = None) -> None:
        self.path = path
        if resume_iteration is not None and path.is_file():
            kept = [r for r in read_records(path) if r.get("iteration", 0) <= resume_iteration]
            write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def is_better(summary: dict[str, Any], best: dict[str, Any] | None, metric: tuple[str, Mode]
              ) -> bool:
    """Whether an evaluation's summary beats the best one on `metric` (key, mode): strictly
    (a tie keeps the earlier), a finite value beats none, a NaN (a diverged generator) nothing."""
    key, mode = metric
    value = summary.get(key)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    old = None if best is None else best.get(key)
    if not isinstance(old, (int, float)) or not math.isfinite(old):
        return True
    return value > old if mode == "max" else value < old


def stored_best(out: Path) -> dict[str, Any] | None:
    """The evaluation summary of a run's best checkpoint; None when it has none, or when it is
    damaged (a warning: resuming needs only `last`, and the next better evaluation replaces it)."""
    found = latest(out / BEST)
    if found is None:
        return None
    try:
        summary: dict[str, Any] = json.loads((found / METRICS_FILE).read_text())
        return summary
    except (OSError, ValueError) as e:
        log.warning("%s: damaged (%s); the best checkpoint starts again from the resumed run",
                    found / METRICS_FILE, type(e).__name__)
        return None


def prepare_run_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite a previous run unless resuming it."""
    if resume:
        if latest(out / LAST) is None:
            raise ConfigError(f"--resume: {out} has no checkpoint to resume from ({LAST})")
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file, not a directory")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out: {out} already holds a run; pass --resume to continue it "
                          "or choose another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create {out} ({e.strerror})") from None


def _dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config data as flat dotted keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def resume_config(out: Path, overrides: dict[str, Any]) -> Config:
    """The config of the run in `out`, with the overrides a resumed run can honour (else refused)."""
    prepare_run_dir(out, resume=True)
    refused = sorted(k for k in overrides if k not in RESUMABLE)
    if refused:
        raise ConfigError(f"--set {refused[0]}: a resumed run keeps what it learned and how it is "
                          f"measured; it accepts only {', '.join(RESUMABLE)}")
    saved, state, _ = load_checkpoint(out / LAST)
    cfg = build_config(to_dict(saved), overrides)
    if cfg.train.iterations < int(state["iteration"]):
        raise ConfigError(f"--set train.iterations={cfg.train.iterations}: the checkpoint is "
                          f"already at iteration {state['iteration']}")
    return cfg


def train(cfg: Config, out: str | Path, resume: bool = False,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Meta-train `cfg` into `out` (continuing its last checkpoint when `resume`); final metrics.

    When resuming, `cfg` is the run's config, possibly with overrides (e.g. more iterations).
    Checkpoints: `last` at every schedule.checkpoint_every and at the end; `best` (the best
    meta-val evaluation so far) written with them.
    """
    out = Path(out)
    prepare_run_dir(out, resume)
    if resume:
        saved, state, stored = load_checkpoint(out / LAST)
        changed = [k for k in _dotted(to_dict(cfg)) if k not in RESUMABLE
                   and _dotted(to_dict(cfg))[k] != _dotted(to_dict(saved))[k]]
        if changed:  # the same guard as resume_config, for callers of the library
            raise ConfigError(f"{changed[0]}: a resumed run keeps what it learned and how it is "
                              f"measured; it accepts changes only to {', '.join(RESUMABLE)}")
    # A resumed run's config is its saved one (keys it never read included), less what it may change.
    loop = EpisodeLoop(cfg, restoring=resume)
    loop_s = 0.0
    if resume:
        restore(loop, state, out / LAST)
        loop_s = float(stored.get("loop_s", 0.0))
    write_text_atomic(out / "config.yaml", yaml_text(cfg))
    write_text_atomic(out / "splits.json", json.dumps(loop.splits.groups, indent=2))
    metrics = MetricsLog(out / "metrics.jsonl", loop.iteration if resume else None)
    metric = selection_of(type(loop.method))
    best = stored_best(out) if resume else None
    # A better evaluation between checkpoints is held (a copy of the state) and written just
    # before the next `last`: a run killed in between resumes from `last` and meets it again.
    pending: tuple[dict[str, Any], dict[str, Any]] | None = None
    runner = Runner(loop, loop_s)
    while True:
        segment = runner.advance(metrics.write, on_step)
        if segment.diverged:
            write_text_atomic(out / "result.json", json.dumps(segment.summary, indent=2))
            raise Diverged(segment.summary["reason"])
        if segment.evaluated and is_better(segment.summary, best, metric):
            best = segment.summary
            pending = (copy.deepcopy(loop.state_dict()), best)
        if segment.checkpoint:
            if pending is not None:
                save_checkpoint(out / BEST, cfg, *pending)
                pending = None
            save_checkpoint(out / LAST, cfg, loop.state_dict(), segment.summary)
        if segment.done:
            break
    test = loop.evaluate("test", cfg.schedule.test_episodes)
    result: dict[str, Any] = {
        "iteration": loop.iteration, "loop_s": runner.loop_s,
        **{k: v for k, v in segment.summary.items() if k.startswith("val_")},
        **{f"test_{k}": v for k, v in test.items()}}
    if loop.method.classifies and not loop.method.generates and cfg.data.source != "folder":
        # Accuracy per meta-test alphabet: the meta-test episode count shared among its
        # alphabets (at least one each); alphabets too small for the tasks are named as skipped.
        # (A folder's groups are its classes, one each: it has no alphabets to report.)
        per_alphabet = max(1, cfg.schedule.test_episodes // len(set(loop.splits.test.groups)))
        result["test_per_alphabet"] = loop.evaluate_per_group("test", per_alphabet)
    metrics.write(result)
    write_text_atomic(out / "result.json", json.dumps(result, indent=2))
    save_checkpoint(out / LAST, cfg, loop.state_dict(), result)
    return result


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory of a run directory, or `path` itself (a checkpoint)."""
    path = Path(path)
    if latest(path / LAST) is not None or (path / LAST).is_dir():
        return path / LAST  # a run: its checkpoint (load_checkpoint names what is wrong with it)
    if not path.exists() and latest(path) is None:
        raise ConfigError(f"{path}: no such run or checkpoint directory")
    return path


def load_loop(path: str | Path, device: str | None = None) -> EpisodeLoop:
    """An episode loop restored from a run directory or a checkpoint directory."""
    path = checkpoint_dir(path)
    cfg, state, _ = load_checkpoint(path, map_location=device or "cpu")
    loop = EpisodeLoop(cfg, device=device, restoring=True)
    restore(loop, state, path)
    return loop


def load_module(path: str | Path, device: str | None = None) -> tuple[Config, Method, Path]:
    """A trained method from a run or checkpoint directory's config and weights alone (no
    data is read, and the config's data paths need not exist here), with the checkpoint
    directory it came from."""
    path = checkpoint_dir(path)
    cfg, state, _ = load_checkpoint(path, map_location=device or "cpu", check_paths=False)
    _, method = build_method(cfg, device or "cpu")
    try:
        method.load_state_dict(state["method"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f"{path}: the state does not fit its config.yaml ({first_line(e)})") from None
    return cfg, method, path


def restore(loop: EpisodeLoop, state: dict[str, Any], where: Path) -> None:
    """Load a checkpoint state into a loop; a state of another config is a ConfigError."""
    try:
        loop.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f"{where}: the state does not fit its config.yaml ({first_line(e)})") from None
