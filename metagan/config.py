"""Typed run configuration: frozen dataclasses read from YAML and validated in one place."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """Bad user input: a malformed file, an unknown key, a wrong type or an impossible value."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception as one short line for a message: its first line, else its type's name."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split into meta-train / meta-val / meta-test."""

    # bundled: the two Omniglot minimal background splits shipped in the package;
    # omniglot: the full official zips in `root` (meta-test = the evaluation alphabets);
    # folder: a user's own `root/<class>/*.png|jpg`.
    source: Literal["bundled", "omniglot", "folder"] = "bundled"
    root: str | None = None
    image_size: int = 28
    channels: int = 1  # 1: grayscale; 3: RGB (folder data only; Omniglot is grayscale)
    rotations: bool = True  # 90/180/270-degree rotations as extra classes
    affine_augment: bool = False  # jitter meta-train images (+-10 deg, +-10% scale, +-2 px)
    split_seed: int = 0
    val_groups: int = 1  # alphabets (or class folders) held out for meta-validation
    test_groups: int = 2  # alphabets held out for meta-test (bundled / folder sources)
    cache_dir: str | None = None


@dataclass(frozen=True)
class TaskConfig:
    """The N-way K-shot episode shape."""

    ways: int = 5
    shots: int = 1
    queries: int = 15
    meta_batch: int = 32
    eval_ways: int | None = None  # ways of evaluation tasks (default: ways); metric learners only


@dataclass(frozen=True)
class ModelConfig:
    """The conv4 backbone."""

    hidden: int = 64
    depth: int = 4
    downsample: Literal["stride", "maxpool"] = "stride"
    # Where batch norm takes its statistics, in meta-training as at meta-test. support: from
    # each task's real support images only, applied to every image (support, queries, generated
    # images), so a query's prediction depends only on itself and the support set (MetaBN,
    # Bronskill et al. 2020). transductive: from the batches each learner forms (ProtoNet:
    # support and queries together; MAML/Reptile: the queries alone), so a query's prediction
    # also depends on the other queries. instance: every image normalised over its own pixels
    # (per channel, with the affine parameters; no batch statistics at all), non-transductive.
    batch_norm: Literal["support", "transductive", "instance"] = "support"


# The meta-learners whose model ends in a `ways`-class classifier head (the others are
# metric-based). config sits below meta, so it states this fact of the registry instead of
# importing it; tests/test_layering.py checks the two agree.
HEAD_ALGORITHMS = ("maml", "fomaml", "reptile")


@dataclass(frozen=True)
class MetaConfig:
    """The meta-learner and its inner loop (inner_* fields are unused by protonet)."""

    algorithm: Literal["maml", "fomaml", "reptile", "protonet"] = "protonet"
    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int | None = None  # default: inner_steps


@dataclass(frozen=True)
class GanConfig:
    """The GAN of a GAN method (unused when method is "meta")."""

    loss: Literal["nonsaturating", "hinge", "least_squares", "wasserstein"] = "nonsaturating"
    gp_weight: float = 10.0  # gradient penalty weight (wasserstein only; 0 = none)
    z_dim: int = 32
    width: int = 32  # base channels of G and D
    spectral_norm: bool = False  # on D's layers
    ema: float = 0.0  # decay of the generator's weight EMA used for sampling (0 = off)
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    # dagan: data augmentation for the meta-learner. G and D are pre-trained once, outside the
    # loop's iterations (which are all meta-learner updates), and stored in the cache directory
    # keyed by the data, the gan keys that shape pre-training and train.seed: runs that share
    # them load it. configs/dagan.yaml sets WGAN-GP (gan.loss: wasserstein, gan.gp_weight: 10).
    augment: int = 1  # generated samples per real support sample (0 = none: the plain learner)
    fake_weight: float = 1.0  # dagan: a generated support image's weight against a real one
    pretrain_steps: int = 200  # G updates of pre-training (each after critic_steps D updates)
    critic_steps: int = 5  # D (critic) updates per G update, as in WGAN-GP
    schedule: Literal["frozen", "alternate"] = "frozen"  # after pre-training: G fixed or trained
    augment_at_test: bool = True
    # dagan: G's last layer outputs a change to its source drawing (in logit space, zero at
    # initialisation: G starts as the identity and learns to redraw), instead of a new image.
    residual: bool = False
    # dagan: the share of the critic's negatives that are a real drawing of ANOTHER character
    # paired with the source (Reed et al. 2016's matching-aware discriminator), the rest being
    # G's fakes. It teaches the critic that a drawing must be of its source's character, which
    # the paper's critic learns only from G's own failures. 0: the DAGAN paper.
    mismatch_weight: float = 0.0
    # dagan: the weight of a class-keeping term in G's objective (beyond the paper): each fake
    # must be recognised as its source's character among the batch's characters, by the nearest
    # real drawing in a character embedding E trained beside the critic on real meta-train
    # pairs only (a one-shot ProtoNet task). 0: the DAGAN paper (G answers to the critic alone).
    class_weight: float = 0.0
    # dagan: the weight of a mode-seeking term in G's objective (beyond the paper; Mao et al.
    # 2019): two noise draws per source, G penalised by 1 / (mean |G(x, z1) - G(x, z2)| /
    # mean |z1 - z2|), so that it cannot ignore its noise and give one fake per source. 0: off.
    diversity_weight: float = 0.0
    # dagan: what draws the fakes. uresnet: DAGAN's pre-trained G. affine: random affine jitter
    # of the source drawing (no GAN, nothing pre-trained): fakes that keep their class by
    # construction, the control that says what faithful augmentation is worth to a learner.
    generator: Literal["uresnet", "affine"] = "uresnet"
    # metagan: the classifier (N real classes + "fake") is the discriminator. It reads
    # gan.fake_weight too: the weight of the fake-image terms of its inner and outer losses.
    # The generator's objective: feature matching (the classifier's penultimate features of
    # fakes match those of the task's real queries, Salimans et al. 2016, as MetaGAN uses) or
    # nonsaturating (-log P(not fake) of the fakes).
    generator_loss: Literal["feature_matching", "nonsaturating"] = "feature_matching"
    # fewshot_gan: a meta-learned (G, D) pair for few-shot generation (FIGR; configs/
    # fewshot_gan.yaml sets the paper's WGAN-GP, 10 inner SGD steps at 1e-3, outer Adam 1e-4)
    meta_algorithm: Literal["reptile", "fomaml"] = "reptile"
    inner_steps: int = 5  # SGD steps of GAN training per task
    inner_lr: float = 0.05
    # Normalisation in G and D (fewshot_gan only): layer: each image by its own features
    # (FIGR's LayerNorm); none; batch: the original networks (G with each task's batch
    # statistics, D none).
    norm: Literal["layer", "none", "batch"] = "layer"
    # How G upsamples (fewshot_gan only): resize: nearest x2 + 3x3 conv (no checkerboard, as
    # FIGR); transposed: the original stride-2 transposed convolutions.
    upsample: Literal["resize", "transposed"] = "resize"
    # What conditions G on a character (fewshot_gan only): weights: its adapted weights alone
    # (FIGR); set: also the mean code of the task's drawings (a SetEncoder, adapted with G).
    condition: Literal["weights", "set"] = "weights"
    eval_adapt_steps: int = 5  # adaptation steps on an unseen character at evaluation
    eval_shots: int = 5  # drawings of an unseen character to adapt to
    embedding_iterations: int = 400  # ProtoNet iterations of the held-out metric embedding
    # A TorchScript feature extractor ([n, C, H, W] in [0, 1] with C = data.channels -> [n, D])
    # to use instead of the ProtoNet embedding, e.g. an Inception network for users who have its weights.
    feature_model: str | None = None


@dataclass(frozen=True)
class OptimConfig:
    """The outer (meta) optimiser."""

    name: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_halve_every: int = 0  # halve the lr every N iterations (0 = constant), as in ProtoNet
    grad_clip: float = 0.0  # clip the gradient norm of each phase (0 = no clipping)


@dataclass(frozen=True)
class TrainConfig:
    """Length, seed and device of a run."""

    iterations: int = 1000
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    threads: int = 0  # torch intra-op threads; 0 = torch's default


@dataclass(frozen=True)
class ScheduleConfig:
    """When the runner records, evaluates and checkpoints (in meta-iterations), the same for
    `metagan train` and a search's trials (runner.py); a trial reports to Tune at each evaluation."""

    log_every: int = 10  # a training-metrics record (`metagan train`'s metrics.jsonl)
    eval_every: int = 0  # a meta-val evaluation; 0 = only at the end
    eval_episodes: int = 100  # meta-val episodes per evaluation
    test_episodes: int = 600  # meta-test episodes of `metagan train`'s final evaluation
    checkpoint_every: int = 0  # 0 = only at the end


