"""Aggregate the 3-seed ProtoNet runs: mean and sd over seeds of meta-val, meta-test (5-way 1-shot,
non-transductive), per alphabet, and the 20-way within-alphabet one-shot error."""
import json, statistics, sys
from pathlib import Path
d = Path(sys.argv[1])
rows = []
for s in (0, 1, 2):
    r = json.loads((d / f"result_seed{s}.json").read_text())
    text = (d / f"within_alphabet_seed{s}.json").read_text()
    w = json.loads(text[text.index("{"):])
    rows.append((s, r, w))
def ms(xs):
    return f"{100*statistics.mean(xs):.1f} ± {100*statistics.stdev(xs):.1f}"
out = {"seeds": [s for s, _, _ in rows]}
val = [r["val_accuracy"] for _, r, _ in rows]; test = [r["test_accuracy"] for _, r, _ in rows]
wa = [w["accuracy"] for _, _, w in rows]
print("| seed | meta-val (%) | meta-test (%) | " + " | ".join(f"test {a} (%)" for a in sorted(rows[0][1]["test_per_alphabet"]["alphabets"])) + " | 20-way within-alphabet error (%) |")
print("|---|---|---|" + "---|" * len(rows[0][1]["test_per_alphabet"]["alphabets"]) + "---|")
for s, r, w in rows:
    per = r["test_per_alphabet"]["alphabets"]
    print(f"| {s} | {100*r['val_accuracy']:.1f} ± {100*r['val_ci95']:.1f} | {100*r['test_accuracy']:.1f} ± {100*r['test_ci95']:.1f} | "
          + " | ".join(f"{100*per[a]['accuracy']:.1f} ± {100*per[a]['ci95']:.1f}" for a in sorted(per))
          + f" | {100*w['error']:.1f} ± {100*w['ci95']:.1f} |")
alph = sorted(rows[0][1]["test_per_alphabet"]["alphabets"])
print(f"| mean ± sd over seeds | {ms(val)} | {ms(test)} | "
      + " | ".join(ms([r['test_per_alphabet']['alphabets'][a]['accuracy'] for _, r, _ in rows]) for a in alph)
      + f" | {ms([w['error'] for _, _, w in rows])} |")
print("iterations:", [r["iteration"] for _, r, _ in rows], "loop_s:", [round(r["loop_s"]) for _, r, _ in rows])
print("within-alphabet per alphabet (error %, seed 0):", {a: round(100*v["error"], 1) for a, v in rows[0][2]["alphabets"].items()}, "skipped:", rows[0][2].get("skipped"))
