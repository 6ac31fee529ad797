"""The `metagan` command line: thin subcommands over the library.

Exit codes: 1 a search whose every trial failed, 2 bad input (config, space, arguments),
3 a diverged run, 4 storage unusable, 5 cluster unreachable or refusing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path

from .config import Config, ConfigError
from .data import DataError

# Packages of the optional extras (pyproject.toml), for the message when one is missing.
EXTRA_OF = {"ray": "search", "hyperopt": "search", "matplotlib": "report"}
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_STORAGE = 4
EXIT_CLUSTER = 5


def _train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .config import load_config, parse_override
    from .loop import Diverged
    from .run import resume_config, train

    if args.resume:
        if args.config is not None or args.out is not None:
            raise ConfigError("--resume DIR continues a run with its own config.yaml in DIR; "
                              "give no CONFIG and no --out")
        out = Path(args.resume)
        cfg = resume_config(out, dict(parse_override(o) for o in args.set))
    else:
        if args.config is None:
            raise ConfigError("train: give a CONFIG.yaml (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.set)
        out = Path(args.out or f"runs/{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    bars: list[tqdm] = []  # made at the first step: nothing is printed before work starts

    def on_step(m: dict) -> None:
        if not bars:
            bars.append(tqdm(total=cfg.train.iterations, desc=run_label(cfg), unit="it",
                             disable=args.quiet, dynamic_ncols=True))
        bar = bars[0]
        if bar.n == 0 and m["iteration"] > 1:
            bar.update(m["iteration"] - 1)
        bar.update(1)
        bar.set_postfix(progress_fields(m), refresh=False)

    try:
        result = train(cfg, out, resume=bool(args.resume), on_step=on_step)
    except Diverged as e:
        for bar in bars:
            bar.close()
        print(f"diverged: {e}; recorded in {out / 'result.json'}", file=sys.stderr)
        return EXIT_DIVERGED
    finally:
        for bar in bars:
            bar.close()
    print(json.dumps(result, indent=2))
    print(f"run written to {out}")
    return 0


# Bookkeeping fields every step reports; the progress bar shows the method's own metrics.
_BOOKKEEPING = {"iteration", "lr", "tasks_per_s", "loop_s"}


def run_label(cfg: Config) -> str:
    """What the progress bar calls a run: the method, and the meta-learner where it has one."""
    from .methods import method_of

    if cfg.method == "meta":
        return cfg.meta.algorithm
    return f"{cfg.method}+{cfg.meta.algorithm}" if method_of(cfg).needs_learner else cfg.method


def progress_fields(metrics: dict[str, float], most: int = 4) -> dict[str, str]:
    """The method's own metrics of one step (not gradient norms), then tasks/s, for the bar."""
    own = [k for k in metrics if k not in _BOOKKEEPING and not k.endswith("grad_norm")]
    fields = {k: f"{metrics[k]:.3f}" for k in own[:most]}
    fields["tasks_s"] = f"{metrics['tasks_per_s']:.0f}"
    return fields