# Keys that moved to the schedule section (one key per concept): named in the refusal of the old one.
MOVED = {f"train.{k}": f"schedule.{k}" for k in
         ("log_every", "eval_every", "eval_episodes", "test_episodes", "checkpoint_every")}


# The shipped methods (the registry in metagan.meta.base; tests/test_layering.py checks the two
# agree): meta: a plain meta-learner; dagan: GAN-augmented support sets; fewshot_gan: a
# meta-learned GAN for few-shot generation; metagan: the classifier is the discriminator (N + fake).
MethodName = Literal["meta", "dagan", "fewshot_gan", "metagan"]
# Every method a config may name: the shipped ones and any registered since (config sits below
# the registry, so the registry's decorator tells it through register_method_name).
_METHOD_NAMES: dict[str, None] = dict.fromkeys(typing.get_args(MethodName))


def register_method_name(name: str) -> None:
    """Let configs name `name` as their method (called by the method registry's decorator)."""
    _METHOD_NAMES[name] = None


def method_names() -> tuple[str, ...]:
    """The method names a config may give, shipped ones first."""
    return tuple(_METHOD_NAMES)


@dataclass(frozen=True)
class Config:
    """A whole run: what `metagan train` reads and writes back as config.yaml."""

    method: str = "meta"  # one of method_names()
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


