"""Does a search beat where it starts? A shipped space, a fixed budget, several search seeds.

For each search seed: `metagan search SPACE` on a local Ray with `search.time_budget_s` and
`search.seed` set, then the best stored checkpoint (the results store's answer, chosen on
meta-val only) is evaluated once on meta-test. The base config (the space's `base` with its
`set:`, i.e. the search's own first trial) is trained once with `metagan train` for the same
length and evaluated once on the same meta-test episodes (the evaluation tasks depend only on
train.seed and the split, and no shipped space searches train.seed): the comparison is paired.
Batch norm as configured (the default `model.batch_norm: support`: non-transductive).

Run it alone on the machine (a second busy process slows training about tenfold):

  python benchmarks/search_vs_base.py search_spaces/protonet.yaml --budget-s 1800 --seeds 0 1 2

Writes OUT/summary.json (and each search's JSON summary) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metagan.run import load_loop, train  # noqa: E402
from metagan.space import load_spec  # noqa: E402


def run_search(space: Path, seed: int, budget_s: float, storage: Path, extra: list[str]) -> dict[str, Any]:
    """One budgeted search in its own process (its own local Ray); its JSON summary."""
    name = f"svb-{space.stem}-seed{seed}"
    summary = storage / f"{name}.json"
    cmd = [sys.executable, "-m", "metagan.cli", "search", str(space), "--name", name,
           "--storage", str(storage), "--quiet", "--json", str(summary),
           "--set", f"search.seed={seed}", "--set", f"search.time_budget_s={budget_s}",
           *[a for s in extra for a in ("--set", s)]]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    out = json.loads(summary.read_text())
    out["search_wall_s"] = time.perf_counter() - start
    return out


def test_accuracy(checkpoint: str, episodes: int) -> dict[str, float]:
    """Meta-test accuracy of a stored checkpoint, measured once."""
    return load_loop(checkpoint).evaluate("test", episodes)


def main() -> None:
    """Searches per seed, the base config once, and the paired comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("space", type=Path)
    ap.add_argument("--budget-s", type=float, default=1800.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episodes", type=int, default=600, help="meta-test episodes")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra --set for every search (e.g. search.max_concurrent=2)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "search_vs_base")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    storage = args.out / "storage"
    storage.mkdir(exist_ok=True)

    spec = load_spec(args.space, args.overrides)
    base_cfg = spec.config_for({})
    base_run = args.out / f"base-{args.space.stem}"
    start = time.perf_counter()
    if not (base_run / "result.json").is_file():
        train(base_cfg, base_run)
    base = {"val": json.loads((base_run / "result.json").read_text()),
            "test": test_accuracy(str(base_run), args.episodes),
            "train_wall_s": time.perf_counter() - start}

    rows = []
    for seed in args.seeds:
        found = run_search(args.space, seed, args.budget_s, storage, args.overrides)
        test = test_accuracy(found["best_checkpoint"], args.episodes)
        rows.append({"seed": seed, "best_trial": found["best_trial"],
                     "best_val": found["best_value"], "best_params": found["best_params"],
                     "best_iteration": found["best_iteration"],
                     "test": test, "search_wall_s": found["search_wall_s"],
                     "beats_base": test["accuracy"] >= base["test"]["accuracy"]})
    summary = {"space": str(args.space), "budget_s": args.budget_s, "episodes": args.episodes,
               "batch_norm": base_cfg.model.batch_norm, "base": base, "searches": rows}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    b = base["test"]
    print(f"base config: meta-val {base['val'].get('val_accuracy', float('nan')):.4f}, "
          f"meta-test {b['accuracy']:.4f} +- {b['ci95']:.4f} ({args.episodes} episodes)")
    print("| search seed | best meta-val | its meta-test | test - base | at least base |")
    print("|---|---|---|---|---|")
    for r in rows:
        t = r["test"]
        print(f"| {r['seed']} | {r['best_val']:.4f} | {t['accuracy']:.4f} +- {t['ci95']:.4f} | "
              f"{t['accuracy'] - b['accuracy']:+.4f} | {'yes' if r['beats_base'] else 'no'} |")


if __name__ == "__main__":
    main()
