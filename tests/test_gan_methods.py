"""The few-shot GAN and MetaGAN methods through the episode loop; generation metrics; grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagan.config import Config, ConfigError, build_config
from metagan.gan.evaluation import character_sets, generation_metrics, metric_embedding
from metagan.gan.fewshot import class_sets
from metagan.gan.grid import save_character_grid, save_grid
from metagan.loop import EpisodeLoop

from .conftest import run_cli, tiny_config, tiny_data, write_yaml

FEWSHOT = {"method": "fewshot_gan", "task.ways": 2, "task.shots": 2, "task.queries": 2,
           "task.meta_batch": 2, "gan.width": 8, "gan.z_dim": 8, "gan.inner_steps": 2,
           "gan.eval_shots": 3, "gan.eval_adapt_steps": 1, "gan.embedding_iterations": 3}
METAGAN = {"method": "metagan", "gan.width": 8, "gan.z_dim": 8}


def fewshot_data(**extra: object) -> dict:
    """FEWSHOT on conftest's tiny config, less the conv4 settings that fewshot_gan (which
    builds no meta-learner) does not read."""
    data = tiny_data("protonet", **FEWSHOT, **extra)
    del data["model"]
    return data


def fewshot_config(**extra: object) -> Config:
    return build_config(fewshot_data(**extra))


def test_class_sets_groups_drawings_by_class() -> None:
    loop = EpisodeLoop(fewshot_config())
    ep = loop.sampler.sample(2)
    sets = class_sets(ep)
    assert sets.shape == (4, 4, 1, 28, 28)
    for b in range(2):
        for c in range(2):
            support = ep.support_x[b][ep.support_y[b] == c]
            assert torch.equal(sets[b * 2 + c, :2], support)


@pytest.mark.parametrize("meta_algorithm", ["reptile", "fomaml"])
def test_fewshot_gan_batched_adaptation_equals_per_task(meta_algorithm: str) -> None:
    loop = EpisodeLoop(fewshot_config(**{"gan.meta_algorithm": meta_algorithm}))
    gan = loop.method
    images = torch.rand(3, 4, 1, 28, 28)
    rng = torch.Generator().manual_seed(0)
    g_ad, d_ad = gan.adapt(images, 2, rng)
    z = torch.randn(3, 2, 4, 8, generator=torch.Generator().manual_seed(0))
    g0 = {k: p.detach() for k, p in gan.generator.named_parameters()}
    d0 = {k: p.detach() for k, p in gan.discriminator.named_parameters()}
    for t in range(3):
        g_ref, d_ref = gan._adapt_one(g0, d0, images[t], z[t])
        for k in g_ref:
            torch.testing.assert_close(g_ad[k][t], g_ref[k], rtol=1e-4, atol=1e-6)
        for k in d_ref:
            torch.testing.assert_close(d_ad[k][t], d_ref[k], rtol=1e-4, atol=1e-6)
    g_zero, _ = gan.adapt(images, 0, rng)
    for k, v in g0.items():
        assert torch.equal(g_zero[k][1], v)  # zero steps: the meta-learned initialisation
    assert any(not torch.allclose(g_ad[k][0], g0[k]) for k in g0)
    for _ in range(2):
        m = loop.step()
    assert {"d_loss", "g_loss", "grad_norm"} <= set(m) and np.isfinite(m["d_loss"])


def test_metagan_trains_and_reports_accuracy_on_real_classes() -> None:
    for algorithm in ("fomaml", "maml"):
        loop = EpisodeLoop(tiny_config(algorithm, **METAGAN))
        assert loop.learner.model.head.out_features == 6  # 5 real classes + fake
        for _ in range(2):
            m = loop.step()
        assert {"D/loss", "D/fake_loss", "D/fake_detected", "G/loss", "G/grad_norm"} <= set(m)
        res = loop.evaluate("test", episodes=8)
        assert 0 <= res["accuracy"] <= 1


@pytest.mark.slow
def test_generation_metrics_real_vs_noise() -> None:
    cfg = fewshot_config()
    loop = EpisodeLoop(cfg)
    embed = metric_embedding(cfg, loop.splits, torch.device("cpu"))
    # The embedding is a per-image function once its batch norm is frozen.
    x = torch.rand(6, 1, 28, 28)
    torch.testing.assert_close(embed(x)[:2], embed(x[:2]))
    support, real = character_sets(loop.splits.test, 6, 5, np.random.default_rng(0))
    assert support.shape == (6, 5, 1, 28, 28) and real.shape == (6, 15, 1, 28, 28)
    as_real = generation_metrics(embed, real[:, :7], real[:, 7:])
    noise = generation_metrics(embed, torch.rand(6, 7, 1, 28, 28), real[:, 7:])
    assert as_real["frechet_distance"] < noise["frechet_distance"]
    assert as_real["fidelity"] > noise["fidelity"] - 1e-9 and as_real["fidelity"] > 0.2
    res = loop.evaluate("test", episodes=4)
    assert {"frechet_distance", "fidelity", "diversity"} <= set(res)


def test_save_grid(tmp_path: Path) -> None:
    path = save_grid(torch.rand(5, 1, 28, 28), torch.rand(12, 1, 28, 28), tmp_path / "g.png",
                     columns=5)
    img = Image.open(path)
    assert img.size[0] > 5 * 28 and img.size[1] > 3 * 28 * 2


def test_save_character_grid_puts_each_character_on_its_own_row(tmp_path: Path) -> None:
    """Three characters, 5 support drawings and 4 samples each: three rows of nine cells,
    the support cells black where the drawings are all strokes (inverted), the samples white."""
    support, samples = torch.ones(3, 5, 1, 28, 28), torch.zeros(3, 4, 1, 28, 28)
    img = np.asarray(Image.open(save_character_grid(support, samples, tmp_path / "c.png",
                                                    scale=1)))
    assert img.shape == (3 * 30 + 2, 9 * 30 + 6 + 2)
    assert img[2:30, 2:30].max() == 0 and img[2:30, -30:-2].min() == 255


@pytest.mark.slow
@pytest.mark.parametrize("extra", [FEWSHOT, METAGAN, {"method": "dagan", "gan.width": 8,
                                                      "gan.z_dim": 8, "gan.pretrain_steps": 2}],
                         ids=["fewshot_gan", "metagan", "dagan"])
def test_cli_train_and_sample(extra: dict, tmp_path: Path) -> None:
    algorithm = "fomaml" if extra["method"] == "metagan" else "protonet"
    data = fewshot_data() if extra is FEWSHOT else tiny_data(algorithm, **extra)
    cfg = write_yaml(tmp_path / "c.yaml", data)
    out = tmp_path / "run"
    r = run_cli("train", str(cfg), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("sample", str(out), "--out", str(tmp_path / "grid.png"), "--samples", "8")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "grid.png").size[0] > 100


@pytest.mark.slow
def test_metagan_needs_a_head_based_learner() -> None:
    with pytest.raises(ConfigError, match="meta.algorithm: metagan needs"):
        build_config(tiny_data("protonet", **METAGAN))


def test_sample_needs_a_generator(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", tiny_data("protonet"))
    run_cli("train", str(cfg), "--out", str(tmp_path / "run"), "--quiet")
    r = run_cli("sample", str(tmp_path / "run"), "--out", str(tmp_path / "g.png"))
    assert r.returncode == 2 and "no generator" in r.stderr


def test_user_feature_model_replaces_the_embedding(tmp_path: Path) -> None:
    class Features(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x.amax((1, 2, 3))], 1)

    path = tmp_path / "features.pt"
    torch.jit.script(Features()).save(str(path))
    cfg = fewshot_config(**{"gan.feature_model": str(path)})
    loop = EpisodeLoop(cfg)
    embed = metric_embedding(cfg, loop.splits, torch.device("cpu"))
    assert embed(torch.rand(4, 1, 28, 28)).shape == (4, 3)
    _, real = character_sets(loop.splits.test, 4, 5, np.random.default_rng(0))
    m = generation_metrics(embed, real[:, :7], real[:, 7:])
    assert np.isfinite(m["frechet_distance"])
    missing = fewshot_data(**{"gan.feature_model": str(tmp_path / "no.pt")})
    with pytest.raises(ConfigError, match="gan.feature_model: .* does not exist"):
        build_config(missing)


@pytest.mark.parametrize("method", ["dagan", "metagan", "fewshot_gan"])
def test_gan_methods_build_for_the_configured_image_size(method: str) -> None:
    from .test_contract import learner_for, tiny_run

    loop = EpisodeLoop(build_config(tiny_run(method, learner_for(method),
                                             **{"data.image_size": 32})))
    m = loop.step()
    assert all(np.isfinite(v) for v in m.values())
    sets = loop.sampler.sample(1).support_x  # [1, k, 1, 32, 32]
    drawn = loop.method.adapt_and_sample(sets, 2, 1, torch.Generator().manual_seed(0))
    assert drawn.shape == (1, 2, 1, 32, 32)


@pytest.mark.parametrize("size", [8, 9, 30, 32])
def test_gan_networks_compute_their_sizes(size: int) -> None:
    from metagan.gan.nets import Discriminator, Generator, SetEncoder

    images = Generator(z_dim=4, cond_dim=3, width=4, image_size=size)(torch.randn(5, 4),
                                                                       torch.randn(5, 3))
    assert images.shape == (5, 1, size, size)
    assert Discriminator(width=4, image_size=size)(images).shape == (5,)
    assert SetEncoder(dim=6, width=4, image_size=size)(images.view(1, 5, 1, size, size)).shape \
        == (1, 6)
