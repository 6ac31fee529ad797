"""Paired meta-test differences: each session-15 search's answer minus the base run, per task on
the same 600 episodes (every checkpoint here was already evaluated once by search_vs_base.py;
this re-reads the same episodes per task and selects nothing).

  python docs/results/session15/paired_answers.py > docs/results/session15/paired_answers.json
"""
import json
import sys

sys.path.insert(0, ".")
from metagan.loop import mean_ci95  # noqa: E402
from metagan.run import load_loop  # noqa: E402

OUT = "/work/searches/protonet15"
summary = json.load(open(f"{OUT}/summary.json"))
base = load_loop(f"{OUT}/base-protonet").task_accuracies("test", 600)
rows, per_checkpoint = {"base": mean_ci95(base)}, {}
for s in summary["searches"]:
    path = s["checkpoint"]
    if path not in per_checkpoint:
        per_checkpoint[path] = load_loop(path).task_accuracies("test", 600)
    answer = per_checkpoint[path]
    rows[f"seed{s['seed']}"] = {"checkpoint": path, "iteration": s["best_iteration"],
                                "answer": mean_ci95(answer),
                                "answer_minus_base": mean_ci95(answer - base)}
print(json.dumps(rows, indent=1))
