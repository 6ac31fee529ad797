"""The adaptation length selected on meta-val: per conditioning, the mean over seeds of the
meta-val fidelity at each length scored by adapt_sweep.py (adapt_sweep/<name>.jsonl, one line
per length; lengths every seed has), and the argmax. Writes adapt_sweep/selection.md.

    python docs/results/session10/select_steps.py
"""
import json
from pathlib import Path

HERE = Path(__file__).parent / "adapt_sweep"
GROUPS = {"set": "gan.condition: set (session 9, 1500 meta-iterations)",
          "weights": "gan.condition: weights, FIGR as shipped (session 8, 2500)"}

lines = ["# Adaptation length on meta-val (20 characters, k = 5, 7 samples each)", "",
         "Written by `python docs/results/session10/select_steps.py` from adapt_sweep/*.jsonl.", ""]
selected = {}
for group, title in GROUPS.items():
    runs = {}
    for f in sorted(HERE.glob(f"{group}_seed*.jsonl")):
        runs[f.stem] = {r["steps"]: r for r in map(json.loads, f.read_text().splitlines())}
    if not runs:
        continue
    steps = sorted(set.intersection(*(set(r) for r in runs.values())))
    lines += [f"## {title}", "", "| steps | fidelity % (mean) | per seed | KID (mean) | novelty (mean) |",
              "|---|---|---|---|---|"]
    means = {}
    for s in steps:
        fid = [runs[n][s]["fidelity"] for n in runs]
        kid = [runs[n][s]["kid"] for n in runs]
        nov = [runs[n][s]["novelty"] for n in runs]
        means[s] = sum(fid) / len(fid)
        lines.append(f"| {s} | {100 * means[s]:.1f} | {', '.join(f'{100 * x:.1f}' for x in fid)} | "
                     f"{sum(kid) / len(kid):.3f} | {sum(nov) / len(nov):.2f} |")
    best = max(steps, key=lambda s: (means[s], -s))  # ties go to the shorter length
    selected[group] = best
    lines += ["", f"Selected: **{best} steps** (highest mean meta-val fidelity over "
              f"{len(runs)} seeds: {', '.join(runs)}).", ""]
(HERE / "selection.md").write_text("\n".join(lines))
print("\n".join(lines))
print(json.dumps(selected))
