"""Does a search beat where it starts? A shipped space, a fixed budget, several search seeds.

For each search seed: `metagan search SPACE` on a local Ray with `search.time_budget_s` and
`search.seed` set, then the best stored checkpoint (the results store's answer, chosen on
meta-val only) is evaluated once on meta-test. The base config (the space's `base` with its
`set:`, i.e. the search's own first trial) is trained once with `metagan train` for the same
length and evaluated once on the same meta-test episodes (the evaluation tasks depend only on
train.seed and the split, and no shipped space searches train.seed): the comparison is paired.
Batch norm as configured (the default `model.batch_norm: support`: non-transductive).

A space with `search.confirm_top` (and `keep_base`) re-scores its own best trials (and the base
config's trial) as the search ends; the script prints that record. With --confirm-top K, each
search's K best trials are re-scored on --confirm-episodes meta-val
tasks and the best of those is evaluated too (metagan/confirm.py: less selection noise). A
search already stored under OUT is reused, and confirmed after the fact if it was not; every
checkpoint's meta-test accuracy is measured once and kept in OUT/test_evaluations.json.

Run it alone on the machine (a second busy process slows training about tenfold):

  python benchmarks/search_vs_base.py search_spaces/protonet.yaml --budget-s 1800 --seeds 0 1 2

Writes OUT/summary.json (and each search's JSON summary) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metagan.confirm import confirm_best  # noqa: E402
from metagan.results import Experiment  # noqa: E402
from metagan.run import load_loop, train  # noqa: E402
from metagan.space import load_spec  # noqa: E402


def search_name(space: Path, seed: int) -> str:
    """The experiment name of one seed's search."""
    return f"svb-{space.stem}-seed{seed}"


def run_search(space: Path, seed: int, budget_s: float, storage: Path, extra: list[str]) -> dict[str, Any]:
    """One budgeted search in its own process (its own local Ray); its JSON summary (a stored
    one is reused)."""
    name = search_name(space, seed)
    summary = storage / f"{name}.json"
    settings = {"budget_s": budget_s, "set": extra}
    stored_settings = storage / f"{name}.settings.json"
    if summary.is_file():
        if stored_settings.is_file() and json.loads(stored_settings.read_text()) != settings:
            sys.exit(f"error: {summary} was searched with {stored_settings.read_text().strip()}, "
                     f"not {json.dumps(settings)}: choose another --out")
        return json.loads(summary.read_text())
    stored_settings.write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "metagan.cli", "search", str(space), "--name", name,
           "--storage", str(storage), "--quiet", "--json", str(summary),
           "--set", f"search.seed={seed}", "--set", f"search.time_budget_s={budget_s}",
           *[a for s in extra for a in ("--set", s)]]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    out = json.loads(summary.read_text())
    out["search_wall_s"] = time.perf_counter() - start
    summary.write_text(json.dumps(out, indent=2, default=str))  # kept for a reuse
    return out


class TestEvaluations:
    """Meta-test accuracy per checkpoint, measured once and kept in a file."""

    def __init__(self, path: Path, episodes: int) -> None:
        self.path, self.episodes = path, episodes
        self.known: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def __call__(self, checkpoint: str) -> dict[str, float]:
        """The checkpoint's meta-test accuracy."""
        key = self.key(checkpoint)
        if key not in self.known:
            self.known[key] = load_loop(checkpoint).evaluate("test", self.episodes)
            self.path.write_text(json.dumps(self.known, indent=2))
        return self.known[key]

    def key(self, checkpoint: str) -> str:
        """A run directory is keyed by its result.json too (a retrained base is measured anew)."""
        result = Path(checkpoint, "result.json")
        stamp = hashlib.sha256(result.read_bytes()).hexdigest()[:12] if result.is_file() else ""
        return f"{checkpoint}@{self.episodes}@{stamp}"


def seed_from_summary(tests: TestEvaluations, summary: Path) -> None:
    """Take the meta-test results of an earlier summary.json into the cache (so that none is
    measured twice)."""
    if not summary.is_file():
        return
    old = json.loads(summary.read_text())
    if old.get("episodes") != tests.episodes:
        return
    space = Path(old["space"])
    found = [(str(summary.parent / f"base-{space.stem}"), old["base"]["test"])]
    for r in old["searches"]:  # an older summary names the checkpoint in the search's own
        search = summary.parent / "storage" / f"{search_name(space, r['seed'])}.json"
        if "checkpoint" in r or search.is_file():
            checkpoint = r.get("checkpoint") or json.loads(search.read_text())["best_checkpoint"]
            found.append((checkpoint, r["test"]))
    for checkpoint, result in found:
        tests.known.setdefault(tests.key(checkpoint), result)
    tests.path.write_text(json.dumps(tests.known, indent=2))


