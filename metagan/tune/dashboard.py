"""Live trial metrics for the Ray dashboard and its Prometheus endpoint (ray.util.metrics).

Each trial actor sets gauges tagged with its experiment and trial; Ray exports them at every
node's metrics port as `ray_metagan_<name>{experiment="...",trial="..."}`. Gauges vanish when
the actor exits, so they show what is running now; the full history is in storage.
"""

from __future__ import annotations

import re
from typing import Any

# Result keys exported, besides every key that holds a loss (generator/loss, ...).
EXPORTED = ("val_accuracy", "val_ci95", "val_kid", "val_frechet_distance", "val_fidelity",
            "val_novelty", "val_precision", "val_recall", "val_diversity",
            "tasks_per_s", "iteration", "loss", "accuracy")


def gauge_name(key: str) -> str:
    """`generator/loss` -> `metagan_generator_loss`."""
    return "metagan_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


class TrialGauges:
    """The gauges of one actor (created on first use; re-tagged when the actor is reused)."""

    def __init__(self) -> None:
        self._gauges: dict[str, Any] = {}

    def report(self, experiment: str, trial: str, result: dict[str, Any]) -> None:
        """Set every exported metric of one result."""
        from ray.util.metrics import Gauge

        tags = {"experiment": experiment, "trial": trial}
        for key, value in result.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key not in EXPORTED and "loss" not in key:
                continue
            name = gauge_name(key)
            if name not in self._gauges:
                self._gauges[name] = Gauge(name, description=f"metagan trial metric {key}",
                                           tag_keys=("experiment", "trial"))
            self._gauges[name].set(float(value), tags=tags)
