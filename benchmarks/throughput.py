"""Meta-training tasks per second: batched (torch.func) learners vs a plain per-task loop.

Both sides use the same conv4 network, the same episodes and the same optimiser; the
per-task loop is what public meta-learning libraries do: for each task, clone the weights,
adapt, evaluate on the query set, backward, then one meta-update for the meta-batch.

fewshot_gan (gan/fewshot.py, FIGR's settings of configs/fewshot_gan.yaml: Reptile over (G, D),
WGAN-GP inner loop) is measured the same way: its batched meta-iteration (every character of
the meta-batch in one vmap, the penalty by torch.func) against a loop over characters that
copies G and D, runs the inner loop with torch.optim.SGD and torch.autograd (the penalty by
autograd.grad, as FIGR's code; metagan/gan/reference.py, the loop the tests check the batched
one against) and accumulates the Reptile direction, then one Adam step. A
task there is one character (meta-batch x ways of them).

    python benchmarks/throughput.py [--queries 1] [--meta-batch 32] [--iterations 5]
                                    [--fewshot-meta-batch N]  # default: the config's
    python benchmarks/throughput.py --quick   # a smoke run of seconds: small sizes
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from metagan.config import DataConfig, MetaConfig, load_config
from metagan.data import load_splits
from metagan.data.episodes import Episode, TaskSampler
from metagan.gan.fewshot import FewShotGan
from metagan.gan.reference import per_task_meta_step
from metagan.meta import REGISTRY, build_learner
from metagan.meta.base import make_optimizer
from metagan.meta.protonet import prototypes, squared_distance_logits
from metagan.models import Conv4
from metagan.runtime import tune_allocator

FEWSHOT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fewshot_gan.yaml"
SETTINGS = {
    "maml": MetaConfig(algorithm="maml", inner_lr=0.4, inner_steps=1),
    "fomaml": MetaConfig(algorithm="fomaml", inner_lr=0.4, inner_steps=1),
    "reptile": MetaConfig(algorithm="reptile", inner_lr=0.1, inner_steps=5),
    "protonet": MetaConfig(algorithm="protonet"),
}


def per_task_step(name: str, model: Conv4, cfg: MetaConfig, ep: Episode) -> None:
    """One meta-iteration, one task at a time; leaves the meta-gradient in .grad."""
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    b_total = ep.num_tasks
    for b in range(b_total):
        if name in ("maml", "fomaml"):
            fast = params
            for _ in range(cfg.inner_steps):
                loss = F.cross_entropy(functional_call(model, dict(zip(names, fast)),
                                                       (ep.support_x[b],)), ep.support_y[b])
                grads = torch.autograd.grad(loss, fast, create_graph=name == "maml")
                fast = [p - cfg.inner_lr * g for p, g in zip(fast, grads)]
            logits = functional_call(model, dict(zip(names, fast)), (ep.query_x[b],))
            (F.cross_entropy(logits, ep.query_y[b]) / b_total).backward()
        elif name == "reptile":
            clone = copy.deepcopy(model)
            opt = torch.optim.SGD(clone.parameters(), lr=cfg.inner_lr)
            x = torch.cat([ep.support_x[b], ep.query_x[b]])
            y = torch.cat([ep.support_y[b], ep.query_y[b]])
            for _ in range(cfg.inner_steps):
                opt.zero_grad()
                F.cross_entropy(clone(x), y).backward()
                opt.step()
            for p, q in zip(params, clone.parameters()):
                diff = (p.detach() - q.detach()) / b_total
                p.grad = diff if p.grad is None else p.grad + diff
        else:
            z = model(torch.cat([ep.support_x[b], ep.query_x[b]]))
            n = ep.support_x.shape[1]
            logits = squared_distance_logits(z[n:], prototypes(z[:n], ep.support_y[b], ep.ways))
            (F.cross_entropy(logits, ep.query_y[b]) / b_total).backward()


def fewshot_row(args: argparse.Namespace, device: torch.device) -> None:
    """Print fewshot_gan's batched and per-character tasks/s (configs/fewshot_gan.yaml)."""
    overrides = [f"task.meta_batch={args.fewshot_meta_batch}"] if args.fewshot_meta_batch else []
    if args.quick:
        overrides += ["task.meta_batch=2", "gan.width=8", "gan.inner_steps=2"]
    cfg = load_config(FEWSHOT_CONFIG, overrides)
    t, g = cfg.task, cfg.gan
    torch.manual_seed(0)
    gan = FewShotGan(cfg).to(device)
    (phase,) = gan.phases()
    opt = make_optimizer(phase, cfg.optim)
    splits = load_splits(cfg.data)
    episode = TaskSampler(splits.train, t.ways, t.shots, t.queries, 0, device).sample(t.meta_batch)
    characters = t.meta_batch * t.ways
    noise = torch.Generator().manual_seed(1)

    def batched() -> None:
        opt.zero_grad()
        phase.loss(episode).objective.backward()
        opt.step()

    def per_task() -> None:
        opt.zero_grad()
        per_task_meta_step(gan, episode, noise)
        opt.step()

    t_batched = timed(batched, args.iterations)
    t_loop = timed(per_task, args.iterations)
    t_batched = min(t_batched, timed(batched, args.iterations))
    t_loop = min(t_loop, timed(per_task, args.iterations))
    b, lp = characters / t_batched, characters / t_loop
    print(f"{'fewshot_gan':11s}{b:16.1f} {lp:17.1f} {b / lp:6.2f}x   ({characters} characters "
          f"of {t.shots + t.queries} drawings, {g.loss} gp {g.gp_weight:g}, {g.inner_steps} "
          f"inner steps, {g.meta_algorithm}, width {g.width}, norm {g.norm}, upsample "
          f"{g.upsample}, condition {g.condition})", flush=True)


