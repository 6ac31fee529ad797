"""Meta-val selection of a few-shot generator's adaptation length: load a checkpoint, score
`EpisodeLoop.evaluate("val", 20, adapt_steps=N)` for each N (what `metagan evaluate --split val
--adapt-steps N` prints), one torch thread, one JSON line per length. Meta-test is not read.

    python docs/results/session10/adapt_sweep.py RUN_DIR/checkpoints/last 0,10,25,50,100,200,400
"""
import json
import sys
import time

import torch

torch.set_num_threads(1)
from metagan.run import load_loop  # noqa: E402

loop = load_loop(sys.argv[1])
for steps in [int(x) for x in sys.argv[2].split(",")]:
    t = time.time()
    r = loop.evaluate("val", 20, adapt_steps=steps)
    print(json.dumps({"steps": steps, "s": round(time.time() - t, 1), "iteration": loop.iteration,
                      **r}), flush=True)
