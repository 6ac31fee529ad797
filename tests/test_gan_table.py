"""benchmarks/gan_table.py's ablation rows, merge and committed outputs, on --quick sizes."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def benchmark_module(name: str) -> ModuleType:
    """benchmarks/NAME.py imported as the module NAME (registered, so other scripts import it)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gan_table() -> Iterator[ModuleType]:
    """The benchmark script as a module (its --threads 1 undone afterwards)."""
    threads = torch.get_num_threads()
    yield benchmark_module("gan_table")
    torch.set_num_threads(threads)


QUICK = ["--quick", "--threads", "1", "--no-generation", "--seeds", "0"]


def test_an_ablation_row_run_apart_merges_into_a_paired_json_row_and_benchmarks(
        gan_table: ModuleType, tmp_path: Path) -> None:
    """A plain row in one process and an --extra row (DAGAN with no fakes, which is the plain
    learner bit for bit) in another merge into gan_table.json's schema, paired on the same
    episodes (difference exactly 0), and into the marked section of a Markdown file."""
    gan_table.main([*QUICK, "--methods", "ProtoNet", "--out", str(tmp_path / "a")])
    gan_table.main([*QUICK, "--methods", "--extra", "no fakes=ProtoNet+DAGAN:gan.augment=0",
                    "longer=ProtoNet+DAGAN:gan.augment=0,gan.pretrain_steps=3",
                    "--out", str(tmp_path / "b")])
    bench = tmp_path / "BENCHMARKS.md"
    begin, end = gan_table.markers("ablations")
    bench.write_text(f"intro\n{begin}\nold table\n{end}\nafter\n")
    gan_table.main(["--merge", str(tmp_path / "a" / "raw.json"), str(tmp_path / "b" / "raw.json"),
                    "--out", str(tmp_path / "m"), "--json", str(tmp_path / "gan_table.json"),
                    "--benchmarks", str(bench), "--section", "ablations"])
    rows = json.loads((tmp_path / "gan_table.json").read_text())["rows"]
    assert [(r["method"], r["baseline"], r["seeds"]) for r in rows] == [
        ("no fakes", "ProtoNet", [0]), ("longer", "ProtoNet", [0])]
    row = rows[0]
    assert {"accuracy", "baseline_accuracy", "paired_diff", "paired_diff_ci95"} <= set(row)
    assert row["paired_diff"] == 0.0 and row["accuracy"] == row["baseline_accuracy"]
    raw = json.loads((tmp_path / "a" / "raw.json").read_text())["seeds"]["0"]["classification"]
    alphabets = raw["ProtoNet"]["per_alphabet"]
    assert set(alphabets) == {"Greek", "Latin"} and all(0 <= v <= 1 for v in alphabets.values())
    doc = bench.read_text()
    assert doc.startswith("intro\n") and doc.endswith("after\n") and "old table" not in doc
    assert "| no fakes | gan.augment=0 | 0 |" in doc
    # The footnote gives each DAGAN row's own pre-training length where it overrides it.
    quick = json.loads((tmp_path / "b" / "raw.json").read_text())["settings"]["pretrain_steps"]
    assert f"pre-training: {quick} G and D updates (configs/dagan.yaml); longer: 3," in doc


def test_merge_refuses_a_row_of_a_seed_given_twice(gan_table: ModuleType, tmp_path: Path) -> None:
    """Two files that both hold seed 0's ProtoNet row are refused, naming the row."""
    gan_table.main([*QUICK, "--methods", "ProtoNet", "--out", str(tmp_path / "a")])
    raw = str(tmp_path / "a" / "raw.json")
    with pytest.raises(SystemExit, match=r"seed 0 rows \['ProtoNet'\] already in another file"):
        gan_table.main(["--merge", raw, raw, "--out", str(tmp_path / "m")])


@pytest.mark.parametrize("extra", ["no-equals", "x=NoSuchMethod:gan.augment=1",
                                   "x=ProtoNet+DAGAN:augment=1", "ProtoNet=ProtoNet:gan.augment=1"])
