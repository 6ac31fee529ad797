"""`metagan report`: learning curves of every trial, the best sample grid, a sorted table."""

from __future__ import annotations

import io
import posixpath
import sys
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from .api import _dirs, _experiment, _fs_path, _open, _read_text, best_result
from .config import ConfigError
from .records import parse_records
from .tune.space import flatten_sample


def trial_histories(experiment: str, storage: str) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """The stored space and, per trial directory, its reported results in order."""
    store = _open(storage)
    fs, path, spec = _experiment(store, experiment)
    out = {}
    for trial in _dirs(fs, path):
        try:
            text = _read_text(fs, posixpath.join(path, trial, "result.json"))
        except FileNotFoundError:
            continue
        try:
            out[trial] = parse_records(text, store.uri_of(posixpath.join(path, trial, "result.json")))
        except ConfigError as e:  # one damaged trial does not hide the others
            print(f"warning: {e}; trial left out of the report", file=sys.stderr)
    return spec, out


def table(spec: dict[str, Any], histories: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """One row per trial, best first."""
    metric, mode = spec["search"]["metric"], spec["search"]["mode"]
    rows = []
    for name, records in histories.items():
        values = [r[metric] for r in records if isinstance(r.get(metric), (int, float))]
        if not values:
            continue
        last = records[-1]
        best = max(values) if mode == "max" else min(values)
        rows.append({"trial": last.get("trial_id", name), "best": best,
                     "iteration": last.get("iteration"), "diverged": bool(last.get("diverged")),
                     "params": flatten_sample(last.get("config", {})), "dir": name})
    rows.sort(key=lambda r: r["best"], reverse=(mode == "max"))
    return rows


def write_report(experiment: str, storage: str, out: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """The PNG (curves + best grid if the method generates) and the sorted rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec, histories = trial_histories(experiment, storage)
    rows = table(spec, histories)
    metric = spec["search"]["metric"]
    grid = None
    if rows:
        store = _open(storage)
        fs = store.filesystem
        if fs is None:  # a local path
            fs = pafs.LocalFileSystem()
        best = best_result(experiment, storage)
        try:
            with fs.open_input_stream(_fs_path(store, best.checkpoint) + "/samples.png") as f:
                grid = plt.imread(io.BytesIO(f.read()), format="png")
        except FileNotFoundError:
            grid = None
    fig, axes = plt.subplots(1, 2 if grid is not None else 1, figsize=(13 if grid is not None else 8, 5),
                             squeeze=False)
    ax = axes[0][0]
    top = rows[0]["dir"] if rows else None
    palette = [f"C{i}" for i in range(10) if i != 3]  # red is the best trial's
    for i, (name, records) in enumerate(histories.items()):
        pts = [(r["iteration"], r[metric]) for r in records if isinstance(r.get(metric), (int, float))]
        if not pts:
            continue
        x, y = zip(*pts)
        style = {"lw": 2.5, "color": "C3", "zorder": 3, "label": f"best: {records[-1].get('trial_id')}"} \
            if name == top else {"lw": 1, "alpha": 0.7, "color": palette[i % len(palette)]}
        ax.plot(x, y, marker="o", ms=3, **style)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{experiment}: {len(histories)} trials ({spec['search']['algorithm']}, "
                 f"{spec['scheduler']['name']})")
    ax.grid(alpha=0.3)
    if top:
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
