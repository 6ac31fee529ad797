"""`metagan report`: learning curves of every trial, the best sample grid, a sorted table, and
two views of the searched parameters against the search's metric.

Given `--out OUT.png` it writes, side by side:

  OUT.png             every trial's learning curve (the best stored checkpoint's trial in red)
                      and, for a generating method, the best trial's sample grid
  OUT_parallel.png    parallel coordinates: one vertical axis per searched parameter (in the
                      stored space's order; log scale where the space is `loguniform`, the
                      choices of a `choice` or `grid` evenly spaced) and the metric last, one
                      line per trial coloured by its metric
  OUT_importance.png  each parameter's importance for the metric: optuna's fANOVA evaluator
                      (FanovaImportanceEvaluator: a random forest over the trials, the
                      variance each parameter explains alone), normalized to sum to 1 as
                      optuna.importance.get_param_importances does

A trial's metric in both views is the best value (by the search's mode) any of its reports gave,
with the parameters of that report (PBT changes them during a trial); reports of a diverged
step are left out, and so is a trial with no other report of the metric. The table's `best` is
the results store's answer instead: the trial's best stored checkpoint (`Experiment.ranking`).

Conditional choices: a parameter of a choice's sub-space is missing from the trials that drew
another branch. The parallel coordinates draw those trials dotted across its axis; the
importance covers only the parameters present in every trial (the choice itself stands
for its branches) and names the ones it left out. A view that cannot be drawn (no trial reported
the metric; for the importance fewer than 2 trials or parameters, equal metric values, optuna
not installed) is skipped with a one-line note, and an image of that name from an earlier report
is removed, so the images beside OUT.png always belong to it. The notes and the names of the
images written go to stderr (stdout is the table).
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError
from .results import SAMPLES_FILE, BestResult, Experiment, StoredCheckpoint, warn
from .space import GRID, Param, flatten_sample, parse_param

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

# What the views are written as, beside OUT.png: OUT_parallel.png, OUT_importance.png.
PARALLEL_SUFFIX = "_parallel"
IMPORTANCE_SUFFIX = "_importance"
# A parameter a trial does not have (a choice's branch it did not draw); None may be a choice.
ABSENT = object()


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


# --- the searched parameters against the metric ---------------------------------------------

class ViewSkipped(Exception):
    """A view that cannot be drawn from these trials; the message says why (one line)."""


@dataclass(frozen=True)
class Point:
    """One trial in the views: its best reported metric and the parameters it had then."""

    trial: str                  # Tune's trial id
    value: float
    params: dict[str, Any]      # searched key -> value (keys of branches it did not draw absent)


@dataclass(frozen=True)
class Dim:
    """One searched parameter as an axis and as an optuna distribution.

    `kind`: "categorical" (choice, grid: `choices`), "log" (loguniform), "int" (randint,
    integer quniform) or "float". The bounds are the space's, widened to every value seen.
    """

    key: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    choices: tuple[Any, ...] = ()

    def position(self, value: Any) -> float:
        """Where `value` lies on the axis, 0 (low) to 1 (high); NaN when ABSENT."""
        if value is ABSENT:
            return math.nan
        if self.kind == "categorical":
            if value not in self.choices:
                return math.nan
            n = len(self.choices)
            return 0.5 if n == 1 else self.choices.index(value) / (n - 1)
        lo, hi, v = self.low, self.high, float(value)
        if self.kind == "log":
            lo, hi, v = math.log(lo), math.log(hi), math.log(v)
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    def ticks(self, most: int = 5) -> list[tuple[float, str]]:
        """(position, label) pairs to write beside the axis."""
        if self.kind == "categorical":
            step = max(1, math.ceil(len(self.choices) / 12))
            return [(self.position(c), _label(c)) for c in self.choices[::step]]
        if self.low == self.high:
            return [(0.5, f"{self.low:.4g}")]
        if self.kind == "log":
            lo, hi = math.log(self.low), math.log(self.high)
            values = [math.exp(lo + (hi - lo) * i / (most - 1)) for i in range(most)]
        else:
            values = [self.low + (self.high - self.low) * i / (most - 1) for i in range(most)]
        if self.kind == "int":
            values = sorted({float(round(v)) for v in values})
        return [(self.position(v), f"{v:.4g}") for v in values]

    def distribution(self) -> BaseDistribution:
        """The optuna distribution of this parameter."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(self.low, self.high, log=self.kind == "log")


