"""Session 14's three stored ProtoNet searches re-scored with session 15's rule (meta-val only).

Every stored checkpoint of the 4 best trials and of the base trial is scored on the same 1000
meta-val tasks (metagan/confirm.py at the commit this file was added in); a trial stands for its
latest checkpoint unless an earlier one beats it by a paired 95% interval. Meta-test is not
read. Run on a copy of the storage (confirm_best rewrites confirmed.json):

  cp -r /work/searches/protonet14/storage /tmp/reanalysis/storage
  python docs/results/session15/reanalysis_session14.py > docs/results/session15/reanalysis_session14.log
"""
import json
import time
from pathlib import Path

from metagan.confirm import confirm_best
from metagan.results import Experiment
from metagan.space import load_spec

spec = load_spec("search_spaces/protonet.yaml")
out = {}
for seed in (0, 1, 2):
    start = time.perf_counter()
    found = Experiment.open("/tmp/reanalysis/storage", f"svb-protonet-seed{seed}")
    rec = confirm_best(found, 4, 1000, "cpu", base=spec.base_point())
    b = rec["base"]
    print(f"seed {seed}: base trial {b['trial_id']} checkpoints (iteration, re-scored, vs latest): "
          + ", ".join(f"({k['iteration']}, {k['confirmed']:.4f}, {k['vs_latest']['diff']:+.4f} "
                      f"+- {k['vs_latest']['ci95']:.4f})" for k in b["checkpoints"])
          + f"; it stands for iteration {b['iteration']}; the answer: "
          + ("the base" if rec["best"] == b["key"] else rec["best"])
          + f" ({time.perf_counter() - start:.0f} s)")
    for c in rec["candidates"]:
        print(f"  candidate {c['trial_id']}: "
              + ", ".join(f"({k['iteration']}, {k['confirmed']:.4f})" for k in c["checkpoints"])
              + f"; stands for {c['iteration']}; vs base {c['vs_base']['diff']:+.4f} "
                f"+- {c['vs_base']['ci95']:.4f}")
    out[seed] = rec
Path("docs/results/session15/reanalysis_session14.json").write_text(json.dumps(out, indent=1))