def confirmed_pick(storage: Path, name: str, top: int, episodes: int) -> dict[str, Any]:
    """The search's top trials re-scored on meta-val (stored in the experiment; done after the
    fact, and timed, when the search did not do it)."""
    found = Experiment.open(str(storage), name)
    record = found.confirmed()
    if record is not None and "base" in record:
        sys.exit(f"error: search {name} re-scored its trials itself (search.keep_base); "
                 "drop --confirm-top, which would replace that record")
    if record is None or (record["episodes"], record["top"]) != (episodes, top):
        start = time.perf_counter()
        confirm_best(found, top, episodes)
        record = found.confirmed()
        assert record is not None
        record["confirm_wall_s"] = time.perf_counter() - start
    return record


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
    ap.add_argument("--confirm-top", type=int, default=0,
                    help="re-score each search's K best trials on more meta-val tasks")
    ap.add_argument("--confirm-episodes", type=int, default=1000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    storage = args.out / "storage"
    storage.mkdir(exist_ok=True)
    tests = TestEvaluations(args.out / "test_evaluations.json", args.episodes)
    seed_from_summary(tests, args.out / "summary.json")

    spec = load_spec(args.space, args.overrides)
    base_cfg = spec.config_for({})
    base_run = args.out / f"base-{args.space.stem}"
    start = time.perf_counter()
    if not (base_run / "result.json").is_file():
        train(base_cfg, base_run)
    base = {"val": json.loads((base_run / "result.json").read_text()),
            "test": tests(str(base_run)), "train_wall_s": time.perf_counter() - start}

    rows = []
    for seed in args.seeds:
        found = run_search(args.space, seed, args.budget_s, storage, args.overrides)
        test = tests(found["best_checkpoint"])
        row = {"seed": seed, "best_trial": found["best_trial"], "best_val": found["best_value"],
               "best_params": found["best_params"], "best_iteration": found["best_iteration"],
               "checkpoint": found["best_checkpoint"], "test": test,
               # None for a summary stored before the script timed its searches
               "search_wall_s": found.get("search_wall_s"),
               "beats_base": test["accuracy"] >= base["test"]["accuracy"],
               # the space's own re-scoring (search.confirm_top, keep_base), if it has one
               "search_confirmed": found.get("confirmed")}
        if args.confirm_top:
            record = confirmed_pick(storage, search_name(args.space, seed), args.confirm_top,
                                    args.confirm_episodes)
            pick = record["best"]
            confirmed_test = tests(pick["checkpoint"])
            row["confirmed"] = {**record, "best": pick, "test": confirmed_test,
                                "beats_base": confirmed_test["accuracy"] >= base["test"]["accuracy"]}
        rows.append(row)
    summary = {"space": str(args.space), "budget_s": args.budget_s, "episodes": args.episodes,
               "batch_norm": base_cfg.model.batch_norm, "confirm_top": args.confirm_top,
               "confirm_episodes": args.confirm_episodes, "base": base, "searches": rows}
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
    for r in rows:
        c = r["search_confirmed"]
        if c and "base" in c:
            kept = c["best"]["key"] == c["base"]["key"]
            print(f"seed {r['seed']}: the search's re-scoring ({c['episodes']} meta-val tasks): base "
                  f"trial {c['base']['trial_id']} {c['base']['confirmed']:.4f} (iteration "
                  f"{c['base']['iteration']}); candidates "
                  + ", ".join(f"{x['trial_id']} {x['confirmed']:.4f} at {x['iteration']} "
                              f"({x['vs_base']['diff']:+.4f} "
                              f"+- {x['vs_base']['ci95']:.4f})" for x in c["candidates"])
                  + ("; the base is kept" if kept else f"; answer {c['best']['trial_id']}"))
    if args.confirm_top:
        print(f"\nthe {args.confirm_top} best trials of each search re-scored on "
              f"{args.confirm_episodes} meta-val tasks:")
        print("| search seed | chosen trial | its meta-val (re-scored) | its meta-test | test - base "
              "| at least base |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            c = r["confirmed"]
            t = c["test"]
            print(f"| {r['seed']} | {c['best']['trial_id']} | {c['best']['confirmed']:.4f} | "
                  f"{t['accuracy']:.4f} +- {t['ci95']:.4f} | {t['accuracy'] - b['accuracy']:+.4f} | "
                  f"{'yes' if c['beats_base'] else 'no'} |")


if __name__ == "__main__":
    main()