# ---------------------------------------------------------------------------------------------
# Reading: dict -> dataclass, rejecting unknown keys and wrong types with the field's dotted name.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against type `tp`, converting only what is lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")  # a bug in this module


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        if key in MOVED:
            raise ConfigError(f"{key}: moved to {MOVED[key]} (the schedule section)")
        raise ConfigError(f"{key}: unknown key (allowed in {where or 'the top level'}: "
                          f"{', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-ready data."""
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `--set dotted.key=value` (the value is read as YAML: 3, 0.1, true, [1, 2])."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.iterations=100")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot read value {raw!r}: {e}") from None
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of nested `data` with dotted-key values set."""
    out = _deepcopy(data)
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deepcopy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a ConfigError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (YAML expected)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def build_config(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, *,
                 check_paths: bool = True) -> Config:
    """Config from nested data plus dotted overrides, fully validated (`check_paths=False`:
    all but the existence of the data root and feature model, which a trained model used
    only to classify or sample never reads)."""
    cfg = from_dict(Config, apply_overrides(dict(data), overrides or {}))
    validate(cfg, check_paths=check_paths)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a run config file."""
    parsed = dict(parse_override(o) for o in overrides or [])
    data = read_yaml(path)
    if not data:  # most likely a wrong or truncated file: defaults are never silently used
        raise ConfigError(f"{path}: the config is empty (write `method: meta` to train on the "
                          "defaults)")
    return build_config(data, parsed)


def _positive(where: str, value: float | int) -> None:
    if value <= 0:
        raise ConfigError(f"{where}: must be positive, got {value}")


def _non_negative(where: str, value: float | int) -> None:
    if value < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value}")


