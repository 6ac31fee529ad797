"""A local training run: drives the episode loop, writing metrics, config and checkpoints to a directory.

Layout of a run directory:
  config.yaml      the resolved config
  splits.json      the alphabets (groups) of meta-train / meta-val / meta-test
  metrics.jsonl    one JSON object per logged iteration / evaluation
  checkpoints/last the latest checkpoint (see checkpoint.py)
  result.json      final meta-val and meta-test accuracy (or the divergence record)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, ConfigError, dump_yaml
from .loop import Diverged, EpisodeLoop

LAST = "checkpoints/last"


class MetricsLog:
    """Append-only JSON-lines metrics; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_iteration: int | None = None) -> None:
        self.path = path
        if resume_iteration is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line and json.loads(line).get("iteration", 0) <= resume_iteration]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def prepare_run_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite a previous run unless resuming it."""
    if resume:
        if not (out / LAST).is_dir():
            raise ConfigError(f"--resume: {out} has no checkpoint to resume from ({LAST})")
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out: {out} already holds a run; pass --resume to continue it "
                          "or choose another directory")
    out.mkdir(parents=True, exist_ok=True)


def train(cfg: Config, out: str | Path, resume: bool = False,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Meta-train `cfg` into `out` (continuing its last checkpoint when `resume`); final metrics.

    When resuming, `cfg` is the run's config, possibly with overrides (e.g. more iterations).
    """
    out = Path(out)
    prepare_run_dir(out, resume)
    if resume:
        _, state, _ = load_checkpoint(out / LAST)
    loop = EpisodeLoop(cfg)
    if resume:
        loop.load_state_dict(state)
    dump_yaml(cfg, out / "config.yaml")
    (out / "splits.json").write_text(json.dumps(loop.splits.groups, indent=2))
    log = MetricsLog(out / "metrics.jsonl", loop.iteration if resume else None)
    tr = cfg.train
    start = time.perf_counter()
    try:
        while loop.iteration < tr.iterations:
            metrics = loop.step()
            it = loop.iteration
            if it % tr.log_every == 0 or it == tr.iterations:
                metrics["wall_s"] = time.perf_counter() - start
                log.write(metrics)
            if tr.eval_every and it % tr.eval_every == 0 and it < tr.iterations:
                val = loop.evaluate("val", tr.eval_episodes)
                log.write({"iteration": it, **{f"val_{k}": v for k, v in val.items()}})
            if tr.checkpoint_every and it % tr.checkpoint_every == 0:
                save_checkpoint(out / LAST, cfg, loop.state_dict(), metrics)
            if on_step is not None:
                on_step(metrics)
    except Diverged as e:
        record = {"iteration": loop.iteration + 1, "diverged": True, "reason": str(e)}
        log.write(record)
        (out / "result.json").write_text(json.dumps(record, indent=2))
        raise
    train_s = time.perf_counter() - start
    save_checkpoint(out / LAST, cfg, loop.state_dict())
    val = loop.evaluate("val", tr.eval_episodes)
    test = loop.evaluate("test", tr.test_episodes)
    result = {"iteration": loop.iteration, "train_wall_s": train_s,
              **{f"val_{k}": v for k, v in val.items()},
              **{f"test_{k}": v for k, v in test.items()}}
    log.write(result)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    save_checkpoint(out / LAST, cfg, loop.state_dict(), result)
    return result


def load_loop(path: str | Path, device: str | None = None) -> EpisodeLoop:
    """An episode loop restored from a run directory or a checkpoint directory."""
    path = Path(path)
    if (path / LAST).is_dir():
        path = path / LAST
    cfg, state, _ = load_checkpoint(path, map_location=device or "cpu")
    loop = EpisodeLoop(cfg, device=device)
    loop.load_state_dict(state)
    return loop
