"""HyperOpt (TPE) + ASHA against random search without early stopping, at equal CPU time.

Both searches run one after the other on the same local Ray (2 CPUs, 2 trials at a time, one
CPU each) over the same space and the same wall-clock budget, so each gets the same CPU time.
Printed side by side:
  - the best meta-val accuracy each found;
  - the CPU time each spent before first reaching within 1 point of the best of both;
  - trials started / finished / stopped early;
  - the platform overhead: the fraction of the CPU time the search held that was not spent
    inside the episode loop (meta-training steps and meta-val evaluation).

  python benchmarks/search_efficiency.py [--space search_spaces/demo.yaml] [--budget 420]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metagan.runtime import tune_allocator  # noqa: E402
from metagan.space import load_spec  # noqa: E402
from metagan.storage import parse_storage  # noqa: E402
from metagan.tune.search import run_search  # noqa: E402

ARMS = {
    "hyperopt+asha": ["search.algorithm=hyperopt", "scheduler.name=asha"],
    "random, no early stopping": ["search.algorithm=random", "scheduler.name=none"],
}


def analyse(path: str, start: float, wall: float, cpus: int, iterations: int) -> dict:
    """Per-arm figures from the stored experiment (every report of every trial)."""
    from ray.tune import ExperimentAnalysis

    frames = ExperimentAnalysis(path).trial_dataframes
    reports = []
    loop_s = 0.0
    finished = early = 0
    for df in frames.values():
        if df is None or df.empty or "val_accuracy" not in df:
            continue
        loop_s += float(df["loop_s"].iloc[-1])
        finished += 1
        early += int(df["iteration"].iloc[-1] < iterations)
        for _, row in df.iterrows():
            reports.append((float(row["timestamp"]) - start, float(row["val_accuracy"])))
    reports.sort()
    return {"reports": reports, "best": max(a for _, a in reports), "trials": finished,
            "stopped_early": early, "wall_s": wall, "cpu_s": wall * cpus,
            "overhead": 1.0 - loop_s / (wall * cpus)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(ROOT / "search_spaces" / "demo.yaml"))
    p.add_argument("--budget", type=float, default=420.0, help="wall seconds per search")
    p.add_argument("--samples", type=int, default=200, help="trial cap (the budget binds first)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "search_efficiency.json"))
    args = p.parse_args()

    import ray

    tune_allocator()
    cpus = 2
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    storage_dir = tempfile.mkdtemp(prefix="metagan-bench-")
    results = {}
    for arm, sets in ARMS.items():
        spec = load_spec(args.space, [*sets, f"search.time_budget_s={args.budget}",
                                      f"search.num_samples={args.samples}",
                                      f"search.max_concurrent={cpus}", "resources.cpu=1"])
        storage = parse_storage(storage_dir)
        name = arm.split(",")[0].replace("+", "-")
        start = time.time()
        run_search(spec, name, storage, verbose=0)
        wall = time.time() - start
        results[arm] = analyse(storage.experiment_path(name), start, wall, cpus, spec.iterations)
        print(f"{arm}: {results[arm]['trials']} trials, best {results[arm]['best']:.4f}", flush=True)
    ray.shutdown()

    best = max(r["best"] for r in results.values())
    print(f"\nspace {Path(args.space).name}, {args.budget:.0f} s x {cpus} CPUs per search; "
          f"best of both = {best:.4f}\n")
    print(f"{'search':28s} {'best val acc':>12s} {'CPU s to within 1 pt':>21s} {'trials':>7s} "
          f"{'stopped early':>14s} {'overhead':>9s}")
    for arm, r in results.items():
        reached = next((t for t, a in r["reports"] if a >= best - 0.01), None)
        r["cpu_s_to_within_1pt"] = None if reached is None else reached * cpus
        shown = "not reached" if reached is None else f"{reached * cpus:.0f}"
        print(f"{arm:28s} {r['best']:12.4f} {shown:>21s} {r['trials']:7d} {r['stopped_early']:14d} "
              f"{r['overhead']:9.1%}")
        r.pop("reports")
    a, b = results.values()
    if a["cpu_s_to_within_1pt"] and b["cpu_s_to_within_1pt"]:
        print(f"\nCPU time to within 1 point, random / hyperopt+asha: "
              f"{b['cpu_s_to_within_1pt'] / a['cpu_s_to_within_1pt']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"space": args.space, "budget_s": args.budget,
                                          "cpus": cpus, "best_of_both": best, "arms": results},
                                         indent=2))


if __name__ == "__main__":
    main()
