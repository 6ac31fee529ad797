"""GAN x meta-learning at equal meta-learner updates, over training seeds, on shared episodes.

1. Classification: ProtoNet and first-order MAML with and without DAGAN augmentation, and
   MetaGAN beside its plain FOMAML. Every row trains its config (configs/*.yaml) for the same
   number of meta-learner updates (`EpisodeLoop.updates` of the phase that updates the
   learner: "meta", or MetaGAN's "D"), once per training seed (`train.seed`). DAGAN's GAN
   pre-training (configs/dagan.yaml, `gan.pretrain_steps` G/D updates) happens outside the
   loop's iterations, once per seed: the first +DAGAN row trains and stores it (keyed by the
   GAN config and seed, gan/pretrained.py), the second loads it; it is timed apart. Each +DAGAN
   row's meta-learner starts at update 0 with the same initial weights and the same training
   tasks as the plain learner of that seed (MetaGAN, too, trains on FOMAML's task sequence).
   Evaluation is
   non-transductive (`model.batch_norm: support`, every config's default).

   Pairing: the meta-test tasks of a seed (5-way 1-shot, --queries per class) are drawn once,
   from a TaskSampler seeded as `EpisodeLoop.evaluate` seeds it (train.seed + the test offset)
   in fixed chunks, and the same Episode tensors are scored by every method; `loop.evaluate`
   itself cannot pair them, since its tasks depend on each config's meta_batch and queries.
   Reported: per method the mean and sd over seeds of the per-seed accuracy, and per pair
   (ProtoNet vs ProtoNet+DAGAN, FOMAML vs FOMAML+DAGAN, FOMAML vs MetaGAN) the mean
   difference with a paired t-test over all (seed, episode) pairs, and a t interval over the
   per-seed mean differences (which also carries the training-seed variance).

2. Generation on unseen characters (configs/fewshot_gan.yaml): the meta-learned GAN after
   --adapt-steps adaptation steps (0/1/10/50 by default; add a length selected on meta-val with
   `metagan evaluate --adapt-steps`) on gan.eval_shots drawings, beside the same G never
   trained, a GAN trained on all meta-train drawings pooled (the pair's own objective and
   optimiser, G unconditional; trained once per seed and key and stored in the data cache,
   like DAGAN's pre-training) and fine-tuned by the same steps, DAGAN's generator, MetaGAN's
   (only when its classification row runs in the same process: it is not stored), the
   support drawings under random affine jitter and real held-out
   drawings (real_baseline); per-character metrics of evaluate_generation, on the same
   characters for every row of a seed, mean and sd over seeds.

Raw results (per seed, per method, per-episode accuracies) go to --out as raw.json (rewritten
after every seed) and summary.json; the Markdown table to stdout and --markdown.

    python benchmarks/gan_table.py --updates 600 --seeds 0 1 2 --episodes 600 --grid \\
        --markdown docs/results/gan_table/table.md
    python benchmarks/gan_table.py --quick --threads 1     # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch

from metagan.config import Config, ConfigError, build_config, parse_override, read_yaml, to_dict
from metagan.data import Splits, load_splits
from metagan.data.episodes import Episode, TaskSampler, random_affine
from metagan.data.images import cache_root
from metagan.data.preprocess import data_key
from metagan.gan.evaluation import (
    Sampler,
    character_sets,
    evaluate_generation,
    metric_embedding,
    real_baseline,
    validate_embedding,
)
from metagan.gan.fewshot import FewShotGan, to_signed
from metagan.gan.grid import save_character_grid
from metagan.gan.pretrained import stored_state
from metagan.loop import SPLIT_SEED_OFFSET, EpisodeLoop
from metagan.meta import Method
from metagan.methods import GENERATION_KEYS
from metagan.run import load_loop
from metagan.runtime import tune_allocator

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STEPS = (0, 1, 10, 50)  # adaptation steps of the generation rows (default of --adapt-steps)
EVAL_CHUNK = 50  # meta-test tasks drawn (and scored) per batch: fixed, so tasks never depend on it
METHODS: dict[str, tuple[str, str | None]] = {  # name: (base config, GAN method or None)
    "ProtoNet": ("protonet", None),
    "ProtoNet+DAGAN": ("protonet", "dagan"),
    "FOMAML": ("fomaml", None),
    "FOMAML+DAGAN": ("fomaml", "dagan"),
    "MetaGAN": ("fomaml", "metagan"),
}
PAIRS = (("ProtoNet+DAGAN", "ProtoNet"), ("FOMAML+DAGAN", "FOMAML"), ("MetaGAN", "FOMAML"))
PLAIN = {"protonet": "ProtoNet", "fomaml": "FOMAML"}  # base config -> its plain-learner row


def parse_extra(text: str) -> tuple[str, str, dict[str, Any]]:
    """An ablation row 'LABEL=METHOD:key=value,key=value' -> (label, method, overrides): METHOD's
    config with dotted keys overridden, paired against METHOD's plain learner."""
    label, sep, rest = text.partition("=")
    method, sep2, sets = rest.partition(":")
    if not sep or not sep2 or method not in METHODS or label in METHODS:
        raise argparse.ArgumentTypeError(
            f"--extra {text!r}: expected LABEL=METHOD:key=value[,key=value], METHOD one of "
            f"{', '.join(METHODS)} and LABEL not one of them")
    overrides = {}
    for item in sets.split(","):
        try:
            key, value = parse_override(item)
        except ConfigError:
            key = ""
        if "." not in key:
            raise argparse.ArgumentTypeError(f"--extra {text!r}: {item!r} is not key.sub=value")
        overrides[key] = value
    return label.strip(), method, overrides


