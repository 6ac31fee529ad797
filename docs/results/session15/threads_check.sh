#!/bin/bash
# Does torch's thread count change a seeded run? The same tiny ProtoNet config (tests/conftest.py,
# 30 updates, width 64) trained with 1, 2 and again 2 intra-op threads, in separate processes;
# then the final weights compared tensor by tensor. Run from the repository root.
set -e
rm -rf /tmp/threads_check && mkdir -p /tmp/threads_check
for r in "1 a" "2 b" "2 c"; do
  set -- $r
  .venv/bin/python -c "
import sys, torch
sys.path.insert(0, '.')
torch.set_num_threads($1)
from tests.conftest import tiny_config
from metagan.run import train
train(tiny_config(**{'train.iterations': 30, 'model.hidden': 64}), '/tmp/threads_check/$2')
" > /dev/null 2>&1
done
.venv/bin/python - <<'PY'
import torch
def flat(d, p=""):
    out = {}
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, (list, tuple)) else []
    for k, v in items:
        if isinstance(v, torch.Tensor): out[p + str(k)] = v
        else: out.update(flat(v, p + str(k) + "."))
    return out
s = {k: flat(torch.load(f"/tmp/threads_check/{k}/checkpoints/last/state.pt", weights_only=True)["method"]) for k in "abc"}
for x, y, what in (("a", "b", "1 vs 2 threads"), ("b", "c", "2 vs 2 threads"), ("a", "c", "1 vs 2 threads")):
    same = all(torch.equal(s[x][k], s[y][k]) for k in s[x])
    md = max((s[x][k].float() - s[y][k].float()).abs().max().item() for k in s[x])
    print(what + ":", "identical" if same else f"differ (largest difference {md:.3g})")
PY