def test_a_malformed_ablation_row_is_refused_before_training(
        gan_table: ModuleType, extra: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--extra needs LABEL=METHOD:section.key=value with a known METHOD and a new LABEL."""
    with pytest.raises(SystemExit) as exit_info:
        gan_table.parse_args(["--extra", extra])
    assert exit_info.value.code == 2
    assert "--extra" in capsys.readouterr().err


def test_merge_takes_each_seeds_own_gen_run_and_refuses_other_differences(
        gan_table: ModuleType, tmp_path: Path) -> None:
    """Seeds scored apart, each from its own meta-trained run (--gen-run) and one with --grid,
    merge into one table over both seeds; files whose training settings differ do not."""
    gan_table.main([*QUICK, "--methods", "ProtoNet", "--out", str(tmp_path / "a")])
    raw = json.loads((tmp_path / "a" / "raw.json").read_text())
    raw["settings"].update(gen_run="/runs/seed0", grid=True)
    (tmp_path / "seed0.json").write_text(json.dumps(raw))
    raw["seeds"] = {"1": raw["seeds"].pop("0")}
    raw["settings"].update(gen_run="/runs/seed1", grid=False, seeds=[1])
    (tmp_path / "seed1.json").write_text(json.dumps(raw))
    gan_table.main(["--merge", str(tmp_path / "seed0.json"), str(tmp_path / "seed1.json"),
                    "--out", str(tmp_path / "m")])
    merged = json.loads((tmp_path / "m" / "raw.json").read_text())
    assert merged["settings"]["seeds"] == [0, 1]
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert "ProtoNet" in json.dumps(summary)
    raw["settings"]["gen_run"] = None  # a GAN trained by the script, not a meta-trained run
    (tmp_path / "trained_here.json").write_text(json.dumps(raw))
    with pytest.raises(SystemExit, match=r"settings differ .*gen_run: a meta-trained run"):
        gan_table.main(["--merge", str(tmp_path / "seed0.json"),
                        str(tmp_path / "trained_here.json"), "--out", str(tmp_path / "m2")])
    raw["settings"].update(gen_run="/runs/seed1", updates=raw["settings"]["updates"] + 1)
    (tmp_path / "other.json").write_text(json.dumps(raw))
    with pytest.raises(SystemExit, match=r"settings differ .*\(updates\)"):
        gan_table.main(["--merge", str(tmp_path / "seed0.json"), str(tmp_path / "other.json"),
                        "--out", str(tmp_path / "m3")])
    raw["settings"].update(updates=raw["settings"]["updates"] - 1, adapt_steps=[0, 1, 10, 50, 400])
    (tmp_path / "longer.json").write_text(json.dumps(raw))
    with pytest.raises(SystemExit, match=r"settings differ .*\(adapt_steps\)"):
        gan_table.main(["--merge", str(tmp_path / "seed0.json"), str(tmp_path / "longer.json"),
                        "--out", str(tmp_path / "m4")])


def test_a_generation_row_that_diverged_on_one_seed_is_averaged_over_the_others(
        gan_table: ModuleType, tmp_path: Path) -> None:
    """The generation table of two seeds where one seed's row is NaN (a diverged generator):
    the row's means are the finite seed's values, and the table names the divergence; the
    update count printed is what the seeds' GANs trained."""
    gan_table.main(["--quick", "--threads", "1", "--seeds", "0", "--methods",
                    "--out", str(tmp_path / "a")])
    raw = json.loads((tmp_path / "a" / "raw.json").read_text())
    rows = raw["seeds"]["0"]["generation"]["rows"]
    assert {"real held-out drawings", "support + affine jitter", "DAGAN G"} <= set(rows)
    name = next(r for r in rows if r.startswith("pooled-GAN G"))
    seed1 = json.loads(json.dumps(raw["seeds"]["0"]))
    seed1["generation"]["rows"][name] = {k: float("nan") for k in rows[name]}
    raw["seeds"]["1"] = seed1
    raw["settings"]["seeds"] = [0, 1]
    (tmp_path / "two.json").write_text(json.dumps(raw))
    gan_table.main(["--merge", str(tmp_path / "two.json"), "--out", str(tmp_path / "m"),
                    "--markdown", str(tmp_path / "table.md")])
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())["generation"]
    assert summary[name]["diverged"] == 1 and summary[name]["kid"] == [rows[name]["kid"], 0.0]
    table = (tmp_path / "table.md").read_text()
    assert f"| {name} (diverged on 1 of 2 seeds: the others' mean) |" in table
    assert f"GANs trained {raw['seeds']['0']['generation']['updates']} updates" in table
    seed1["generation"]["eval_shots"] += 1  # another few-shot GAN config: not one table
    (tmp_path / "two.json").write_text(json.dumps(raw))
    with pytest.raises(SystemExit, match="differ in eval_shots"):
        gan_table.main(["--merge", str(tmp_path / "two.json"), "--out", str(tmp_path / "m2")])
    seed1["generation"]["eval_shots"] -= 1
    del seed1["generation"]["pooled_gan"]  # a file from before the pooled GAN's fix
    (tmp_path / "two.json").write_text(json.dumps(raw))
    with pytest.raises(SystemExit, match="pooled-GAN baselines were trained by different"):
        gan_table.main(["--merge", str(tmp_path / "two.json"), "--out", str(tmp_path / "m4")])