def row_spec(name: str, args: argparse.Namespace) -> tuple[str, str | None, dict[str, Any]]:
    """(base config, GAN method or None, key overrides) of a row, fixed or --extra."""
    for label, method, overrides in args.extra:
        if label == name:
            return (*METHODS[method], overrides)
    return (*METHODS[name], {})


def rows_of(args: argparse.Namespace) -> list[str]:
    """Every row of a run: the fixed methods, then the --extra ablations."""
    return list(args.methods) + [label for label, _, _ in args.extra]


def pairs_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(row, its plain learner) for every GAN row present."""
    rows = rows_of(args)
    fixed = [(a, b) for a, b in PAIRS if a in rows and b in rows]
    extra = [(label, PLAIN[METHODS[m][0]]) for label, m, _ in args.extra
             if PLAIN[METHODS[m][0]] in rows]
    return fixed + extra


# -- configs and training ---------------------------------------------------------------------------
def variant(base: str, method: str | None, seed: int, pretrain: int,
            overrides: dict[str, Any] | None = None) -> Config:
    """A base config for training seed `seed`, optionally turned into a GAN method with that
    method's gan settings (DAGAN's pre-training length set to `pretrain`), then `overrides`
    (dotted keys) applied."""
    data = copy.deepcopy(read_yaml(CONFIGS / f"{base}.yaml"))
    if method is not None:
        data["method"] = method
        data["gan"] = read_yaml(CONFIGS / f"{method}.yaml")["gan"]
    if data.get("method") == "dagan":
        data["gan"]["pretrain_steps"] = pretrain
    data["train"]["seed"] = seed
    data["schedule"]["eval_every"] = 0
    return build_config(data, overrides)


def dagan_pretrain_steps() -> int:
    """DAGAN's pre-training length in configs/dagan.yaml (the default of every DAGAN row)."""
    steps: int = read_yaml(CONFIGS / "dagan.yaml")["gan"]["pretrain_steps"]
    return steps


def pretrained_dagan(seed: int, pretrain: int, overrides: dict[str, Any] | None = None
                     ) -> EpisodeLoop:
    """The FOMAML+DAGAN row's loop of a seed, its pre-trained G loaded (or trained and stored
    once): the generator alone, without training the meta-learner."""
    loop = EpisodeLoop(variant("fomaml", "dagan", seed, pretrain, overrides))
    loop.method.ensure_pretrained()  # type: ignore[operator]
    return loop


def splits_for(cfg: Config, cache: dict[str, Splits]) -> Splits:
    """The splits of a config's data, loaded once per data section (affine jitter aside)."""
    key = json.dumps({k: v for k, v in to_dict(cfg.data).items() if k != "affine_augment"},
                     sort_keys=True)
    if key not in cache:
        cache[key] = load_splits(cfg.data)
    return cache[key]


def learner_phase(loop: EpisodeLoop) -> str:
    """The phase that updates the meta-learner (MetaGAN's "D"; a learner-less method's main)."""
    if loop.learner is None:
        return loop.main_phase()
    ids = {id(p) for p in loop.learner.parameters()}
    return next(p.name for p in loop.phases if {id(q) for q in p.params} == ids)


def train_updates(loop: EpisodeLoop, updates: int) -> float:
    """Step until the meta-learner phase has made `updates` updates; return the seconds used."""
    phase, start = learner_phase(loop), time.perf_counter()
    while loop.updates[phase] < updates:
        loop.step()
    return time.perf_counter() - start


def pretrain_dagan(loop: EpisodeLoop) -> float:
    """Pre-train (or load the stored) DAGAN generator of a row before its meta-learner's first
    update, outside the loop's iterations; the seconds it took (a load when another row of the
    seed already trained it: the artefact is keyed by the GAN config and seed)."""
    start = time.perf_counter()
    loop.method.ensure_pretrained()  # type: ignore[operator]
    return time.perf_counter() - start


# -- paired evaluation ------------------------------------------------------------------------------
def shared_episodes(splits: Splits, seed: int, episodes: int, queries: int) -> list[Episode]:
    """The meta-test tasks of a training seed, drawn once and scored by every method."""
    sampler = TaskSampler(splits.test, 5, 1, queries, seed + SPLIT_SEED_OFFSET["test"])
    return [sampler.sample(min(EVAL_CHUNK, episodes - i)) for i in range(0, episodes, EVAL_CHUNK)]


@torch.no_grad()
def episode_accuracies(loop: EpisodeLoop, episodes: list[Episode], seed: int) -> list[float]:
    """Query accuracy per episode, as EpisodeLoop.evaluate scores (same rng seeding)."""
    rng = torch.Generator().manual_seed(seed + SPLIT_SEED_OFFSET["test"] + 1)
    accs = []
    for ep in episodes:
        with torch.enable_grad():  # MAML-style learners differentiate while adapting
            accs.append(loop.method.task_accuracy(ep, rng).cpu())
    return torch.cat(accs).tolist()