def _label(value: Any) -> Any:
    """A choice as optuna takes one (None, bool, int, float, str): others as their JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def searched_params(space: dict[str, Any]) -> list[Param]:
    """Every parameter of a stored space (a choice's sub-spaces after it), in the space's order;
    a key that appears in several branches once (its first)."""
    raw = space.get("space") or {}
    if not isinstance(raw, dict):
        raise ConfigError("the stored space's `space` section is not a mapping")
    out: dict[str, Param] = {}

    def walk(params: Sequence[Param]) -> None:
        for p in params:
            out.setdefault(p.key, p)
            for sub in (p.branches or {}).values():
                walk(sub)

    walk([parse_param(k, v, f"space.{k}") for k, v in raw.items()])
    return list(out.values())


def _clean(p: Param, value: Any) -> Any:
    """A stored value of `p` as the views take it, or ABSENT if it is not one `p` can have."""
    if p.kind in ("choice", "grid"):
        return _label(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ABSENT
    if p.kind == "loguniform" and value <= 0:
        return ABSENT
    if _is_int(p):
        return int(value) if float(value).is_integer() else ABSENT
    return float(value)


def _is_int(p: Param) -> bool:
    return p.kind == "randint" or (p.kind == "quniform" and all(isinstance(a, int) for a in p.args))


def dims(params: Sequence[Param], points: Sequence[Point]) -> list[Dim]:
    """The axes of the parameters some point has, bounds widened to the values seen."""
    out = []
    for p in params:
        seen = [pt.params[p.key] for pt in points if p.key in pt.params]
        if not seen:
            continue
        if p.kind in ("choice", "grid"):
            choices = tuple(dict.fromkeys([*(_label(a) for a in p.args), *seen]))
            out.append(Dim(p.key, "categorical", choices=choices))
            continue
        lo, hi = p.args[0], p.args[1] - 1 if p.kind == "randint" else p.args[1]
        kind = "log" if p.kind == "loguniform" else "int" if _is_int(p) else "float"
        out.append(Dim(p.key, kind, min(lo, *seen), max(hi, *seen)))
    return out


def trial_points(histories: dict[str, list[dict[str, Any]]], params: Sequence[Param],
                 metric: str, mode: str) -> list[Point]:
    """Per trial that reported `metric` (outside a diverged step), its best value and the
    searched parameters of the report that gave it."""
    sign = 1.0 if mode == "max" else -1.0
    by_key = {p.key: p for p in params}
    points = []
    for name, records in histories.items():
        best: dict[str, Any] | None = None
        for r in records:
            v = r.get(metric)
            if r.get("diverged") or isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or not math.isfinite(v):
                continue
            if best is None or sign * v > sign * best[metric]:
                best = r
        if best is None:
            continue
        config = best.get("config")
        config = config.get(GRID, config) if isinstance(config, dict) else {}
        flat = flatten_sample(config) if isinstance(config, dict) else {}
        values = {k: _clean(by_key[k], v) for k, v in flat.items() if k in by_key}
        points.append(Point(str(best.get("trial_id", name)), float(best[metric]),
                            {k: v for k, v in values.items() if v is not ABSENT}))
    return points


@dataclass
class Importance:
    """fANOVA importances (normalized to sum to 1), largest first, and the parameters left out."""

    values: dict[str, float]
    left_out: list[str] = field(default_factory=list)   # not in every trial (conditional)
    trials: int = 0


def param_importance(points: Sequence[Point], axes: Sequence[Dim], mode: str,
                     seed: int = 0) -> Importance:
    """Each parameter's importance by optuna's fANOVA evaluator over an in-memory study holding
    the trials, normalized to sum to 1 (optuna.importance.get_param_importances). Like optuna's,
    it covers the parameters present in every trial. ViewSkipped when it cannot say anything
    (see the module docstring)."""
    if len(points) < 2:
        raise ViewSkipped(f"{len(points)} trial(s) reported the metric; it needs 2 or more")
    common = [d.key for d in axes if all(d.key in pt.params for pt in points)]
    left_out = [d.key for d in axes if d.key not in common]
    if len(common) < 2:
        gone = f" ({', '.join(left_out)} not in every trial)" if left_out else ""
        raise ViewSkipped(f"{len(common)} parameter(s) in every trial{gone}; it needs 2 or more")
    if len({pt.value for pt in points}) < 2:
        raise ViewSkipped("every trial has the same metric value")
    try:
        import optuna
        from optuna.importance import FanovaImportanceEvaluator

        evaluator = FanovaImportanceEvaluator(seed=seed)  # needs scikit-learn
    except ImportError as e:
        what = e.name or str(e).splitlines()[0]
        raise ViewSkipped(f"{what} is not installed (pip install 'metagan[report]')") from None
    distributions = {d.key: d.distribution() for d in axes}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for pt in points:
            study.add_trial(optuna.trial.create_trial(
                params=pt.params, distributions={k: distributions[k] for k in pt.params},
                value=pt.value))
        try:  # normalized: the shares sum to 1, as optuna's plot_param_importances shows them
            values = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                             params=common, normalize=True)
        except RuntimeError as e:  # a forest with no variance at all
            raise ViewSkipped(f"fANOVA found no variance to explain ({e})") from None
    finally:
        optuna.logging.set_verbosity(verbosity)
    return Importance({k: float(v) for k, v in values.items()}, left_out, len(points))


def view_paths(out: str | Path) -> tuple[Path, Path]:
    """Where the parallel-coordinates and importance images of report OUT.png go."""
    out = Path(out)
    return (out.with_name(out.stem + PARALLEL_SUFFIX + out.suffix),
            out.with_name(out.stem + IMPORTANCE_SUFFIX + out.suffix))


def draw_parallel(points: Sequence[Point], axes: Sequence[Dim], metric: str, mode: str,
                  title: str, path: Path) -> None:
    """The parallel-coordinates PNG (one line per trial, the metric's axis last)."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    values = [pt.value for pt in points]
    lo, hi = min(values), max(values)
    pad = 0.0 if hi > lo else (abs(lo) * 0.01 or 0.01)
    metric_axis = Dim(metric, "float", lo - pad, hi + pad)
    columns = [*axes, metric_axis]
    norm = Normalize(metric_axis.low, metric_axis.high)
    cmap = plt.get_cmap("viridis" if mode == "max" else "viridis_r")  # bright: better
    sign = 1.0 if mode == "max" else -1.0
    order = sorted(points, key=lambda pt: sign * pt.value)  # the best drawn last, on top
    fig, ax = plt.subplots(figsize=(max(6.5, 1.7 * len(columns) + 2.5), 5.5))
    xs = list(range(len(columns)))
    for pt in order:
        ys = [d.position(pt.params.get(d.key, ABSENT)) for d in axes] + [metric_axis.position(pt.value)]
        best = pt is order[-1]
        color = "C3" if best else cmap(norm(pt.value))
        ax.plot(xs, ys, color=color, lw=2.5 if best else 1.3, alpha=1.0 if best else 0.8,
                marker="o", ms=4 if best else 3, zorder=3 if best else 2,
                label=f"best reported: trial {pt.trial} ({metric} = {pt.value:.4g})" if best else None)
        if any(math.isnan(y) for y in ys):  # dotted across the gaps: still one line per trial
            present = [(x, y) for x, y in zip(xs, ys) if not math.isnan(y)]
            ax.plot(*zip(*present), color=color, lw=1, ls=":", alpha=0.6, zorder=1)
    for x, d in enumerate(columns):
        ax.axvline(x, color="0.35", lw=1, zorder=1)
        for y, text in d.ticks():
            ax.text(x + 0.04, y, str(text), fontsize=7, va="center", ha="left", zorder=4,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    names = [d.key + (" (log)" if d.kind == "log" else "") for d in axes] + [metric]
    ax.set_xticks(xs, labels=names, rotation=15, ha="right")
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(columns) - 0.4)
    ax.set_ylim(-0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    missing = any(d.key not in pt.params for d in axes for pt in points)
    ax.set_title(title + ("\n(dotted: across a parameter not in the trial's branch of a choice)"
                          if missing else ""), fontsize=10)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label=f"{metric} (best reported, {mode})",
                 pad=0.02)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend lies below the axes
    plt.close(fig)


def draw_importance(importance: Importance, metric: str, title: str, path: Path) -> None:
    """The importance PNG: one horizontal bar per parameter, the largest on top."""
    import matplotlib.pyplot as plt

    keys = list(importance.values)[::-1]
    shares = [importance.values[k] for k in keys]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(keys)))
    ax.barh(keys, shares, color="C0")
    for y, share in enumerate(shares):
        ax.text(share, y, f" {share:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(shares) * 1.15))
    ax.set_xlabel(f"importance for {metric} (fANOVA, normalized to sum to 1)")
    extra = f"\nnot in every trial, left out: {', '.join(importance.left_out)}" \
        if importance.left_out else ""
    ax.set_title(title + extra, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class Views:
    """What `write_views` wrote: paths (None: skipped) and the importance it computed."""

    parallel: Path | None = None
    importance: Path | None = None
    importances: Importance | None = None
    notes: list[str] = field(default_factory=list)


def write_views(found: Experiment, histories: dict[str, list[dict[str, Any]]],
                out: str | Path, note: Callable[[str], None] | None = None) -> Views:
    """The parallel-coordinates and importance images of report `out` (see the module
    docstring); each skipped view is one line to `note` (default: stderr)."""
    say = note or _stderr
    views = Views()

    def tell(message: str) -> None:
        views.notes.append(message)
        say(message)

    parallel_path, importance_path = view_paths(out)
    metric, mode = found.metric, found.mode
    try:
        params = searched_params(found.space)
    except ConfigError as e:
        params = []
        tell(f"parallel coordinates and importance skipped: {e}")
    points = trial_points(histories, params, metric, mode) if params else []
    axes = dims(params, points)
    n = f"{len(points)} trial{'s' if len(points) != 1 else ''}"
    if params and not points:
        tell(f"parallel coordinates and importance skipped: no trial reported {metric}")
    elif params and not axes:
        tell("parallel coordinates and importance skipped: no trial's results hold its parameters")
    elif params:
        draw_parallel(points, axes, metric, mode, f"{found.name}: {n}, the searched parameters "
                      f"against {metric} ({mode})", parallel_path)
        views.parallel = parallel_path
        tell(f"wrote {parallel_path}")
        try:
            views.importances = param_importance(points, axes, mode)
        except ViewSkipped as e:
            tell(f"parameter importance skipped: {e}")
        else:
            draw_importance(views.importances, metric, f"{found.name}: parameter importance for "
                            f"{metric} over {n}", importance_path)
            views.importance = importance_path
            tell(f"wrote {importance_path}")
    elif not found.space.get("space"):
        tell("parallel coordinates and importance skipped: the space searches no parameter")
    for path, written in ((parallel_path, views.parallel), (importance_path, views.importance)):
        if written is None:
            path.unlink(missing_ok=True)  # an earlier report's image would not be this one's
    return views


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def write_report(experiment: str, storage: str, out: str | Path,
                 note: Callable[[str], None] | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """The PNG (curves + best grid if the method generates) and the sorted rows; beside it the
    parallel-coordinates and importance images (`write_views`; its notes to `note`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = Experiment.open(storage, experiment, on_damaged=warn)
    spec, histories = found.space, found.histories()
    metric = found.metric
    ranking = found.ranking()
    rows = table(histories, ranking, metric)
    best: BestResult | None = found.best() if ranking else None
    for row in rows:  # the search's answer (a re-scored winner need not be the top row)
        row["chosen"] = best is not None and row["checkpoint"] == best.checkpoint
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
        chosen = (f"chosen: {metric} = {best.value:.4f} ({best.confirmed:.4f} re-scored on "
                  f"{best.confirmed_episodes} tasks)" if best.confirmed is not None
                  else f"best stored checkpoint: {metric} = {best.value:.4f}")
        ax.plot([best.iteration], [best.value], marker="*", ms=14, color="C3", zorder=4, ls="none",
                label=chosen)
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
    write_views(found, histories, out, note)
    return out, rows
