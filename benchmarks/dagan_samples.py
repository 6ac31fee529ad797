"""DAGAN's pre-trained generator on unseen characters: how faithful its samples are, a grid of
them, and the DAGAN paper's low-data classifier experiment.

For each training seed the generator is the one `benchmarks/gan_table.py`'s FOMAML+DAGAN row
uses (configs/dagan.yaml's GAN on the un-jittered bundled data, pre-trained once per seed and
loaded from the cache; gan/pretrained.py), so nothing here trains it again.

1. Sample fidelity (metagan/gan/evaluation.py, per character, in the ProtoNet metric embedding
   trained on meta-train only): DAGAN's samples from gan.eval_shots support drawings of each of
   --characters meta-test characters, beside the support drawings under random affine jitter
   and real held-out drawings, on the same characters and sample sizes. Fidelity's chance is
   1/T; `chance_fidelity` is the measured control (samples scored against another character).

2. The low-data classifier (Antoniou et al. 2017, section 5.1): one plain conv4 classifier over
   all C unrotated meta-test characters, trained from scratch on k drawings per character, with
   no augmentation, with random affine jitter, or with --fakes DAGAN samples per real drawing
   (weight 1), and scored on the other drawings of the same characters (the same ones for
   every variant of a seed: paired). Batch norm at test from the real training drawings (non-
   transductive). Equal optimiser steps for every variant.

    python benchmarks/dagan_samples.py --seeds 0 1 2 --out docs/results/session6/dagan_samples \\
        --grid docs/dagan_samples_grid.png
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch
from gan_table import dagan_pretrain_steps, jitter, pretrained_dagan  # the table's DAGAN and jitter
from torch import nn

from metagan.config import parse_override
from metagan.data import Splits
from metagan.data.episodes import random_affine
from metagan.gan.dagan import DaganAugmented, sample_metrics
from metagan.gan.evaluation import (
    character_sets,
    evaluate_generation,
    metric_embedding,
    real_baseline,
)
from metagan.gan.grid import save_grid
from metagan.loop import EpisodeLoop
from metagan.models import Conv4, freeze_batch_norm
from metagan.runtime import tune_allocator

VARIANTS = ("none", "affine jitter", "DAGAN")


def fidelity_rows(loop: EpisodeLoop, method: DaganAugmented, characters: int, seed: int
                  ) -> dict[str, dict[str, float]]:
    """DAGAN's samples, the jitter baseline and real drawings on the same meta-test characters."""
    cfg, splits = loop.cfg, loop.splits
    embed = metric_embedding(cfg, splits, loop.device)
    common: dict[str, Any] = {"characters": characters, "seed": seed, "embed": embed}
    return {
        "DAGAN G": sample_metrics(method, splits, "test", **common),
        "support + affine jitter": evaluate_generation(
            cfg, splits, jitter(torch.Generator().manual_seed(seed)), "test", **common),
        "real held-out drawings": real_baseline(cfg, splits, "test", **common),
    }


