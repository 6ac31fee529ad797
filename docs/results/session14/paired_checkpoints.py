"""Paired meta-test difference between the base run's final checkpoint (1300) and the base trial's
best-report checkpoint (1000) that every session-14 search answered with: the same 600 episodes,
per task (both already evaluated once; this re-reads the same episodes per task, selects nothing)."""
import glob, json, sys
sys.path.insert(0, ".")
from metagan.loop import mean_ci95
from metagan.run import load_loop
base = "/work/searches/protonet14/base-protonet"
answer = glob.glob("/work/searches/protonet14/storage/svb-protonet-seed0/EpisodeTrainable_d759f653*/checkpoint_000009")[0]
a = load_loop(base).task_accuracies("test", 600)
b = load_loop(answer).task_accuracies("test", 600)
out = {"base_final_1300": mean_ci95(a), "answer_1000": mean_ci95(b), "answer_minus_base": mean_ci95(b - a)}
print(json.dumps(out, indent=1))
