"""Exploratory, meta-val only: does a larger test-time adaptation rate reach the 800-step
fidelity in fewer steps? Loads a checkpoint, replaces gan.inner_lr in the method's config for
adaptation only (meta-training used 1e-3), and scores `EpisodeLoop.evaluate("val", 20,
adapt_steps=N)`. One JSON line per (lr, N).

    python docs/results/session10/adapt_lr_probe.py RUN/checkpoints/last 0.01,0.003 10,25,50,80
"""
import dataclasses
import json
import sys
import time

import torch

torch.set_num_threads(1)
from metagan.run import load_loop  # noqa: E402

loop = load_loop(sys.argv[1])
base = loop.method.cfg
for lr in [float(x) for x in sys.argv[2].split(",")]:
    loop.method.cfg = dataclasses.replace(base, gan=dataclasses.replace(base.gan, inner_lr=lr))
    for steps in [int(x) for x in sys.argv[3].split(",")]:
        t = time.time()
        r = loop.evaluate("val", 20, adapt_steps=steps)
        print(json.dumps({"lr": lr, "steps": steps, "s": round(time.time() - t, 1),
                          "iteration": loop.iteration, **r}), flush=True)