def train_classifier(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int, seed: int,
                     reference: torch.Tensor, jitter_rng: torch.Generator | None) -> nn.Module:
    """A conv4 + linear head trained from scratch on (x, y) with Adam 1e-3, batches of 64."""
    torch.manual_seed(seed)
    model = Conv4(num_classes=classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x), (min(64, len(x)),), generator=rng)
        batch = x[idx] if jitter_rng is None else random_affine(x[idx], jitter_rng)
        loss = nn.functional.cross_entropy(model(batch), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    freeze_batch_norm(model, reference)  # test statistics from the real training drawings
    return model


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """1.0 / 0.0 per test drawing."""
    return (model(x).argmax(1) == y).float().tolist()


def low_data(splits: Splits, method: DaganAugmented, shots: int, fakes: int, steps: int,
             seed: int) -> dict[str, list[float]]:
    """Per test drawing correctness of each variant, trained on `shots` drawings per character."""
    support, held = character_sets(splits.test, 10_000, shots, np.random.default_rng(seed))
    classes = support.shape[0]
    x = support.flatten(0, 1)
    y = torch.arange(classes).repeat_interleave(shots)
    test_x = held.flatten(0, 1)
    test_y = torch.arange(classes).repeat_interleave(held.shape[1])
    out = {}
    for name in VARIANTS:
        tx, ty, jit = x, y, None
        if name == "DAGAN":
            # generate_for cycles through its sources: sample i is drawn from x[i % len(x)]
            fake = method.generate_for(x, fakes * len(x), torch.Generator().manual_seed(seed))
            tx, ty = torch.cat([x, fake]), torch.cat([y, y.repeat(fakes)])
        elif name == "affine jitter":
            jit = torch.Generator().manual_seed(seed)
        model = train_classifier(tx, ty, classes, steps, seed, x, jit)
        out[name] = correct(model, test_x, test_y)
    return out


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of a - b with its 95% t interval and paired t-test p (over the paired items)."""
    d = np.subtract(a, b)
    half = scipy.stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return {"diff": float(d.mean()), "ci95": float(half),
            "p": float(scipy.stats.ttest_1samp(d, 0.0).pvalue)}


def main(argv: list[str] | None = None) -> None:
    """Score every seed's generator, run the classifier experiment, write JSON and Markdown."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--characters", type=int, default=20, help="characters of the fidelity rows")
    p.add_argument("--shots", type=int, nargs="*", default=[1, 5],
                   help="k of the classifier (none: no classifier experiment)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override dotted keys of the DAGAN config (e.g. gan.g_lr=0.0003)")
    p.add_argument("--fakes", type=int, default=5, help="DAGAN samples per real drawing")
    p.add_argument("--steps", type=int, default=500, help="classifier optimiser steps")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help="DAGAN pre-training (default configs/dagan.yaml's; small: a smoke run)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--grid", default=None, help="PNG of the first seed's samples")
    args = p.parse_args(argv)
    overrides = dict(parse_override(item) for item in args.set)
    pretrain = args.pretrain_steps if args.pretrain_steps is not None else dagan_pretrain_steps()
    tune_allocator()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {"argv": argv, "torch": torch.__version__, "seeds": {}}
    for seed in args.seeds:
        start = time.perf_counter()
        loop = pretrained_dagan(seed, pretrain, overrides)
        method = loop.method
        assert isinstance(method, DaganAugmented)
        res: dict[str, Any] = {"pretraining": dict(method.pretraining),
                               "fidelity": fidelity_rows(loop, method, args.characters, seed),
                               "low_data": {}}
        for k in args.shots:
            res["low_data"][str(k)] = low_data(loop.splits, method, k, args.fakes, args.steps,
                                               seed)
        if args.grid and seed == args.seeds[0]:
            support, _ = character_sets(loop.splits.test, 6, 1, np.random.default_rng(1))
            rows = [method.generate_for(s, 9, torch.Generator().manual_seed(i))
                    for i, s in enumerate(support)]  # 9 samples from one drawing each
            cells = torch.cat([torch.cat([s, r]) for s, r in zip(support, rows)])
            save_grid(support[:, 0], cells, args.grid, columns=10)
        res["seconds"] = time.perf_counter() - start
        raw["seeds"][str(seed)] = res
        (out / "raw.json").write_text(json.dumps(raw, indent=1))
        print(f"seed {seed}: {res['seconds']:.0f} s", flush=True)
    text = report(raw, args)
    (out / "table.md").write_text(text)
    print(text)


def report(raw: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown tables: fidelity rows (mean ± sd over seeds), classifier accuracies and
    paired differences against no augmentation (over seeds x test drawings)."""
    seeds = raw["seeds"]
    lines = [f"`python benchmarks/dagan_samples.py {shlex.join(raw['argv'])}`, torch "
             f"{raw['torch']}, seeds {', '.join(seeds)}.", "",
             f"### DAGAN sample fidelity ({args.characters} meta-test characters per seed)", "",
             "| samples | fidelity % (chance control %) | KID | novelty | precision | recall |",
             "|---|---|---|---|---|---|"]
    for row in seeds[next(iter(seeds))]["fidelity"]:
        vals = {k: np.array([seeds[s]["fidelity"][row][k] for s in seeds])
                for k in ("fidelity", "chance_fidelity", "kid", "novelty", "precision", "recall")}
        sd = {k: v.std(ddof=1) if len(v) > 1 else 0.0 for k, v in vals.items()}
        lines.append(f"| {row} | {100 * vals['fidelity'].mean():.1f} ± "
                     f"{100 * sd['fidelity']:.1f} ({100 * vals['chance_fidelity'].mean():.1f}) | "
                     + " | ".join(f"{vals[k].mean():.3g} ± {sd[k]:.2g}"
                                  for k in ("kid", "novelty", "precision", "recall")) + " |")
    if not args.shots:
        return "\n".join(lines) + "\n"
    lines += ["", f"### Low-data classifier over all meta-test characters ({args.steps} Adam "
              f"steps, {args.fakes} DAGAN samples per real drawing; non-transductive)", "",
              "| drawings per character | augmentation | test accuracy % (per seed) | "
              "difference to none (points, 95% CI, paired t p) |", "|---|---|---|---|"]
    for k in args.shots:
        k = str(k)
        for name in VARIANTS:
            per = [100 * np.mean(seeds[s]["low_data"][k][name]) for s in seeds]
            cell = "-"
            if name != "none":
                a = sum((seeds[s]["low_data"][k][name] for s in seeds), [])
                b = sum((seeds[s]["low_data"][k]["none"] for s in seeds), [])
                d = paired(a, b)
                cell = f"{100 * d['diff']:+.1f} ± {100 * d['ci95']:.1f} (p = {d['p']:.2g})"
            lines.append(f"| {k} | {name} | {np.mean(per):.1f} "
                         f"({', '.join(f'{v:.1f}' for v in per)}) | {cell} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