def timed(step: Callable[[], None], iterations: int) -> float:
    """Seconds per call, after one warm-up call."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    step()
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()  # GPU work is asynchronous: time it to completion
    return (time.perf_counter() - start) / iterations


def main() -> None:
    """Print tasks/s for each learner, batched and per task, and their ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=1)
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--learners", nargs="+", default=[*SETTINGS, "fewshot_gan"],
                   choices=[*SETTINGS, "fewshot_gan"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--fewshot-meta-batch", type=int, default=0,
                   help="fewshot_gan's meta-batch (default: configs/fewshot_gan.yaml's; each "
                        "task of it gives `ways` characters)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run of seconds: meta-batch 2, 1 iteration, conv4-16, "
                        "fewshot_gan at width 8 with 2 inner steps")
    args = p.parse_args()
    if args.quick:
        args.meta_batch, args.iterations = 2, 1
    tune_allocator()
    device = torch.device(args.device)
    splits = load_splits(DataConfig())
    sampler = TaskSampler(splits.train, args.ways, args.shots, args.queries, 0, device)
    hidden = 16 if args.quick else 64
    print(f"{args.ways}-way {args.shots}-shot {args.queries}-query, meta-batch {args.meta_batch}, "
          f"conv4-{hidden}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'learner':10s} {'batched tasks/s':>16s} {'per-task tasks/s':>17s} {'ratio':>7s}")
    for name in args.learners:
        if name == "fewshot_gan":
            fewshot_row(args, device)
            continue
        cfg = SETTINGS[name]
        torch.manual_seed(0)
        model = Conv4(hidden=hidden, depth=4,
                      num_classes=REGISTRY[name].head_size(args.ways)).to(device)
        learner = build_learner(cfg, model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        episode = sampler.sample(args.meta_batch)

        def batched() -> None:
            opt.zero_grad()
            learner.meta_loss(episode).objective.backward()
            opt.step()

        def per_task() -> None:
            opt.zero_grad()
            per_task_step(name, model, cfg, episode)
            opt.step()

        # Interleave the two sides so both see the same machine state.
        t_batched = timed(batched, args.iterations)
        t_loop = timed(per_task, args.iterations)
        t_batched = min(t_batched, timed(batched, args.iterations))
        t_loop = min(t_loop, timed(per_task, args.iterations))
        b, lp = args.meta_batch / t_batched, args.meta_batch / t_loop
        print(f"{name:10s} {b:16.1f} {lp:17.1f} {b / lp:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
