"""The one runner: steps an episode loop on its config's schedule section (record, evaluate,
checkpoint, stop) and turns a divergence into a record. Drivers only say where things go:
`metagan train` (run.py) appends records to a JSON-lines file and saves checkpoints in its run
directory; a search trial (tune/trainable.py) reports each evaluation to Tune and has Tune store
the checkpoints the schedule asks for. Both write checkpoint files with `checkpoint.write_files`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .loop import Diverged, EpisodeLoop

Record = dict[str, Any]
# What a driver does with a record (a training-metrics line or an evaluation).
RecordSink = Callable[[Record], None]


@dataclass(frozen=True)
class Segment:
    """What the runner did between two stops (an evaluation, a checkpoint, the end)."""

    summary: Record  # iteration, loop_s, diverged, the mean training metrics, and val_* if evaluated
    evaluated: bool
    checkpoint: bool  # the schedule asks for a checkpoint of the loop as it is now
    done: bool  # the run reached train.iterations, or diverged

    @property
    def diverged(self) -> bool:
        """Whether the run diverged in this segment (its summary then holds the reason)."""
        return bool(self.summary["diverged"])


def due(iteration: int, every: int) -> bool:
    """Whether a cadence of `every` meta-iterations (0: never) falls on `iteration`."""
    return every > 0 and iteration % every == 0


class Runner:
    """Drives one episode loop on `loop.cfg.schedule`, a segment at a time."""

    def __init__(self, loop: EpisodeLoop, loop_s: float = 0.0) -> None:
        """`loop_s`: seconds already spent in the loop (a restored run's, from its checkpoint)."""
        self.loop = loop
        self.loop_s = loop_s

    @property
    def end(self) -> int:
        """The meta-iteration the run stops at."""
        return self.loop.cfg.train.iterations

    def next_stop(self) -> int:
        """The next iteration at which the schedule evaluates or checkpoints, or the end."""
        sch, it = self.loop.cfg.schedule, self.loop.iteration
        stops = [self.end] + [(it // every + 1) * every
                              for every in (sch.eval_every, sch.checkpoint_every) if every > 0]
        return min(stops)

    def advance(self, record: RecordSink | None = None,
                on_step: Callable[[Record], None] | None = None) -> Segment:
        """Step to the next stop, recording every `log_every` iterations; evaluate there when due."""
        sch, loop = self.loop.cfg.schedule, self.loop
        stop = self.next_stop()
        start = time.perf_counter()
        sums: dict[str, float] = {}
        steps = 0
        try:
            while loop.iteration < stop:
                metrics = loop.step()
                steps += 1
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                if record is not None and (due(loop.iteration, sch.log_every) or loop.iteration == self.end):
                    record({**metrics, "loop_s": self.loop_s + time.perf_counter() - start})
                if on_step is not None:
                    on_step(metrics)
        except Diverged as e:
            self.loop_s += time.perf_counter() - start
            failed = {"iteration": loop.iteration + 1, "loop_s": self.loop_s, "diverged": True,
                      "reason": str(e)}
            if record is not None:
                record(failed)
            return Segment(failed, evaluated=False, checkpoint=False, done=True)
        it = loop.iteration
        summary: Record = {k: v / steps for k, v in sums.items() if k != "iteration"}
        evaluated = due(it, sch.eval_every) or it >= self.end
        if evaluated:
            val = loop.evaluate("val", sch.eval_episodes)
            summary.update({f"val_{k}": v for k, v in val.items()})
        self.loop_s += time.perf_counter() - start
        summary.update(iteration=it, loop_s=self.loop_s, diverged=False)
        if evaluated and record is not None:
            record({"iteration": it, **{k: v for k, v in summary.items() if k.startswith("val_")}})
        return Segment(summary, evaluated, checkpoint=due(it, sch.checkpoint_every) or it >= self.end,
                       done=it >= self.end)