def test_the_embedding_line_prints_the_noise_response_level_by_level(gan_table: ModuleType
                                                                       ) -> None:
    """The generation table's embedding line gives the KID at each noise level (mean over
    seeds, levels in order of strength) and counts the seeds whose KID rose at every level, so a
    dip at strong noise is shown, not hidden in a share."""
    seeds = [{"one_shot_accuracy": 0.9, "noise_kid_0": 0.0, "noise_kid_10": 0.2,
              "noise_kid_50": 0.3, "noise_kid_25": 0.4, "noise_monotone": 0.0},
             {"one_shot_accuracy": 0.9, "noise_kid_0": 0.0, "noise_kid_10": 0.1,
              "noise_kid_50": 0.5, "noise_kid_25": 0.2, "noise_monotone": 1.0}]
    line = gan_table.noise_response(seeds)
    assert "std 0 / 0.1 / 0.25 / 0.5: 0 / 0.15 / 0.3 / 0.4" in line
    assert line.endswith("rising at every level on 1 of 2 seeds")


def test_the_pooled_gan_baseline_trains_on_gs_range_with_an_unconditional_g(
        gan_table: ModuleType) -> None:
    """The pooled-GAN baseline of a set-conditioned run builds an unconditional G (it failed
    before: SetGenerator needs drawings), and its critic reads real drawings in G's [-1, 1],
    as the meta-learned pair's does (they were fed in [0, 1] beside fakes in [-1, 1])."""
    from metagan.config import load_config
    from metagan.data import load_splits
    from metagan.gan.nets import Discriminator

    cfg = load_config(ROOT / "configs" / "fewshot_gan.yaml",
                      ["gan.condition=set", "task.meta_batch=1", "gan.width=8"])
    seen: list[torch.Tensor] = []

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, Discriminator):
            seen.append(args[0].detach())

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        gan, _ = gan_table.train_pooled_gan(cfg, load_splits(cfg.data), 2)
    finally:
        hook.remove()
    assert gan.cfg.gan.condition == "weights"
    assert seen and all(float(x.min()) >= -1.0 and float(x.max()) <= 1.0 for x in seen)
    assert min(float(x.min()) for x in seen) < -0.99  # the drawings' background, mapped to -1
    support = torch.from_numpy(load_splits(cfg.data).test.images[:5]).float().div(255)
    samples = gan.adapt_and_sample(support.view(1, 5, 1, *support.shape[1:]), 3, 1,
                                   torch.Generator().manual_seed(0))
    assert samples.shape == (1, 3, 1, *support.shape[1:]) and torch.isfinite(samples).all()