def run_classification(args: argparse.Namespace, seed: int, cache: dict[str, Splits]
                       ) -> tuple[dict[str, Any], dict[str, EpisodeLoop]]:
    """Train every asked method for args.updates learner updates; score the shared episodes."""
    out: dict[str, Any] = {}
    loops: dict[str, EpisodeLoop] = {}
    episodes: list[Episode] | None = None
    for name in rows_of(args):
        base, method, overrides = row_spec(name, args)
        cfg = variant(base, method, seed, args.pretrain_steps, overrides)
        splits = splits_for(cfg, cache)
        episodes = episodes or shared_episodes(splits, seed, args.episodes, args.queries)
        loop = EpisodeLoop(cfg, splits=splits)
        pretrain_s = pretrain_dagan(loop) if method == "dagan" else 0.0
        # What the stored pre-training took when it ran (a load from the cache takes ~0 s).
        stored_s = (float(getattr(loop.method, "pretraining", {}).get("seconds", 0.0))
                    if method == "dagan" else 0.0)
        train_s = train_updates(loop, args.updates)
        accs = episode_accuracies(loop, episodes, seed)
        # Tasks drawn within one meta-test alphabet each (seeded by the seed and the alphabet:
        # the same tasks for every method of a seed), the episodes shared among the alphabets.
        groups = len(set(splits.test.groups))
        per_alphabet = loop.evaluate_per_group("test", max(1, args.episodes // groups))
        out[name] = {"updates": loop.updates[learner_phase(loop)], "iterations": loop.iteration,
                     "train_s": train_s, "gan_pretrain_s": pretrain_s,
                     "gan_pretrain_stored_s": stored_s,
                     "accuracy": float(np.mean(accs)),
                     "per_alphabet": {a: r["accuracy"] for a, r in per_alphabet["alphabets"].items()},
                     "episode_accuracies": accs}
        loops[name] = loop
        print(f"  seed {seed} {name}: {100 * out[name]['accuracy']:.1f}% after "
              f"{out[name]['updates']} updates, {train_s:.0f} s", flush=True)
    return out, loops


# -- generation -------------------------------------------------------------------------------------
# How the pooled-GAN baseline is trained; merges refuse seeds trained by different recipes
# (files without it predate the fix that gave the critic G's range and the gradient penalty).
# It is part of the stored GAN's key too: change it whenever train_pooled_gan changes, or a
# GAN stored by the old code is loaded in place of the new one.
POOLED_GAN_RECIPE = "pair-objective"


def pooled_gan_config(cfg: Config) -> Config:
    """The pooled GAN's config: the meta-learned pair's, with an unconditional G (a GAN of all
    characters has no character's drawings to read)."""
    return build_config({**to_dict(cfg), "gan": {**to_dict(cfg.gan), "condition": "weights"}})


def pooled_gan_key(cfg: Config, updates: int) -> str:
    """The hash of everything the pooled GAN depends on: its config (less where and how fast it
    runs, and the meta-learned run's schedule and length), the updates and the recipe."""
    data = to_dict(pooled_gan_config(cfg))
    data.pop("schedule")
    data["train"] = {k: v for k, v in data["train"].items()
                     if k not in ("iterations", "threads", "device")}
    data["data"] = {k: v for k, v in data_key(cfg.data).items() if k != "cache_dir"}
    blob = {"recipe": POOLED_GAN_RECIPE, "updates": updates, "config": data}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def pooled_gan(cfg: Config, splits: Splits, updates: int) -> tuple[FewShotGan, float]:
    """The seed's pooled GAN: loaded when an earlier run of the same key stored it (the GAN
    is a baseline trained once per seed, like DAGAN's pre-training), else trained and stored;
    with the seconds its training took when it ran."""

    def build() -> dict[str, Any]:
        gan, took = train_pooled_gan(cfg, splits, updates)
        return {"gan": gan.state_dict(), "train_s": took}

    path = cache_root(cfg.data.cache_dir) / "pooled_gan" / f"{pooled_gan_key(cfg, updates)}.pt"
    stored = stored_state(path, build)
    gan = build_pooled_gan(cfg)
    gan.load_state_dict(stored["gan"])
    return gan, float(stored["train_s"])


def build_pooled_gan(cfg: Config) -> FewShotGan:
    """The pooled GAN's untrained pair: the seed's initial weights of the meta-learned pair."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        gan = FewShotGan.build(pooled_gan_config(cfg), None)
    assert isinstance(gan, FewShotGan)
    return gan


def train_pooled_gan(cfg: Config, splits: Splits, updates: int) -> tuple[FewShotGan, float]:
    """FewShotGan's G and D (same initial weights as the meta-learned pair of the seed, G
    unconditional) trained as one plain GAN on batches of all meta-train drawings pooled, for
    `updates` D+G updates: the pair's own objective (its D loss with the gradient penalty, on
    images in G's [-1, 1]) and its outer optimiser (Adam at optim.lr, betas gan.beta1/beta2)."""
    gan = build_pooled_gan(cfg)
    cfg = pooled_gan_config(cfg)
    g, t = cfg.gan, cfg.task
    betas = (g.beta1, g.beta2)
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=cfg.optim.lr, betas=betas)
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=cfg.optim.lr, betas=betas)
    images = to_signed(torch.from_numpy(splits.train.images).float().div(255).unsqueeze(1))
    batch = t.meta_batch * t.ways * (t.shots + t.queries)  # the drawings of one meta-iteration
    rng = torch.Generator().manual_seed(cfg.train.seed)
    d_params = dict(gan.discriminator.named_parameters())
    start = time.perf_counter()
    for _ in range(updates):
        real = images[torch.randint(len(images), (batch,), generator=rng)]
        z = torch.randn(batch, g.z_dim, generator=rng)
        eps = torch.rand(batch, generator=rng)  # the penalty's interpolation weights
        fake = gan.generator(z)
        d_loss = gan.critic_objective(d_params, real, fake.detach(), eps)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = gan.g_loss(gan.discriminator(fake))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    return gan, time.perf_counter() - start


RowSampler = Callable[[torch.Generator], Sampler]  # a generation row: its rng -> its sampler


