"""Per-character generation metrics on constructed generators, in the real metric embedding
(trained for 3 iterations to stay fast: nearly a fixed random conv4, which still separates
characters and noise) on held-out characters of the bundled Omniglot meta-test split."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from metagan.config import Config, ConfigError, build_config
from metagan.data import Splits, load_splits
from metagan.gan import evaluation
from metagan.gan.evaluation import (
    Sampler,
    character_sets,
    evaluate_generation,
    evaluation_sets,
    metric_embedding,
    real_baseline,
    validate_embedding,
)
from metagan.methods import GENERATION_KEYS

T = 20  # held-out characters, as the episode loop evaluates


@dataclass
class Setup:
    cfg: Config
    splits: Splits
    embed: torch.nn.Module


@pytest.fixture(scope="module")
def setup() -> Setup:
    """The fewshot_gan defaults (k = 5 support drawings) with a 3-iteration embedding."""
    cfg = build_config({"method": "fewshot_gan", "gan": {"embedding_iterations": 3}})
    splits = load_splits(cfg.data)
    return Setup(cfg, splits, metric_embedding(cfg, splits, torch.device("cpu")))


def score(s: Setup, sample: Sampler, samples: int | None = None, seed: int = 0,
          characters: int = T) -> dict[str, float]:
    """evaluate_generation of `sample` on the test split."""
    return evaluate_generation(s.cfg, s.splits, sample, "test", characters, samples, seed,
                               embed=s.embed)


def baseline(s: Setup, samples: int | None = None) -> dict[str, float]:
    """real_baseline on the same characters and sizes as `score`."""
    return real_baseline(s.cfg, s.splits, "test", T, embed=s.embed, samples=samples)


def noise(seed: int = 0) -> Sampler:
    """A generator of uniform pixel noise."""
    g = torch.Generator().manual_seed(seed)
    return lambda support, n: torch.rand(support.shape[0], n, *support.shape[2:], generator=g)


def test_every_row_uses_the_same_disjoint_sets_and_n(setup: Setup) -> None:
    support, reference, other = evaluation_sets(setup.splits.test, T, 5, None, 0)
    assert support.shape[:2] == (T, 5) and reference.shape[:2] == other.shape[:2] == (T, 7)
    for i in range(T):  # no drawing in two sets (Omniglot drawings are all distinct)
        flat = torch.cat([support[i], reference[i], other[i]]).flatten(1)
        assert torch.unique(flat, dim=0).shape[0] == 19
    asked: list[tuple[torch.Tensor, int]] = []

    def copy_other(s: torch.Tensor, n: int) -> torch.Tensor:
        asked.append((s, n))
        return other[:, :n]

    # A generator that returns the baseline's drawings scores exactly the baseline.
    assert score(setup, copy_other) == baseline(setup)
    assert asked[0][1] == 7 and torch.equal(asked[0][0], support)
    m = score(setup, noise())
    assert set(m) == GENERATION_KEYS and all(math.isfinite(v) for v in m.values())
    with pytest.raises(ConfigError, match="n <= 7"):
        score(setup, noise(), samples=8)


def test_real_drawings_score_near_the_real_baseline(setup: Setup) -> None:
    """With n = 5 (5 support + 5 reference + 5 baseline), a generator returning 5 more
    held-out drawings of each character matches the baseline on every metric."""
    _, held_out = character_sets(setup.splits.test, T, 5, np.random.default_rng(0))
    more = held_out[:, 10:15]
    real = score(setup, lambda s, n: more[:, :n], samples=5)
    base, bad = baseline(setup, samples=5), score(setup, noise(), samples=5)
    assert abs(real["kid"] - base["kid"]) < 0.05 * bad["kid"]
    for key in ("frechet_distance", "pooled_frechet_distance"):
        assert real[key] == pytest.approx(base[key], rel=0.15), key
    for key in ("fidelity", "precision", "recall", "diversity"):
        assert abs(real[key] - base[key]) < 0.15, key
    assert abs(real["novelty"] - base["novelty"]) < 0.2
    assert abs(real["chance_fidelity"] - base["chance_fidelity"]) < 0.05


def test_a_support_copier_is_flagged_by_novelty(setup: Setup) -> None:
    copier = score(setup, lambda s, n: s.repeat(1, 2, 1, 1, 1)[:, :n])
    base = baseline(setup)
    assert copier["novelty"] < 0.05
    assert 0.8 < base["novelty"] < 1.25
    # The copies are real drawings of the character: fidelity alone would rank them first.
    assert copier["fidelity"] > base["fidelity"]


def test_a_diverged_generator_scores_nan_on_every_metric_instead_of_raising(setup: Setup) -> None:
    """One NaN sample (a generator that diverged while adapting) leaves every metric undefined;
    the evaluation (and a benchmark table with many rows) goes on."""
    def diverged(s: torch.Tensor, n: int) -> torch.Tensor:
        out = torch.rand(s.shape[0], n, *s.shape[2:])
        out[3, 1] = float("nan")
        return out

    m = score(setup, diverged)
    assert set(m) == GENERATION_KEYS and all(math.isnan(v) for v in m.values())


def test_noise_scores_worst_on_kid_fidelity_and_precision(setup: Setup) -> None:
    bad, base = score(setup, noise()), baseline(setup)
    assert bad["kid"] > 10 * base["kid"] and bad["kid"] > 0.5
    assert bad["fidelity"] < base["fidelity"] - 0.2
    assert bad["precision"] < base["precision"] - 0.5
    assert bad["diversity"] < base["diversity"] - 0.5  # coverage: noise buys no diversity
    assert bad["frechet_distance"] > 2 * base["frechet_distance"]


def test_chance_control_is_about_one_over_t(setup: Setup) -> None:
    """Samples that ignore their support (drawings of random evaluated characters, or noise)
    score about 1/T on the control; recognisable samples score below it."""
    ignoring = []
    for seed in range(5):
        _, _, other = evaluation_sets(setup.splits.test, T, 5, None, seed)
        g = torch.Generator().manual_seed(seed)
        pick = torch.randint(0, T, other.shape[:2], generator=g)  # a random character each
        drawn = other[pick, torch.arange(other.shape[1])]
        ignoring.append(score(setup, lambda s, n, drawn=drawn: drawn, seed=seed))
    assert np.mean([m["chance_fidelity"] for m in ignoring]) == pytest.approx(1 / T, abs=0.02)
    assert np.mean([m["fidelity"] for m in ignoring]) == pytest.approx(1 / T, abs=0.02)
    assert score(setup, noise())["chance_fidelity"] == pytest.approx(1 / T, abs=0.04)
    base = baseline(setup)
    assert base["chance_fidelity"] < 1 / T < base["fidelity"]


def test_kid_of_two_samples_of_one_character_is_about_zero(setup: Setup) -> None:
    base, bad = baseline(setup), score(setup, noise())
    assert abs(base["kid"]) < 0.02 * bad["kid"]


def test_embedding_validation_responds_to_noise(setup: Setup) -> None:
    v = validate_embedding(setup.cfg, setup.splits, "test", T, embed=setup.embed, episodes=40)
    kids = [v["noise_kid_0"], v["noise_kid_10"], v["noise_kid_25"], v["noise_kid_50"]]
    assert kids == sorted(kids) and kids[0] < kids[1] < kids[3]
    assert v["noise_monotone"] == 1.0
    assert v["noise_kid_0"] == pytest.approx(baseline(setup)["kid"])
    assert 0.3 < v["one_shot_accuracy"] <= 1.0  # 5-way chance is 0.2


def test_a_generator_ignoring_its_support_is_caught_per_character(setup: Setup) -> None:
    """Drawings of random other evaluated characters match the pooled mixture of characters,
    but not the character asked for: per-character KID and fidelity see it."""
    _, _, other = evaluation_sets(setup.splits.test, T, 5, None, 0)
    shifted = other.roll(1, dims=0)  # each character gets the next one's drawings
    wrong, base, bad = score(setup, lambda s, n: shifted), baseline(setup), score(setup, noise())
    assert wrong["pooled_frechet_distance"] == pytest.approx(base["pooled_frechet_distance"])
    assert wrong["kid"] > base["kid"] + 0.02 * bad["kid"]
    assert wrong["frechet_distance"] > 1.2 * base["frechet_distance"]
    assert wrong["fidelity"] < 1 / T < base["fidelity"]


def test_the_embedding_is_stored_in_the_configs_cache_dir_and_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.cache_dir decides where the metric embedding is stored; a second call loads it
    (training it again would fail here) and gives the same features."""
    cfg = build_config({"method": "fewshot_gan", "gan": {"embedding_iterations": 2},
                        "data": {"cache_dir": str(tmp_path)}})
    splits = load_splits(cfg.data)
    first = metric_embedding(cfg, splits, torch.device("cpu"))
    stored = list((tmp_path / "embeddings").glob("protonet-*.pt"))
    assert len(stored) == 1 and not list((tmp_path / "embeddings").glob("*.tmp"))

    def no_training(*args: object) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(evaluation, "train_embedding", no_training)
    again = metric_embedding(cfg, splits, torch.device("cpu"))
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(again(x), first(x))