def test_the_pooled_gan_is_trained_once_per_key_and_reloaded(gan_table: ModuleType,
                                                             tmp_path: Path) -> None:
    from metagan.config import load_config
    from metagan.data import load_splits

    from .test_loop import assert_same_state

    cfg = load_config(ROOT / "configs" / "fewshot_gan.yaml",
                      ["task.meta_batch=1", "gan.width=8", f"data.cache_dir={tmp_path}"])
    splits = load_splits(cfg.data)
    trained, took = gan_table.pooled_gan(cfg, splits, 2)
    stored = list((tmp_path / "pooled_gan").glob("*.pt"))
    assert len(stored) == 1
    loaded, took_again = gan_table.pooled_gan(cfg, splits, 2)
    assert took_again == took  # what the training took when it ran, read back
    assert_same_state(trained.state_dict(), loaded.state_dict(), "pooled GAN")
    # The key changes with what the GAN depends on, not with where or how fast it runs.
    assert gan_table.pooled_gan_key(cfg, 3) != gan_table.pooled_gan_key(cfg, 2)
    lr = load_config(ROOT / "configs" / "fewshot_gan.yaml",
                     ["task.meta_batch=1", "gan.width=8", "optim.lr=0.01"])
    assert gan_table.pooled_gan_key(lr, 2) != gan_table.pooled_gan_key(cfg, 2)
    threads = load_config(ROOT / "configs" / "fewshot_gan.yaml",
                          ["task.meta_batch=1", "gan.width=8", f"data.cache_dir={tmp_path}",
                           "train.threads=1", "train.iterations=7"])
    assert gan_table.pooled_gan_key(threads, 2) == gan_table.pooled_gan_key(cfg, 2)


def test_adapt_steps_are_distinct_and_not_negative(gan_table: ModuleType,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert gan_table.parse_args(["--adapt-steps", "200", "0", "10"]).adapt_steps == [0, 10, 200]
    assert gan_table.parse_args([]).adapt_steps == list(gan_table.STEPS)
    for bad in (["-1"], ["10", "10"]):
        with pytest.raises(SystemExit):
            gan_table.parse_args(["--adapt-steps", *bad])
        assert "--adapt-steps" in capsys.readouterr().err


def test_each_adapted_generator_gets_a_row_per_adaptation_length(gan_table: ModuleType) -> None:
    from types import SimpleNamespace

    loop = SimpleNamespace(method=None)
    rows = gan_table.generators(loop, loop, None, {"DAGAN": loop}, [0, 400])
    for g in ("meta-learned G", "pooled-GAN G", "never-trained G"):
        assert [r for r in rows if r.startswith(g)] == [f"{g}, 0 steps", f"{g}, 400 steps"]
    assert "DAGAN G" in rows and "support + affine jitter" in rows


def test_the_low_data_classifier_trains_each_variant_on_the_same_real_drawings(
        gan_table: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/dagan_samples.py's low-data classifier (the DAGAN paper's section 5.1): the
    three variants train on the same k drawings per character, DAGAN's with `fakes` samples
    of each drawing added under its label, affine jitter's with a jitter generator, and all
    are scored on the same held-out drawings."""
    from .test_dagan import dagan_loop

    samples = benchmark_module("dagan_samples")  # imports gan_table, which the fixture loaded
    loop = dagan_loop("protonet")
    trained: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
    real_train = samples.train_classifier

    def recorded(x: torch.Tensor, y: torch.Tensor, *args: object) -> torch.nn.Module:
        trained.append((x, y, args[-1] is not None))
        return real_train(x, y, *args)

    monkeypatch.setattr(samples, "train_classifier", recorded)
    out = samples.low_data(loop.splits, loop.method, shots=2, fakes=3, steps=2, seed=0)
    assert list(out) == list(samples.VARIANTS) == ["none", "affine jitter", "DAGAN"]
    held = {len(v) for v in out.values()}
    assert len(held) == 1 and held.pop() > 0
    assert set(sum(out.values(), [])) <= {0.0, 1.0}
    (x, y, jit0), (x1, y1, jit1), (x2, y2, jit2) = trained
    assert (jit0, jit1, jit2) == (False, True, False)
    assert torch.equal(x, x1) and torch.equal(y, y1)
    assert x2.shape[0] == 4 * x.shape[0] and torch.equal(x2[:len(x)], x)  # reals lead
    assert torch.equal(y2, torch.cat([y, y.repeat(3)]))
    assert not torch.equal(x2[len(x):], x.repeat(3, 1, 1, 1))  # generated, not copies