def adapting(method: Method, steps: int) -> RowSampler:
    """Row: a method's adapt_and_sample with `steps` adaptation steps."""
    return lambda rng: lambda support, n: method.adapt_and_sample(support, n, steps, rng)


def jitter(rng: torch.Generator) -> Sampler:
    """Sampler: the support drawings, cycled and each randomly jittered (rotation/scale/shift)."""

    def sample(support: torch.Tensor, n: int) -> torch.Tensor:
        t, k = support.shape[:2]
        source = support[:, torch.arange(n) % k].flatten(0, 1)
        return random_affine(source, rng).view(t, n, *support.shape[2:])

    return sample


def generators(fs: EpisodeLoop, fresh: EpisodeLoop, pooled: FewShotGan,
               others: dict[str, EpisodeLoop], adapt_steps: list[int]) -> dict[str, RowSampler]:
    """Every generation row but the real baseline, by label."""
    rows: dict[str, RowSampler] = {}
    for label, method in (("meta-learned G", fs.method), ("pooled-GAN G", pooled),
                          ("never-trained G", fresh.method)):
        for steps in adapt_steps:
            rows[f"{label}, {steps} steps"] = adapting(method, steps)
    for label, loop in others.items():  # conditioned on the support: nothing to adapt
        rows[f"{label} G"] = adapting(loop.method, 0)
    rows["support + affine jitter"] = jitter
    return rows


def learned_as(cfg: Config) -> dict[str, Any]:
    """What a seed's meta-learned GAN was: its config less the seed, length and schedule (seeds
    merged into one table must agree on it)."""
    data = to_dict(cfg)
    data.pop("schedule")
    data["train"] = {k: v for k, v in data["train"].items()
                     if k not in ("seed", "iterations", "threads", "device")}
    return data


def run_generation(args: argparse.Namespace, seed: int, cache: dict[str, Splits],
                   others: dict[str, EpisodeLoop]) -> dict[str, Any]:
    """Train the meta-learned and pooled GANs of a seed and score every generation row."""
    if args.gen_run:  # a meta-trained few-shot GAN run (metagan train), evaluated as it is
        fs = load_loop(args.gen_run)
        cfg, splits, fs_s = fs.cfg, fs.splits, None
        if cfg.train.seed != seed:
            sys.exit(f"error: --gen-run {args.gen_run} has train.seed {cfg.train.seed}, "
                     f"not {seed}: give --seeds {cfg.train.seed}")
        args.gen_updates = fs.iteration  # the pooled GAN gets as many updates
        fresh = EpisodeLoop(cfg, splits=splits)
    else:
        cfg = variant("fewshot_gan", None, seed, 0)
        if args.quick:
            cfg = build_config({**to_dict(cfg),
                                "gan": {**to_dict(cfg.gan), "embedding_iterations": 5}})
        splits = splits_for(cfg, cache)
        fs, fresh = EpisodeLoop(cfg, splits=splits), EpisodeLoop(cfg, splits=splits)
        fs_s = round(train_updates(fs, args.gen_updates))
    pooled, pooled_s = pooled_gan(cfg, splits, args.gen_updates)
    embed = metric_embedding(cfg, splits, fs.device)
    common = {"split": "test", "characters": args.characters, "seed": seed, "embed": embed}
    out: dict[str, Any] = {"fewshot_train_s": fs_s, "pooled_train_s": pooled_s,
                           "updates": args.gen_updates, "eval_shots": cfg.gan.eval_shots,
                           "pooled_gan": POOLED_GAN_RECIPE,
                           "learned_as": learned_as(cfg),
                           "embedding": validate_embedding(cfg, splits, **common,
                                                           episodes=min(args.episodes, 200))}
    rows = {}
    for label, make in generators(fs, fresh, pooled, others, args.adapt_steps).items():
        sample = make(torch.Generator().manual_seed(seed))
        rows[label] = evaluate_generation(cfg, splits, sample, **common)
    rows["real held-out drawings"] = real_baseline(cfg, splits, **common)
    out["rows"] = rows
    if args.grid and seed == args.seeds[0]:  # 6 unseen characters: k drawings | samples
        support, _ = character_sets(splits.test, 6, cfg.gan.eval_shots, np.random.default_rng(1))
        steps = cfg.gan.eval_adapt_steps if args.grid_steps is None else args.grid_steps
        fake = fs.method.adapt_and_sample(support, 8, steps, torch.Generator().manual_seed(0))
        save_character_grid(support, fake, Path(args.out) / "fewshot_gan_grid.png")
        out["grid_adapt_steps"] = steps
    print(f"  seed {seed} generation: {len(rows)} rows, few-shot GAN {fs_s} s, "
          f"pooled GAN {pooled_s:.0f} s", flush=True)
    return out


# -- statistics -------------------------------------------------------------------------------------
def finite(x: float) -> float | None:
    """x, or None when it is not finite (JSON has no NaN)."""
    return float(x) if math.isfinite(x) else None


