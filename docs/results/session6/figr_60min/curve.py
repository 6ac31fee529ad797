"""The FIGR run's meta-val curve (metric against meta-iterations and loop time) from metrics.jsonl.

    python docs/results/session6/figr_60min/curve.py > docs/results/session6/figr_60min/curve.md
"""
import json
from pathlib import Path

records = [json.loads(line) for line in (Path(__file__).parent / "metrics.jsonl").open()]
loop_s = {r["iteration"]: r["loop_s"] for r in records if "loop_s" in r and "d_loss" in r}
print("| meta-iterations | loop time (min) | val KID | val Frechet | val fidelity % (chance control %) "
      "| val novelty | val precision | val recall |")
print("|---|---|---|---|---|---|---|---|")
for r in records:
    if "val_kid" in r and "test_kid" not in r:
        it = r["iteration"]
        print(f"| {it} | {loop_s[it] / 60:.1f} | {r['val_kid']:.3f} | {r['val_frechet_distance']:.1f} | "
              f"{100 * r['val_fidelity']:.1f} ({100 * r['val_chance_fidelity']:.1f}) | "
              f"{r['val_novelty']:.2f} | {r['val_precision']:.3f} | {r['val_recall']:.3f} |")
