"""Pixel statistics of real source drawings and of seed 0's DAGAN fakes from them (the FOMAML +
DAGAN rows' G, loaded from the cache): why the class term alone leaves a haze. Images are in
[0, 1], background 0.

    python docs/results/session16/background.py > docs/results/session16/background.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from gan_table import pretrained_dagan  # noqa: E402

torch.set_num_threads(1)
for label, overrides in {"paper G": {}, "class_weight 1": {"gan.class_weight": 1.0},
                         "class_weight 1, residual": {"gan.class_weight": 1.0,
                                                      "gan.residual": True}}.items():
    loop = pretrained_dagan(0, 300, overrides)
    source = loop.sampler.sample(1).support_x[0]
    with torch.no_grad():
        fake = loop.method.draw(source, torch.Generator().manual_seed(0))  # type: ignore[operator]
    for name, x in (("real sources", source), (f"fakes, {label}", fake)):
        print(f"{name:32s} median {x.median():.3f}  share < 0.1: {(x < 0.1).float().mean():.3f}"
              f"  share > 0.5: {(x > 0.5).float().mean():.3f}")