def t_interval(values: np.ndarray) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t interval (None with fewer than 2 values)."""
    if len(values) < 2:
        return float(values.mean()), None
    half = scipy.stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), finite(half)


def paired(a: dict[int, list[float]], b: dict[int, list[float]]) -> dict[str, Any]:
    """a - b on the same episodes: a paired t-test over all (seed, episode) pairs, and a t
    interval over the per-seed mean differences."""
    seeds = sorted(a)
    diffs = np.concatenate([np.subtract(a[s], b[s]) for s in seeds])
    mean, half = t_interval(diffs)
    p = scipy.stats.ttest_1samp(diffs, 0.0).pvalue if len(diffs) > 1 else float("nan")
    per_seed = np.array([np.mean(np.subtract(a[s], b[s])) for s in seeds])
    seed_mean, seed_half = t_interval(per_seed)
    return {"mean_difference": mean, "ci95_episodes": half, "p_paired_t": finite(float(p)),
            "pairs": len(diffs), "per_seed": per_seed.tolist(), "ci95_seeds": seed_half,
            "seeds_better": int((per_seed > 0).sum())}


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Per-method mean and sd over seeds, paired differences, generation means and sds."""
    seeds = raw["seeds"]
    # A row may have been run on some seeds only (an ablation on one seed, merged in).
    acc = {m: {int(s): seeds[s]["classification"][m]["episode_accuracies"] for s in seeds
               if m in seeds[s]["classification"]} for m in rows_of(args)}
    out: dict[str, Any] = {"accuracy": {}, "paired": {}, "generation": {}}
    for m in rows_of(args):
        own = [s for s in seeds if m in seeds[s]["classification"]]
        mean, sd = mean_sd([seeds[s]["classification"][m]["accuracy"] for s in own])
        # Per alphabet: over the seeds that measured it (rows run before it existed did not).
        alphabets: dict[str, list[float]] = {}
        for s in own:
            for a, v in seeds[s]["classification"][m].get("per_alphabet", {}).items():
                alphabets.setdefault(a, []).append(v)
        out["accuracy"][m] = {"mean": mean, "sd": sd, "seeds": [int(s) for s in own],
                              "train_s": mean_sd(
                                  [seeds[s]["classification"][m]["train_s"] for s in own])[0],
                              "per_alphabet": {a: {"mean": mean_sd(v)[0], "sd": mean_sd(v)[1],
                                                   "seeds": len(v)}
                                               for a, v in sorted(alphabets.items())}}
    for a, b in pairs_of(args):
        common = sorted(set(acc[a]) & set(acc[b]))
        if common:
            out["paired"][f"{a} - {b}"] = {
                "row": a, "baseline": b, "seeds": common,
                # Both accuracies over the seeds the pair shares.
                "accuracy": mean_sd([float(np.mean(acc[a][s])) for s in common]),
                "baseline_accuracy": mean_sd([float(np.mean(acc[b][s])) for s in common]),
                **paired({s: acc[a][s] for s in common}, {s: acc[b][s] for s in common})}
    if args.generation:
        for row in seeds[next(iter(seeds))]["generation"]["rows"]:
            per_seed = [seeds[s]["generation"]["rows"][row] for s in seeds]
            # A generator that diverged on a seed scores NaN there: the means are over the
            # other seeds, and the row says on how many it diverged.
            ok = [r for r in per_seed if math.isfinite(r["kid"])]
            out["generation"][row] = {
                **{k: mean_sd([r[k] for r in ok]) if ok else (None, None)
                   for k in sorted(GENERATION_KEYS)},
                "diverged": len(per_seed) - len(ok), "seeds": len(per_seed)}
    return out


# -- the report -------------------------------------------------------------------------------------
def pct(x: float | None, sign: bool = False) -> str:
    """A share as percent (or n/a)."""
    return "n/a" if x is None else f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def half(x: float | None) -> str:
    """An interval's half-width in percentage points (n/a without one)."""
    return "n/a" if x is None else f"± {pct(x)}"