def _check_torchscript(path: Path) -> None:
    """A TorchScript archive (torch.jit.save) has a code/ folder; a torch.save file has none."""
    if not path.is_file():
        raise ConfigError(f"gan.feature_model: {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    if not any("/code/" in name for name in names) or not any(n.endswith("constants.pkl") for n in names):
        raise ConfigError(f"gan.feature_model: {path} is not a TorchScript model "
                          "(save one with torch.jit.save(torch.jit.script(model), path))")


def validate(cfg: Config, check_paths: bool = True) -> None:
    """Every check that needs no data: values in range and (check_paths) paths that must
    exist."""
    if cfg.method not in _METHOD_NAMES:
        raise ConfigError(f"method: expected one of {' | '.join(map(repr, _METHOD_NAMES))}, "
                          f"got {cfg.method!r}")
    d = cfg.data
    _positive("data.image_size", d.image_size)
    if d.image_size < 8:
        raise ConfigError(f"data.image_size: must be at least 8, got {d.image_size}")
    if d.channels not in (1, 3):
        raise ConfigError(f"data.channels: 1 (grayscale) or 3 (RGB), got {d.channels}")
    if d.channels != 1 and d.source != "folder":
        raise ConfigError(f"data.channels: Omniglot is grayscale (1); {d.channels} channels need "
                          "data.source: folder")
    _non_negative("data.val_groups", d.val_groups)
    _non_negative("data.test_groups", d.test_groups)
    if d.source in ("omniglot", "folder"):
        if d.root is None:
            raise ConfigError(f"data.root: required when data.source is {d.source!r}")
        if d.root.startswith("s3://"):
            if not d.root[len("s3://"):].split("/")[0]:
                raise ConfigError(f"data.root: {d.root}: no bucket name")
        elif check_paths and not Path(d.root).expanduser().is_dir():
            raise ConfigError(f"data.root: dataset path {d.root} does not exist")
    elif d.root is not None:
        raise ConfigError("data.root: only used with data.source omniglot or folder")
    t = cfg.task
    for name in ("ways", "shots", "queries", "meta_batch"):
        _positive(f"task.{name}", getattr(t, name))
    if t.ways < 2:
        raise ConfigError(f"task.ways: a task needs at least 2 classes, got {t.ways}")
    if t.eval_ways is not None:
        if t.eval_ways < 2:
            raise ConfigError(f"task.eval_ways: a task needs at least 2 classes, got {t.eval_ways}")
        if t.eval_ways != t.ways and cfg.meta.algorithm in HEAD_ALGORITHMS:
            raise ConfigError(f"task.eval_ways: {cfg.meta.algorithm} has a {t.ways}-way classifier "
                              f"head, so evaluation tasks must be {t.ways}-way too")
    m = cfg.model
    _positive("model.hidden", m.hidden)
    _positive("model.depth", m.depth)
    if m.downsample == "maxpool" and d.image_size >> m.depth < 1:
        raise ConfigError(f"model.depth: {m.depth} poolings shrink a {d.image_size}px image "
                          "to nothing")
    if m.batch_norm not in ("support", "transductive", "instance"):
        raise ConfigError("model.batch_norm: expected 'support', 'transductive' or 'instance', "
                          f"got {m.batch_norm!r}")
    me = cfg.meta
    _positive("meta.inner_lr", me.inner_lr)
    _positive("meta.inner_steps", me.inner_steps)
    if me.eval_inner_steps is not None:
        _positive("meta.eval_inner_steps", me.eval_inner_steps)
    o = cfg.optim
    _positive("optim.lr", o.lr)
    _non_negative("optim.weight_decay", o.weight_decay)
    _non_negative("optim.lr_halve_every", o.lr_halve_every)
    _non_negative("optim.grad_clip", o.grad_clip)
    g = cfg.gan
    for name in ("z_dim", "width", "g_lr", "d_lr", "critic_steps", "inner_steps", "inner_lr",
                 "eval_shots", "embedding_iterations"):
        _positive(f"gan.{name}", getattr(g, name))
    _non_negative("gan.gp_weight", g.gp_weight)
    _non_negative("gan.pretrain_steps", g.pretrain_steps)
    _non_negative("gan.eval_adapt_steps", g.eval_adapt_steps)
    if g.feature_model is not None and check_paths:
        _check_torchscript(Path(g.feature_model).expanduser())
    if cfg.method == "metagan" and cfg.meta.algorithm not in ("maml", "fomaml"):
        raise ConfigError(f"meta.algorithm: metagan needs a classifier head with a fake class "
                          f"(maml or fomaml), got {cfg.meta.algorithm!r}")
    if cfg.method == "fewshot_gan" and g.spectral_norm:
        raise ConfigError("gan.spectral_norm: not supported by fewshot_gan, whose inner loop "
                          "adapts D functionally (spectral norm updates buffers in place)")
    if cfg.method == "fewshot_gan" and g.loss == "wasserstein" and g.gp_weight == 0:
        raise ConfigError("gan.gp_weight: fewshot_gan's Wasserstein critic is only constrained "
                          "by its gradient penalty (no weight clipping); give a positive weight "
                          "(FIGR: 10)")
    if cfg.method == "metagan":
        _non_negative("gan.fake_weight", g.fake_weight)
    for name in ("ema", "beta1", "beta2", "mismatch_weight"):
        if not 0.0 <= getattr(g, name) < 1.0:
            raise ConfigError(f"gan.{name}: must be in [0, 1), got {getattr(g, name)}")
    for name in ("class_weight", "diversity_weight"):
        _non_negative(f"gan.{name}", getattr(g, name))
        if cfg.method == "dagan" and g.generator == "affine" and getattr(g, name) > 0:
            raise ConfigError(f"gan.{name}: gan.generator affine has no G to train; use 0")
    tr = cfg.train
    if cfg.method == "dagan" and g.fake_weight != 1.0 and cfg.meta.algorithm == "reptile":
        raise ConfigError("gan.fake_weight: reptile meta-trains on support and queries together, "
                          "with no support-set loss to weight; use 1.0 or another meta-learner")
    if cfg.method == "dagan":  # (metagan allows a weight of 0: no fake terms)
        _positive("gan.fake_weight", g.fake_weight)
    if cfg.method == "dagan" and g.generator == "affine" and g.schedule == "alternate":
        raise ConfigError("gan.schedule: alternate trains DAGAN's G and D in the loop, and "
                          "gan.generator affine has none; use frozen")
    _non_negative("gan.augment", g.augment)
    _positive("train.iterations", tr.iterations)
    sch = cfg.schedule
    _positive("schedule.log_every", sch.log_every)
    _positive("schedule.eval_episodes", sch.eval_episodes)
    _positive("schedule.test_episodes", sch.test_episodes)
    _non_negative("schedule.eval_every", sch.eval_every)
    _non_negative("schedule.checkpoint_every", sch.checkpoint_every)
    _non_negative("train.threads", tr.threads)
    if not (tr.device in ("cpu", "cuda", "auto") or tr.device.startswith("cuda:")):
        raise ConfigError(f"train.device: expected cpu, cuda, cuda:N or auto, got {tr.device!r}")


def yaml_text(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def dump_yaml(cfg: Config, path: str | Path) -> None:
    """Write the resolved config."""
    Path(path).write_text(yaml_text(cfg))
