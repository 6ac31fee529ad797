"""Sample fidelity of DAGAN's seed-0 generators on meta-VAL characters (the choice among the
session's generator options is made here, not on the meta-test characters of
benchmarks/dagan_samples.py). Each G is loaded from the cache (pre-trained by the runs of
docs/results/session16/); the metrics are those of dagan_samples.py's fidelity rows.

    python docs/results/session16/val_fidelity.py > docs/results/session16/val_fidelity.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from gan_table import pretrained_dagan  # noqa: E402  (the table's DAGAN rows' G)

from metagan.gan.dagan import DaganAugmented, sample_metrics  # noqa: E402
from metagan.gan.evaluation import metric_embedding  # noqa: E402

OPTIONS = {
    "paper G": {},
    "class_weight 1": {"gan.class_weight": 1.0},
    "class_weight 1, residual": {"gan.class_weight": 1.0, "gan.residual": True},
    "class_weight 1, residual, diversity_weight 0.1": {
        "gan.class_weight": 1.0, "gan.residual": True, "gan.diversity_weight": 0.1},
}

torch.set_num_threads(1)
out = {}
for label, overrides in OPTIONS.items():
    loop = pretrained_dagan(0, 300, overrides)
    assert isinstance(loop.method, DaganAugmented)
    embed = metric_embedding(loop.cfg, loop.splits, loop.device)
    out[label] = sample_metrics(loop.method, loop.splits, "val", characters=20, seed=0,
                                embed=embed)
print(json.dumps(out, indent=1))