def markdown(raw: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown report of a run."""
    lines = [
        "# GAN x meta-learning at equal meta-learner updates", "",
        " + ".join(f"`python benchmarks/gan_table.py {shlex.join(a)}`"
                   for a in raw["settings"].get("merged_from", [raw["settings"]["argv"]]))
        + (" (merged with --merge)" if "merged_from" in raw["settings"] else "") + " on "
        f"{raw['settings']['threads']} CPU threads ({raw['settings']['cpu']}), torch "
        f"{raw['settings']['torch']}. Meta-test alphabets: {', '.join(raw['settings']['test_groups'])}.",
    ]
    if summary["accuracy"]:  # (a generation-only run has no classification rows)
        lines += classification_markdown(raw, summary, args)
    if summary["generation"]:
        lines += generation_markdown(raw, summary, args)
    return "\n".join(lines) + "\n"


LOADED_S = 5.0  # a DAGAN G that took less than this was loaded from the cache, not trained


def classification_markdown(raw: dict[str, Any], summary: dict[str, Any],
                            args: argparse.Namespace) -> list[str]:
    """The classification rows, DAGAN's pre-training and the paired differences."""
    seeds = raw["seeds"]
    pre = [max(r.get("gan_pretrain_s", 0.0) for r in seeds[s]["classification"].values())
           for s in seeds if any(row_spec(m, args)[1] == "dagan" for m in seeds[s]["classification"])]
    lines = [
        "",
        f"5-way 1-shot, {args.queries} queries per class, {args.episodes} meta-test episodes per "
        f"seed, the same episodes for every method of a seed; {args.updates} meta-learner updates "
        f"per row; training seeds {', '.join(map(str, args.seeds))} (a row's own seeds in its "
        "column); batch norm from the support set (non-transductive) unless a row's overrides "
        "say otherwise. Accuracy: mean ± sd over seeds of the per-seed mean. Per alphabet: "
        f"tasks drawn within one meta-test alphabet, {args.episodes} episodes per seed shared "
        "among the alphabets (rows measured before this column existed say 'not measured').", "",
        "| method | overrides | seeds | learner updates | train s / seed | test accuracy (%) | "
        "per seed (%) | per alphabet (%) |", "|---|---|---|---|---|---|---|---|",
    ]
    for m, res in summary["accuracy"].items():
        own = [str(s) for s in res["seeds"]]
        per = ", ".join(pct(seeds[s]["classification"][m]["accuracy"]) for s in own)
        changed = ", ".join(f"{k}={v}" for k, v in row_spec(m, args)[2].items()) or "-"
        alphabets = ", ".join(f"{a} {pct(v['mean'])} ± {pct(v['sd'])}"
                              + (f" ({v['seeds']} seeds)" if v["seeds"] != len(own) else "")
                              for a, v in res["per_alphabet"].items()) or "not measured"
        lines.append(f"| {m} | {changed} | {', '.join(own)} | "
                     f"{seeds[own[0]]['classification'][m]['updates']} | {res['train_s']:.0f} | "
                     f"{pct(res['mean'])} ± {pct(res['sd'])} | {per} | {alphabets} |")
    if pre:
        if max(pre) >= LOADED_S:
            took = f"{max(pre):.0f} s per seed at most"
        else:  # every G came from the cache: what its pre-training took is in the artefact
            stored = [r.get("gan_pretrain_stored_s") for s in seeds
                      for r in seeds[s]["classification"].values() if r.get("gan_pretrain_s")]
            took = ("loaded from the cache, where an earlier run of the same key stored it"
                    + (f" ({max(stored):.0f} s per seed at most when it ran)"
                       if stored and all(stored) else ""))
        specs = {m: row_spec(m, args) for m in summary["accuracy"]}
        own_length = {m: sets["gan.pretrain_steps"] for m, (_, method, sets) in specs.items()
                      if method == "dagan" and "gan.pretrain_steps" in sets}
        length = f"{args.pretrain_steps} G and D updates (configs/dagan.yaml)" + "".join(
            f"; {m}: {n}" for m, n in own_length.items())
        lines += ["", f"DAGAN's GAN pre-training: {length}, {took}; not in the train s above. "
                  "A +DAGAN row loads the pre-trained G of its key (its base config's data "
                  "settings, the gan keys that shape pre-training, the seed), trained and stored "
                  "by the first run that needs it."]
    if summary["paired"]:
        lines += ["", "Paired differences (percentage points; same seed, same episodes): a paired "
                  "t-test over all seed x episode pairs, and a t interval over the per-seed means.",
                  "", "| comparison | difference | 95% CI (episodes) | p (paired t) | "
                  "95% CI (seeds) | seeds better |", "|---|---|---|---|---|---|"]
        for name, r in summary["paired"].items():
            p = "n/a" if r["p_paired_t"] is None else f"{r['p_paired_t']:.2g}"
            lines.append(f"| {name} | {pct(r['mean_difference'], True)} | {half(r['ci95_episodes'])} | "
                         f"{p} | {half(r['ci95_seeds'])} | {r['seeds_better']}/{len(r['per_seed'])} |")
    return lines


def noise_response(embeddings: list[dict[str, float]]) -> str:
    """The embedding check's KID of real drawings plus pixel noise, level by level (the mean
    over seeds), and on how many seeds it rose at every level."""
    levels = sorted({int(k.removeprefix("noise_kid_")) for e in embeddings for k in e
                     if k.startswith("noise_kid_")})
    kids = [mean_sd([e[f"noise_kid_{v}"] for e in embeddings])[0] for v in levels]
    rising = sum(int(e["noise_monotone"]) for e in embeddings)
    return ("KID of held-out drawings plus Gaussian pixel noise of std "
            f"{' / '.join(f'{v / 100:g}' for v in levels)}: "
            f"{' / '.join(f'{k:.3g}' for k in kids)}, rising at every level on {rising} of "
            f"{len(embeddings)} seeds")


def generation_markdown(raw: dict[str, Any], summary: dict[str, Any],
                        args: argparse.Namespace) -> list[str]:
    """The generation section of the report."""
    seeds, s0 = raw["seeds"], raw["seeds"][next(iter(raw["seeds"]))]["generation"]
    embeddings = [seeds[s]["generation"]["embedding"] for s in seeds]
    accuracy = mean_sd([e["one_shot_accuracy"] for e in embeddings])[0]
    # What each seed's GANs trained (with --gen-run, the run's iterations, not --gen-updates).
    updates = sorted({seeds[s]["generation"]["updates"] for s in seeds})
    lines = ["", "## Few-shot generation on unseen characters", "",
             f"Adapted to {s0['eval_shots']} drawings of each of {args.characters} meta-test "
             "characters (the same per seed for every row); the meta-learned and pooled GANs "
             f"trained {' / '.join(map(str, updates))} updates. Per-character metrics "
             "(metagan/gan/metrics.py) "
             "in a ProtoNet embedding trained on meta-train only (its own 5-way 1-shot accuracy "
             f"{pct(accuracy)}%; {noise_response(embeddings)}). Mean ± sd over seeds.",
             "", "| generator | KID | Frechet | fidelity % (chance %) | novelty | precision | "
             "recall | coverage |", "|---|---|---|---|---|---|---|---|"]
    for row, r in summary["generation"].items():
        if r.get("diverged"):
            n, bad = r["seeds"], r["diverged"]
            row = (f"{row} (diverged{f' on all {n} seeds' if n > 1 else ''})" if bad == n
                   else f"{row} (diverged on {bad} of {n} seeds: the others' mean)")
        cells = [pm(r[k]) for k in ("kid", "frechet_distance")]
        cells.append("n/a" if r["fidelity"][0] is None else
                     f"{pct(r['fidelity'][0])} ± {pct(r['fidelity'][1])} "
                     f"({pct(r['chance_fidelity'][0])})")
        cells += [pm(r[k]) for k in ("novelty", "precision", "recall", "diversity")]
        lines.append(f"| {row} | {' | '.join(cells)} |")
    return lines


def pm(mean_and_sd: tuple[float | None, float | None]) -> str:
    """'mean ± sd' to three significant digits ('n/a' for a row diverged on every seed)."""
    mean, sd = mean_and_sd
    return "n/a" if mean is None or sd is None else f"{mean:.3g} ± {sd:.2g}"


# -- driver -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (--quick shrinks every size to a seconds-long smoke run)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--updates", type=int, default=600, help="meta-learner updates per row")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values")
    p.add_argument("--episodes", type=int, default=600, help="meta-test episodes per seed")
    p.add_argument("--queries", type=int, default=5, help="query drawings per class")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--extra", nargs="+", type=parse_extra, default=[], metavar="LABEL=METHOD:K=V",
                   help="ablation rows: METHOD's config with dotted keys overridden, paired "
                   "against METHOD's plain learner, e.g. 'DAGAN x1=ProtoNet+DAGAN:gan.augment=1'")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help="DAGAN pre-training updates (default: configs/dagan.yaml's)")
    p.add_argument("--gen-updates", type=int, default=None,
                   help="few-shot / pooled GAN updates (default: configs/fewshot_gan.yaml's)")
    p.add_argument("--characters", type=int, default=20, help="unseen characters per seed")
    p.add_argument("--adapt-steps", type=int, nargs="+", default=list(STEPS), metavar="N",
                   help="adaptation steps of the adapted generators' rows (default: "
                   f"{' '.join(map(str, STEPS))}; add a length selected on meta-val)")
    p.add_argument("--gen-run", default=None, metavar="RUN_DIR",
                   help="score this meta-trained few-shot GAN run (its seed only) instead of "
                   "training one for --gen-updates")
    p.add_argument("--no-generation", dest="generation", action="store_false")
    p.add_argument("--out", default=None, help="directory for the JSON (default: "
                   "docs/results/gan_table; with --quick a temporary directory)")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.add_argument("--json", default=None, help="also write the GAN-vs-plain rows to this file "
                   "(the committed docs/results/gan_table.json)")
    p.add_argument("--benchmarks", default=None, help="replace the generated section of this "
                   "Markdown file (between '<!-- SECTION begin -->' and '<!-- SECTION end -->') "
                   "with the table")
    p.add_argument("--section", default="gan_table.py", help="SECTION of --benchmarks")
    p.add_argument("--grid", action="store_true", help="save a sample grid into --out")
    p.add_argument("--grid-steps", type=int, default=None, metavar="N",
                   help="the grid's adaptation steps (default: the run's gan.eval_adapt_steps)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of seconds")
    p.add_argument("--merge", nargs="+", metavar="RAW",
                   help="no training: merge raw.json files of the same settings run apart "
                   "(disjoint --seeds, e.g. one process per core) into --out's table")
    args = p.parse_args(argv)
    if args.grid_steps is not None and args.grid_steps < 0:
        p.error(f"--grid-steps: 0 or more, got {args.grid_steps}")
    if min(args.adapt_steps) < 0 or len(set(args.adapt_steps)) < len(args.adapt_steps):
        p.error(f"--adapt-steps: distinct values of 0 or more, got {args.adapt_steps}")
    args.adapt_steps = sorted(args.adapt_steps)
    if args.pretrain_steps is None:
        args.pretrain_steps = dagan_pretrain_steps()
    if args.gen_updates is None:
        args.gen_updates = read_yaml(CONFIGS / "fewshot_gan.yaml")["train"]["iterations"]
    if args.quick:
        args.updates, args.episodes, args.characters = 2, 10, 4
        args.pretrain_steps, args.gen_updates, args.seeds = 2, 2, args.seeds[:2]
    if args.out is None:
        args.out = (str(Path(tempfile.gettempdir()) / "gan_table_quick") if args.quick
                    else "docs/results/gan_table")
    return args


