"""Paired differences between any two rows of merged gan_table raw files (gan_table.py's own
`paired`: a t-test over all seed x episode pairs and a t interval over the per-seed means).

    python docs/results/session17/pairs.py RAW [RAW ...] --pair 'A|B' [--pair 'C|D'] --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from gan_table import merge_raw, paired  # noqa: E402


def main() -> None:
    """Print one Markdown row per --pair and write them as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("raw", nargs="+")
    p.add_argument("--pair", action="append", required=True, help="'A|B': A minus B")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    raw = merge_raw(args.raw)
    rows = []
    print("| comparison | seeds | difference | 95% CI (episodes) | p (paired t) | 95% CI (seeds) | per seed | seeds better |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.pair:
        a, b = spec.split("|")
        acc = {name: {int(s): v["classification"][name]["episode_accuracies"]
                      for s, v in raw["seeds"].items() if name in v["classification"]}
               for name in (a, b)}
        seeds = sorted(set(acc[a]) & set(acc[b]))
        d = paired({s: acc[a][s] for s in seeds}, {s: acc[b][s] for s in seeds})
        rows.append({"a": a, "b": b, "seeds": seeds, **d})
        seed_ci = "n/a" if d["ci95_seeds"] is None else f"± {100 * d['ci95_seeds']:.1f}"
        print(f"| {a} - {b} | {', '.join(map(str, seeds))} | {100 * d['mean_difference']:+.1f} | "
              f"± {100 * d['ci95_episodes']:.1f} | {d['p_paired_t']:.2g} | {seed_ci} | "
              f"{', '.join(f'{100 * x:+.1f}' for x in d['per_seed'])} | "
              f"{d['seeds_better']}/{len(seeds)} |")
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