def _evaluate(args: argparse.Namespace) -> int:
    from .meta import REGISTRY
    from .meta.base import adaptation_steps
    from .run import load_loop

    for name in ("episodes", "ways", "shots"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name}: must be positive, got {value}")
    if args.ways is not None and args.ways < 2:
        raise ConfigError(f"--ways: a task needs at least 2 classes, got {args.ways}")
    if args.adapt_steps is not None and args.adapt_steps < 0:
        raise ConfigError(f"--adapt-steps: must be 0 or more, got {args.adapt_steps}")
    if args.within_alphabet and args.shots is not None:
        raise ConfigError("--shots: --within-alphabet tasks are one-shot (one drawing per "
                          "character as support, another as query)")
    loop = load_loop(args.checkpoint)
    cfg = loop.cfg
    generates = loop.method.generates
    if args.adapt_steps is not None and not generates:
        raise ConfigError(f"--adapt-steps: method {cfg.method!r} does not generate (it is "
                          "scored on classification accuracy)")
    if args.within_alphabet:  # one-shot tasks of `ways` characters of one alphabet each
        if generates or not loop.method.classifies:
            raise ConfigError(f"--within-alphabet: method {cfg.method!r} generates; it is "
                              "scored on generation, not on classification accuracy")
        found = loop.evaluate_within_alphabet(args.split, args.episodes, args.ways or 20)
        print(json.dumps({"protocol": "within-alphabet", "split": args.split, **found,
                          "iteration": loop.iteration}, indent=2))
        return 0
    if generates and (args.ways is not None or args.shots is not None):
        raise ConfigError(f"--ways/--shots: {cfg.method} is scored on generation "
                          f"(gan.eval_shots={cfg.gan.eval_shots} drawings per character)")
    ways = args.ways or cfg.task.eval_ways or cfg.task.ways
    if not generates and REGISTRY[cfg.meta.algorithm].head_size(ways) is not None \
            and ways != cfg.task.ways:
        raise ConfigError(f"--ways: {cfg.meta.algorithm} has a {cfg.task.ways}-way classifier "
                          f"head; it can only be evaluated on {cfg.task.ways}-way tasks")
    images = loop.splits.get(args.split)
    if ways > images.num_classes:
        raise ConfigError(f"--ways: meta-{args.split} has {images.num_classes} classes, "
                          f"fewer than {ways}")
    per_class = (args.shots or cfg.task.shots) + cfg.task.queries
    if per_class > int(images.class_counts().min()):
        raise ConfigError(f"--shots: {per_class} images per class needed (shots + "
                          f"{cfg.task.queries} queries), but a meta-{args.split} class has only "
                          f"{int(images.class_counts().min())}")
    result = loop.evaluate(args.split, args.episodes, ways=ways, shots=args.shots,
                           adapt_steps=args.adapt_steps)
    if generates:
        result["adapt_steps"] = adaptation_steps(cfg, loop.method, args.adapt_steps)
    result.update(split=args.split, ways=ways, shots=args.shots or cfg.task.shots,
                  iteration=loop.iteration)
    print(json.dumps(result, indent=2))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .gan.grid import sample_loop, save_grid

    if args.samples <= 0:
        raise ConfigError(f"--samples: must be positive, got {args.samples}")
    if args.adapt_steps is not None and args.adapt_steps < 0:
        raise ConfigError(f"--adapt-steps: must be 0 or more, got {args.adapt_steps}")
    check_output_file(Path(args.out), "--out", ".png")  # before any sampling work
    if args.support:
        # The user's drawings: the checkpoint alone is loaded, never the training data.
        if not Path(args.support).exists():  # before loading anything
            raise ConfigError(f"--support {args.support}: no such folder or file")
        from .api import load_model
        from .data.preprocess import inverts
        from .inputs import as_batch

        model = load_model(args.checkpoint)
        if not model.module.samples:
            raise ConfigError(f"{args.checkpoint}: method {model.config.method!r} has no "
                              "generator to sample from")
        support = as_batch(Path(args.support), model.config.data,
                           "--support")[: model.config.gan.eval_shots]
        fake = model.sample(support, args.samples, args.seed, args.adapt_steps)
        out = save_grid(support, fake.cpu(), args.out,
                        invert=inverts(model.config.data.source))
        print(f"wrote {out} (support: {support.shape[0]} drawings in {args.support})")
        return 0
    from .run import load_loop

    loop = load_loop(args.checkpoint)
    if not loop.method.samples:
        raise ConfigError(f"{args.checkpoint}: method {loop.cfg.method!r} has no generator to "
                          "sample from")
    # Default: an unseen character of the chosen split's alphabets (meta-val unless --split).
    out = sample_loop(loop, args.out, args.split, args.samples, args.seed,
                      adapt_steps=args.adapt_steps)
    print(f"wrote {out} (split: {args.split}; support: an unseen meta-{args.split} character)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import csv
    import io

    from .api import load_model
    from .data.preprocess import image_files
    from .inputs import labelled_folder

    if args.out:
        check_output_file(Path(args.out), "--out", ".csv")  # before any work
    support, labels = labelled_folder(args.support)
    query_dir = Path(args.query)
    if not query_dir.is_dir():
        raise ConfigError(f"--query {query_dir}: no such folder")
    queries = image_files(query_dir)
    if not queries:
        raise ConfigError(f"--query {query_dir}: no .png/.jpg/.jpeg images in this folder")
    model = load_model(args.checkpoint)
    result = model.predict(support, labels, queries, seed=args.seed)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file", "label", *(f"p_{c}" for c in result.classes)])
    for path, label, probs in zip(queries, result.labels, result.probabilities.tolist()):
        writer.writerow([path.name, label, *(f"{p:.6f}" for p in probs)])
    if args.out:
        Path(args.out).write_text(text.getvalue())
        print(f"wrote {args.out} ({len(queries)} queries, {len(result.classes)} classes)")
    else:
        print(text.getvalue(), end="")
    return 0


def check_output_file(path: Path, what: str, suffix: str | None = None) -> None:
    """ConfigError unless `path` can be written as a file (checked before the work it ends)."""
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a directory; give a file name")
    if suffix and path.suffix.lower() != suffix:
        raise ConfigError(f"{what} {path}: expected a {suffix} file name")
    if not path.parent.is_dir():
        raise ConfigError(f"{what} {path}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{what} {path}: not writable")


def _data_download(args: argparse.Namespace) -> int:
    from .data import omniglot

    for path in omniglot.download(args.sets, args.dest):
        print(f"verified {path}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from .space import load_spec
    from .storage import check_name, parse_storage
    from .tune.search import SearchResult, dry_run, read_stored_spec, run_search

    if args.name is not None:
        check_name(args.name)
    if args.resume:
        check_name(args.resume, "--resume")
        ignored = [flag for flag, given in (("SPACE", args.space), ("--set", args.set),
                                            ("--name", args.name), ("--dry-run", args.dry_run))
                   if given]
        if ignored:
            raise ConfigError(f"--resume {args.resume}: continues the stored space as it was; "
                              f"{ignored[0]} cannot be applied (start a new search instead)")
        if not args.storage:
            raise ConfigError("--resume NAME needs --storage URI (where the experiment is)")
        storage = parse_storage(args.storage)
        spec = read_stored_spec(storage, args.resume)
        storage = parse_storage(args.storage, spec.storage.outage_s)
        name, resume = args.resume, True
    else:
        if not args.space:
            raise ConfigError("search: give a SPACE.yaml (or --resume NAME --storage URI)")
        spec = load_spec(args.space, args.set)
        storage = parse_storage(args.storage or spec.storage.uri, spec.storage.outage_s)
        name, resume = args.name, False
    if args.dry_run:
        print(dry_run(spec, args.samples))
        return 0
    if args.json:
        check_output_file(Path(args.json), "--json")
    result: SearchResult = run_search(spec, name, storage, args.address, resume,
                                      verbose=0 if args.quiet else 1)
    print(result.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(result.__dict__, indent=2, default=str))
    return 0


def _submit(args: argparse.Namespace) -> int:
    from .jobs import submit

    job = submit(args.space, args.address, args.storage, args.name, args.set)
    print(f"submitted job {job.job_id} (experiment {job.name})")
    print(f"dashboard: {job.dashboard}/#/jobs/{job.job_id}")
    print(f"follow it: metagan logs {job.job_id} --address {args.address} --follow")
    return 0


def _status(args: argparse.Namespace) -> int:
    from .jobs import status

    rows = status(args.job, args.address)
    if args.json:
        print(json.dumps(rows, indent=2))
    for r in rows if not args.json else ():
        print(f"{r['job_id']:40s} {r['status']:10s} {r['experiment'] or '':28s} {r['storage'] or ''}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from .jobs import logs

    for chunk in logs(args.job, args.address, args.follow):
        print(chunk, end="", flush=True)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from .jobs import stop

    print(f"{args.job}: {'stop requested' if stop(args.job, args.address) else 'not running'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    check_output_file(Path(args.out), "--out", ".png")
    out, rows = write_report(args.experiment, args.storage, args.out)
    print(f"{'trial':12s} {'best':>8s} {'iteration':>9s}  params")
    for r in rows:
        flag = ("  (diverged)" if r["diverged"] else "") + ("  (chosen)" if r["chosen"] else "")
        print(f"{r['trial']:12s} {r['best']:8.4f} {r['iteration']:9d}  "
              f"{json.dumps(r['params'], sort_keys=True)}{flag}")
    print(f"wrote {out}")
    return 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors as one line (and exit code 2), like every other bad input."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    p = ArgumentParser(prog="metagan", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    t = sub.add_parser("train", help="meta-train one configuration")
    t.add_argument("config", nargs="?", help="run config YAML (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted config key, e.g. train.iterations=100")
    t.add_argument("--out", help="run directory (default runs/<config>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="few-shot accuracy of a checkpoint")
    e.add_argument("checkpoint", help="checkpoint directory or run directory")
    e.add_argument("--episodes", type=int, default=600,
                   help="tasks (per alphabet with --within-alphabet)")
    e.add_argument("--ways", type=int, help="classes per task (default: the run's evaluation "
                   "ways; 20 with --within-alphabet)")
    e.add_argument("--shots", type=int)
    e.add_argument("--split", choices=["train", "val", "test"], default="val",
                   help="the split whose tasks are scored (default meta-val; the held-out "
                   "meta-test only when asked: --split test)")
    e.add_argument("--within-alphabet", action="store_true",
                   help="one-shot tasks of --ways (20) unrotated characters of one alphabet each "
                   "(Lake et al. 2015); overall and per-alphabet accuracy")
    e.add_argument("--adapt-steps", type=int, metavar="N",
                   help="a few-shot generator's adaptation steps per character (default: the "
                   "run's gan.eval_adapt_steps), to select the length on meta-val")
    e.set_defaults(func=_evaluate)

    s = sub.add_parser("sample", help="a PNG grid: real support drawings, then samples")
    s.add_argument("checkpoint", help="checkpoint directory or run directory of a GAN method")
    s.add_argument("--out", required=True, help="PNG path")
    s.add_argument("--support", "--character", dest="support",
                   help="a folder of drawings of one character (default: an unseen character "
                   "of --split); with it, only the checkpoint is read, not the training data")
    s.add_argument("--split", choices=["train", "val", "test"], default="val",
                   help="where the default character comes from (default meta-val)")
    s.add_argument("--samples", type=int, default=30)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--adapt-steps", type=int, metavar="N",
                   help="a few-shot generator's adaptation steps (default: the run's "
                   "gan.eval_adapt_steps)")
    s.set_defaults(func=_sample)

    pr = sub.add_parser("predict", help="classify your own images: adapt to a labelled "
                        "support folder, label a folder of queries")
    pr.add_argument("checkpoint", help="checkpoint directory or run directory of a classifier")
    pr.add_argument("--support", required=True, help="DIR/<class>/*.png: the labelled examples")
    pr.add_argument("--query", required=True, help="a folder of images to classify")
    pr.add_argument("--out", help="CSV path (default: the CSV on standard output)")
    pr.add_argument("--seed", type=int, default=0, help="a method's sampling while adapting")
    pr.set_defaults(func=_predict)

    q = sub.add_parser("search", help="hyperparameter search on Ray Tune (see search_spaces/)")
    q.add_argument("space", nargs="?", help="search-space YAML")
    q.add_argument("--name", help="experiment name (default search-<time>)")
    q.add_argument("--storage", help="s3://bucket/prefix or a local path (default: the space's "
                   "storage.uri, ./results)")
    q.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted key of the space file (search.num_samples=4) or of "
                   "its base config (train.iterations=200)")
    q.add_argument("--resume", metavar="NAME", help="continue an interrupted experiment from storage")
    q.add_argument("--dry-run", action="store_true",
                   help="print the validated space and a few sampled configs; start nothing")
    q.add_argument("--samples", type=int, default=3, help="configs shown by --dry-run")
    q.add_argument("--json", help="also write the result (best trial, all trials) to this file")
    q.add_argument("--quiet", action="store_true", help="no live progress table")
    q.set_defaults(func=_search)


    def add_address(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                            help="Ray dashboard, http://HEAD:8265 (default $RAY_ADDRESS)")

    j = sub.add_parser("submit", help="run a search as a Ray Job on a cluster")
    j.add_argument("space", help="search-space YAML")
    add_address(j)
    j.add_argument("--storage", required=True, help="s3://bucket/prefix every node can reach")
    j.add_argument("--name", help="experiment name (default search-<time>)")
    j.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    j.set_defaults(func=_submit)
    st = sub.add_parser("status", help="status of a submitted search (or of all)")
    st.add_argument("job", nargs="?")
    add_address(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)
    lg = sub.add_parser("logs", help="a submitted search's output")
    lg.add_argument("job")
    add_address(lg)
    lg.add_argument("--follow", action="store_true", help="stream until the job ends")
    lg.set_defaults(func=_logs)
    sp = sub.add_parser("stop", help="stop a submitted search")
    sp.add_argument("job")
    add_address(sp)
    sp.set_defaults(func=_stop)
    rp = sub.add_parser("report", help="learning curves PNG and a table of an experiment's trials")
    rp.add_argument("experiment")
    rp.add_argument("--storage", required=True, help="s3://bucket/prefix or a local path")
    rp.add_argument("--out", default="report.png")
    rp.set_defaults(func=_report)

    d = sub.add_parser("data", help="datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("download", help="download and verify the official Omniglot zips")
    dl.add_argument("--dest", default="data/omniglot")
    dl.add_argument("--sets", nargs="+", default=["images_background", "images_evaluation"])
    dl.set_defaults(func=_data_download)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `metagan` console script."""
    from .runtime import tune_allocator

    try:
        args = build_parser().parse_args(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    tune_allocator()
    try:
        return args.func(args)
    except ImportError as e:
        missing = e.name or ""
        if missing not in EXTRA_OF:  # only the package itself absent, not a module moved in it
            raise
        extra = "cluster" if args.command in ("submit", "status", "logs", "stop") else EXTRA_OF[missing]
        print(f"error: metagan {args.command} needs {missing}, which is not installed: "
              f"pip install 'metagan[{extra}]'", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        from .results import SearchFailed
        from .storage import StorageError
        from .tune.cluster import ClusterError

        if isinstance(e, SearchFailed):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        if isinstance(e, ClusterError):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_CLUSTER
        if isinstance(e, StorageError):
            print(f"error: {e}", file=sys.stderr)
            if args.command == "search":
                # Tune's background upload threads may still be waiting on the dead endpoint
                # inside pyarrow; a normal interpreter exit would abort on them.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(EXIT_STORAGE)
            return EXIT_STORAGE
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