# Settings that may differ between raw files merged into one table (each process its seeds
# or its rows; with --gen-run, each seed its own meta-trained run; --grid only draws a picture).
PER_PROCESS = {"argv", "seeds", "out", "markdown", "merge", "methods", "extra", "json",
               "benchmarks", "section", "generation", "gen_run", "grid", "grid_steps"}


def merge_raw(paths: list[str]) -> dict[str, Any]:
    """One raw result from several runs of the same settings (e.g. one process per core, each
    its seeds or its rows); refuses files whose other settings differ, a (seed, row) found in
    two files, and generation results of a seed in two files."""
    merged: dict[str, Any] | None = None
    for path in paths:
        raw = json.loads(Path(path).read_text())
        raw["settings"].setdefault("extra", [])
        raw["settings"].setdefault("adapt_steps", list(STEPS))  # files from before the flag
        if merged is None:
            merged = raw
            merged["settings"]["merged_from"] = [raw["settings"]["argv"]]
            continue
        mine = {k: v for k, v in merged["settings"].items()
                if k not in PER_PROCESS and k != "merged_from"}
        theirs = {k: v for k, v in raw["settings"].items() if k not in PER_PROCESS}
        # A setting a file predates (absent) is its default, None.
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if bool(merged["settings"].get("gen_run")) != bool(raw["settings"].get("gen_run")):
            differ.append("gen_run: a meta-trained run in one file, a GAN trained here in the other")
        if differ:
            sys.exit(f"error: {path}: settings differ from {paths[0]} ({', '.join(differ)})")
        for seed, res in raw["seeds"].items():
            have = merged["seeds"].setdefault(seed, {"classification": {}})
            twice = sorted(set(have["classification"]) & set(res["classification"]))
            if twice or ("generation" in have and "generation" in res):
                what = f"rows {twice}" if twice else "generation"
                sys.exit(f"error: {path}: seed {seed} {what} already in another file")
            have["classification"].update(res["classification"])
            if "generation" in res:
                have["generation"] = res["generation"]
        settings = merged["settings"]
        settings["methods"] += [m for m in raw["settings"]["methods"] if m not in settings["methods"]]
        settings["extra"] += [e for e in raw["settings"]["extra"] if e not in settings["extra"]]
        settings["generation"] = settings["generation"] and raw["settings"]["generation"]
        settings["merged_from"].append(raw["settings"]["argv"])
    assert merged is not None
    generations = [r["generation"] for r in merged["seeds"].values() if "generation" in r]
    for key in ("eval_shots", "learned_as"):  # (files before learned_as existed lack it)
        if len({json.dumps(g[key], sort_keys=True) for g in generations if key in g}) > 1:
            sys.exit(f"error: the seeds' generation results differ in {key}: one table needs "
                     "one few-shot GAN config")
    if len({g.get("pooled_gan") for g in generations}) > 1:
        sys.exit("error: the seeds' pooled-GAN baselines were trained by different recipes "
                 "(a file from before the pooled GAN's fix): score those seeds again")
    merged["settings"]["seeds"] = sorted(int(s) for s in merged["seeds"])
    return merged


