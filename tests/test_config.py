"""Config reading and validation: every error names its field, the CLI exits 2 without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from metagan.config import Config, ConfigError, build_config, load_config, read_yaml, to_dict
from metagan.loop import EpisodeLoop
from metagan.methods import check_reads, is_read, reads_of
from metagan.space import load_spec

from .conftest import ROOT, run_cli, tiny_data, write_yaml

CONFIGS = ROOT / "configs"


def test_defaults_round_trip() -> None:
    cfg = build_config({})
    assert cfg == Config()
    assert build_config(to_dict(cfg)) == cfg


def test_override_dotted_keys(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", tiny_data())
    cfg = load_config(path, ["train.iterations=42", "optim.lr=0.01", "meta.algorithm=maml"])
    assert cfg.train.iterations == 42 and cfg.optim.lr == 0.01 and cfg.meta.algorithm == "maml"


@pytest.mark.parametrize("data, field, words", [
    ({"train": {"iteration": 5}}, "train.iteration", "unknown key"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"task": {"ways": "five"}}, "task.ways", "expected an integer"),
    ({"task": {"ways": 2.5}}, "task.ways", "expected an integer"),
    ({"rotations": True}, "rotations", "unknown key"),
    ({"data": {"rotations": "yes"}}, "data.rotations", "expected true or false"),
    ({"optim": {"lr": 0}}, "optim.lr", "must be positive"),
    ({"optim": {"lr": -1e-3}}, "optim.lr", "must be positive"),
    ({"meta": {"inner_lr": 0.0}}, "meta.inner_lr", "must be positive"),
    ({"meta": {"algorithm": "sgd"}}, "meta.algorithm", "expected one of"),
    ({"task": {"shots": 0}}, "task.shots", "must be positive"),
    ({"task": "x"}, "task", "expected a mapping"),
    ({"data": {"source": "folder", "root": "/no/such/dir"}}, "data.root", "does not exist"),
    ({"data": {"source": "omniglot"}}, "data.root", "required"),
    ({"train": {"device": "tpu"}}, "train.device", "expected cpu"),
    ({"method": "gan"}, "method", "expected one of 'meta' | 'dagan'"),
])
def test_config_errors_name_the_field(data: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_config(data)
    assert str(e.value).startswith(f"{field}:") and words in str(e.value)


def test_ways_larger_than_a_split() -> None:
    # meta-val is one alphabet: at most 47 characters x 4 rotations, never 1000.
    cfg = build_config(tiny_data(**{"task.ways": 1000}))
    with pytest.raises(ConfigError, match=r"^task\.ways: 1000-way tasks need 1000 classes but "
                                          r"meta-\w+ has \d+"):
        EpisodeLoop(cfg)


def test_more_images_per_class_than_exist() -> None:
    cfg = build_config(tiny_data(**{"task.shots": 10, "task.queries": 11}))
    with pytest.raises(ConfigError, match="21 images per class needed"):
        EpisodeLoop(cfg)


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: {ways: 5\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_bad_override() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(Path(__file__).parents[1] / "configs" / "protonet.yaml", ["train.iterations"])


@pytest.mark.parametrize("data, words", [
    ({"task": {"ways": 5, "shots": 1, "queries": 1, "meta_batch": 2}, "bogus": 1},
     "bogus: unknown key"),
    ({"optim": {"lr": -1.0}}, "optim.lr: must be positive"),
    ({"data": {"source": "folder", "root": "/no/such/dir"}}, "data.root: dataset path"),
    ({"task": {"ways": 1000}}, "task.ways: 1000-way tasks need"),
    ({"meta": {"algorithm": "protonet", "inner_lr": 0.1}},
     "meta.inner_lr: not read by method 'meta' with meta.algorithm 'protonet'"),
])
def test_cli_exit_code_2_without_traceback(tmp_path: Path, data: dict, words: str) -> None:
    path = write_yaml(tmp_path / "c.yaml", data)
    out = tmp_path / "run"
    r = run_cli("train", str(path), "--out", str(out), "--quiet")
    assert r.returncode == 2, r.stderr
    assert words in r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "checkpoints").exists()  # nothing started


def test_cli_missing_config_file(tmp_path: Path) -> None:
    r = run_cli("train", str(tmp_path / "nope.yaml"), "--quiet")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_cli_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    path = write_yaml(tmp_path / "c.yaml", tiny_data())
    r = run_cli("train", str(path), "--out", str(out), "--quiet")
    assert r.returncode == 2 and "already holds a run" in r.stderr
    assert (out / "metrics.jsonl").read_text() == "{}\n"  # nothing lost


GAN_VALUES = {"loss": "hinge", "z_dim": 16, "width": 16, "spectral_norm": True, "ema": 0.5,
              "g_lr": 0.001, "d_lr": 0.001, "beta1": 0.9, "beta2": 0.99, "augment": 2,
              "pretrain_steps": 10, "schedule": "alternate", "augment_at_test": False,
              "meta_algorithm": "fomaml", "inner_steps": 2, "inner_lr": 0.1,
              "eval_adapt_steps": 2, "eval_shots": 2, "embedding_iterations": 10}
DAGAN_ONLY = {"augment": 3, "pretrain_steps": 10, "schedule": "alternate",
              "augment_at_test": False}
UNREAD = [  # (shipped config, key, value, the method named in the refusal)
    # metagan: the classifier is the discriminator, trained by the run's optimiser.
    *[("metagan", f"gan.{k}", v, "metagan") for k, v in [
        ("loss", "hinge"), ("d_lr", 0.001), ("ema", 0.5), ("spectral_norm", True)]],
    # fewshot_gan builds no meta-learner (and its one phase has its own betas).
    *[("fewshot_gan", k, v, "fewshot_gan") for k, v in [
        ("meta.algorithm", "maml"), ("meta.inner_lr", 0.1), ("meta.inner_steps", 2),
        ("meta.eval_inner_steps", 2), ("model.hidden", 32), ("model.depth", 3),
        ("model.downsample", "maxpool"), ("optim.name", "sgd"), ("task.eval_ways", 3)]],
    # ProtoNet has no inner loop.
    *[("protonet", f"meta.{k}", v, "meta") for k, v in [
        ("inner_lr", 0.1), ("inner_steps", 2), ("eval_inner_steps", 2)]],
    # Only dagan augments support sets.
    *[(config, f"gan.{k}", v, method) for config, method in [
        ("protonet", "meta"), ("metagan", "metagan"), ("fewshot_gan", "fewshot_gan")]
      for k, v in DAGAN_ONLY.items()],
    # A plain meta-learner reads no gan.* key.
    *[("maml", f"gan.{k}", v, "meta") for k, v in GAN_VALUES.items()],
]


@pytest.mark.parametrize("config, key, value, method", UNREAD,
                         ids=[f"{c}-{k}" for c, k, _, _ in UNREAD])
def test_a_key_the_method_does_not_read_is_refused(config: str, key: str, value: object,
                                                   method: str) -> None:
    cfg = build_config(read_yaml(CONFIGS / f"{config}.yaml"), {key: value})
    with pytest.raises(ConfigError) as e:
        EpisodeLoop(cfg)  # refused before any data is read
    assert str(e.value).startswith(f"{key}: not read by method {method!r}"), str(e.value)
    assert "\n" not in str(e.value)


def test_a_gradient_penalty_weight_metagan_does_not_read_is_refused() -> None:
    # MetaGAN has no GAN loss of its own to penalise: the weight is an unread key there.
    cfg = load_config(CONFIGS / "metagan.yaml", ["gan.gp_weight=1"])
    with pytest.raises(ConfigError, match=r"^gan\.gp_weight: not read by method 'metagan'"):
        EpisodeLoop(cfg)


def test_defaults_never_trigger_the_read_check() -> None:
    # Given explicitly, a default changes nothing ...
    check_reads(load_config(CONFIGS / "metagan.yaml", ["gan.ema=0.0", "gan.loss=nonsaturating"]))
    # ... so a run's resolved config.yaml, which lists every key, stays valid.
    for path in sorted(CONFIGS.glob("*.yaml")):
        check_reads(build_config(to_dict(load_config(path))))


def _leaf_keys(data: dict, prefix: str = "") -> list[str]:
    return [key for k, v in data.items()
            for key in (_leaf_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k])]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_gives_only_keys_it_reads(path: Path) -> None:
    cfg = load_config(path)
    check_reads(cfg)
    reads = reads_of(cfg)
    assert [k for k in _leaf_keys(read_yaml(path)) if not is_read(k, reads)] == []


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_space_loads(path: Path) -> None:
    assert load_spec(path).params  # every branch's configs checked, their keys included
