"""`metagan report`: learning curves of every trial, the best sample grid, a sorted table."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from .results import SAMPLES_FILE, BestResult, Experiment, StoredCheckpoint, warn
from .space import flatten_sample


def trial_histories(experiment: str, storage: str) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """The stored space and, per trial directory, its reported results in order."""
    found = Experiment.open(storage, experiment, on_damaged=warn)
    return found.space, found.histories()


def table(histories: dict[str, list[dict]], ranking: list[StoredCheckpoint],
          metric: str) -> list[dict[str, Any]]:
    """One row per trial that reported `metric`, in the results store's order: by its best
    stored checkpoint (`ranking`, best first; `best` is that checkpoint's value), then the
    trials with no stored checkpoint holding it (`best` NaN)."""
    place = {c.trial: i for i, c in enumerate(ranking)}
    rows = []
    for name, records in histories.items():
        if not any(isinstance(r.get(metric), (int, float)) for r in records):
            continue
        last = records[-1]
        stored = ranking[place[name]] if name in place else None
        rows.append({"trial": last.get("trial_id", name),
                     "best": stored.value(metric) if stored else math.nan,
                     "iteration": last.get("iteration"), "diverged": bool(last.get("diverged")),
                     "params": flatten_sample(last.get("config", {})), "dir": name,
                     "checkpoint": stored.uri if stored else None})
    rows.sort(key=lambda r: place.get(r["dir"], len(place)))
    return rows


def write_report(experiment: str, storage: str, out: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """The PNG (curves + best grid if the method generates) and the sorted rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = Experiment.open(storage, experiment, on_damaged=warn)
    spec, histories = found.space, found.histories()
    metric = found.metric
    ranking = found.ranking()
    rows = table(histories, ranking, metric)
    best: BestResult | None = found.best() if ranking else None
    grid = None
    if best is not None:
        try:
            png = found.read_checkpoint_file(best.checkpoint, SAMPLES_FILE)
            grid = plt.imread(io.BytesIO(png), format="png")
        except FileNotFoundError:
            grid = None  # not a generating method
    fig, axes = plt.subplots(1, 2 if grid is not None else 1, figsize=(13 if grid is not None else 8, 5),
                             squeeze=False)
    ax = axes[0][0]
    top = best.trial if best is not None else None
    palette = [f"C{i}" for i in range(10) if i != 3]  # red is the best trial's
    for i, (name, records) in enumerate(histories.items()):
        pts = [(r["iteration"], r[metric]) for r in records if isinstance(r.get(metric), (int, float))]
        if not pts:
            continue
        x, y = zip(*pts)
        style = {"lw": 2.5, "color": "C3", "zorder": 3, "label": f"best: {records[-1].get('trial_id')}"} \
            if name == top else {"lw": 1, "alpha": 0.7, "color": palette[i % len(palette)]}
        ax.plot(x, y, marker="o", ms=3, **style)
    if best is not None and top in histories:  # the stored checkpoint `best()` names
        ax.plot([best.iteration], [best.value], marker="*", ms=14, color="C3", zorder=4, ls="none",
                label=f"best stored checkpoint: {metric} = {best.value:.4f}")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{experiment}: {len(histories)} trials ({spec['search']['algorithm']}, "
                 f"{spec['scheduler']['name']})")
    ax.grid(alpha=0.3)
    if top in histories:
        ax.legend()
    if grid is not None:
        axes[0][1].imshow(grid, cmap="gray")
        axes[0][1].set_title("best trial: support (top row), then samples")
        axes[0][1].axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, rows