def main(argv: list[str] | None = None) -> None:
    """Run every seed, writing raw.json after each, then summary.json and the table (or, with
    --merge, only the summary and table of raw files run apart)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.merge:
        raw = merge_raw(args.merge)
        for key in ("methods", "extra", "generation", "updates", "episodes", "queries",
                    "characters", "seeds", "pretrain_steps", "gen_updates"):
            setattr(args, key, raw["settings"][key])
        args.extra = [tuple(e) for e in args.extra]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "raw.json").write_text(json.dumps(raw, indent=1))
        write_report(raw, args, out)
        return
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[str, Splits] = {}
    test_groups = splits_for(variant("protonet", None, 0, 0), cache).groups["test"]
    raw: dict[str, Any] = {"settings": {
        "argv": argv, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "test_groups": test_groups,
        **vars(args)}, "seeds": {}}
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        res: dict[str, Any] = {}
        res["classification"], loops = run_classification(args, seed, cache)
        if args.generation:  # the GAN-using rows' generators join the generation table
            dagan = next((loops[m] for m in args.methods if METHODS[m][1] == "dagan"), None)
            if dagan is None:  # its G is pre-trained apart from the learner: load it alone
                dagan = pretrained_dagan(seed, args.pretrain_steps)
            others = {"DAGAN": dagan} if dagan is not None else {}
            if "MetaGAN" in loops:
                others["MetaGAN"] = loops["MetaGAN"]
            res["generation"] = run_generation(args, seed, cache, others)
        raw["seeds"][str(seed)] = res
        (out / "raw.json").write_text(json.dumps(raw, indent=1))
    write_report(raw, args, out)


def write_report(raw: dict[str, Any], args: argparse.Namespace, out: Path) -> None:
    """summary.json beside raw.json, and the Markdown table to stdout (and --markdown)."""
    summary = summarise(raw, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(raw, summary, args)
    print(text)
    print(f"raw results: {out / 'raw.json'}, summary: {out / 'summary.json'}")
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(gan_rows(summary), indent=1) + "\n")
    if args.benchmarks:
        replace_section(Path(args.benchmarks), text, args.section)


def gan_rows(summary: dict[str, Any]) -> dict[str, Any]:
    """Every GAN (or ablation) row against its plain learner, in percentage points: the paired
    difference's 95% interval is the paired t interval over (seed, episode) pairs."""
    rows = []
    for pair in summary["paired"].values():
        (row, row_sd), (base, base_sd) = pair["accuracy"], pair["baseline_accuracy"]
        rows.append({
            "method": pair["row"], "baseline": pair["baseline"], "seeds": pair["seeds"],
            "accuracy": 100 * row, "accuracy_sd": 100 * row_sd,
            "baseline_accuracy": 100 * base, "baseline_accuracy_sd": 100 * base_sd,
            "paired_diff": 100 * pair["mean_difference"],
            "paired_diff_ci95": None if pair["ci95_episodes"] is None
            else 100 * pair["ci95_episodes"],
            "paired_diff_ci95_seeds": None if pair["ci95_seeds"] is None
            else 100 * pair["ci95_seeds"],
            "p_paired_t": pair["p_paired_t"], "pairs": pair["pairs"],
            "seeds_better": pair["seeds_better"]})
    return {"units": "percent (accuracy) and percentage points (differences)", "rows": rows}


def markers(section: str) -> tuple[str, str]:
    """The lines that open and close a generated section of a Markdown file."""
    return f"<!-- {section} begin -->", f"<!-- {section} end -->"


def replace_section(path: Path, text: str, section: str) -> None:
    """Put `text` (its title dropped) between a section's markers in a Markdown file."""
    BEGIN, END = markers(section)  # noqa: N806
    doc = path.read_text()
    if doc.count(BEGIN) != 1 or doc.count(END) != 1 or doc.index(BEGIN) > doc.index(END):
        sys.exit(f"error: {path}: needs one {BEGIN} line before one {END} line")
    body = text.split("\n", 2)[2] if text.startswith("# ") else text
    head, rest = doc.split(BEGIN)
    path.write_text(f"{head}{BEGIN}\n{body.strip()}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    main()
