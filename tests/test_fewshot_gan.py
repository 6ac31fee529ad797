"""The FIGR settings of the few-shot GAN (gan/fewshot.py): the functional gradient penalty, per-image
LayerNorm networks, resize upsampling, [0, 1] samples, both conditioning options, and one
batched meta-iteration against a plain per-task loop over module copies."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from metagan.config import ConfigError, build_config
from metagan.data import Splits, load_splits
from metagan.data.episodes import Episode
from metagan.gan.fewshot import FewShotGan
from metagan.gan.losses import functional_gradient_penalty, gradient_penalty
from metagan.gan.nets import Discriminator, Generator, ResizeConv2d
from metagan.gan.reference import per_task_meta_step
from metagan.loop import EpisodeLoop

from .conftest import tiny_data

# Small enough for seconds: 2 tasks of 2-way 2-shot 2-query episodes (4 characters), tiny nets.
SMALL = {"method": "fewshot_gan", "task.ways": 2, "task.shots": 2, "task.queries": 2,
         "task.meta_batch": 2, "gan.width": 4, "gan.z_dim": 4, "gan.inner_steps": 2,
         "gan.inner_lr": 0.01, "gan.eval_shots": 2, "gan.eval_adapt_steps": 1,
         "gan.embedding_iterations": 2, "gan.loss": "wasserstein"}


def fewshot_data(**extra: Any) -> dict[str, Any]:
    """SMALL on conftest's tiny config, less the conv4 settings fewshot_gan does not read."""
    data = tiny_data("protonet", **{**SMALL, **extra})
    del data["model"]
    return data


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_splits(build_config(fewshot_data()).data)


def small_loop(splits: Splits, **extra: Any) -> EpisodeLoop:
    return EpisodeLoop(build_config(fewshot_data(**extra)), splits=splits)


def batched_params(module: torch.nn.Module, tasks: int, scale: float = 0.05
                   ) -> dict[str, torch.Tensor]:
    """Different weights per task: the module's, each perturbed by its own noise."""
    g = torch.Generator().manual_seed(1)
    return {k: p.detach().unsqueeze(0) + scale * torch.randn(tasks, *p.shape, generator=g,
                                                             dtype=p.dtype)
            for k, p in module.named_parameters()}


# -- the gradient penalty ----------------------------------------------------------------------------
def test_functional_penalty_batched_over_tasks_equals_per_task_autograd() -> None:
    torch.manual_seed(0)
    d = Discriminator(width=4, norm="layer").double()
    tasks, n = 3, 5
    params = batched_params(d, tasks)
    real = torch.rand(tasks, n, 1, 28, 28, dtype=torch.float64) * 2 - 1
    fake = torch.rand(tasks, n, 1, 28, 28, dtype=torch.float64) * 2 - 1
    w = torch.rand(tasks, n, dtype=torch.float64)

    def penalty(p: dict[str, torch.Tensor], r: torch.Tensor, f: torch.Tensor,
                ww: torch.Tensor) -> torch.Tensor:
        return functional_gradient_penalty(lambda x: functional_call(d, p, (x,)), r, f, ww)

    batched = vmap(penalty)(params, real, fake, w)
    # ... and its gradient in each task's critic weights (the double backward of WGAN-GP).
    batched_grads = vmap(torch.func.grad(penalty))(params, real, fake, w)
    for t in range(tasks):
        p = {k: v[t].clone().requires_grad_(True) for k, v in params.items()}
        ref = gradient_penalty(lambda x: functional_call(d, p, (x,)), real[t], fake[t], w[t])
        torch.testing.assert_close(batched[t], ref.detach(), rtol=0, atol=1e-5)
        # (D's output bias moves no input gradient: no gradient, a zero one batched)
        grads = torch.autograd.grad(ref, list(p.values()), allow_unused=True)
        for (k, v), g in zip(p.items(), grads):
            torch.testing.assert_close(batched_grads[k][t], torch.zeros_like(v) if g is None
                                       else g, rtol=1e-6, atol=1e-5)
    assert batched.min() > 0  # a real penalty, not a vacuous zero


def test_the_penalty_sees_each_images_own_gradient() -> None:
    # D(x) = <v, x> per image: every gradient is v, penalty (||v|| - 1)^2, whatever the batch.
    v = torch.tensor([3.0, 4.0])
    pen = functional_gradient_penalty(lambda x: x @ v, torch.randn(4, 2), torch.randn(4, 2),
                                      torch.rand(4))
    assert pen.item() == pytest.approx(16.0)


# -- the networks -------------------------------------------------------------------------------------
def test_layer_norm_networks_score_and_generate_per_image() -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    z = torch.randn(6, 8)
    others = torch.rand(4, 1, 28, 28)
    for norm in ("layer", "none"):
        d = Discriminator(width=4, norm=norm)
        g = Generator(z_dim=8, width=4, norm=norm, upsample="resize", output="tanh")
        torch.testing.assert_close(d(x)[:2], d(torch.cat([x[:2], others]))[:2])
        torch.testing.assert_close(d(x)[:2], d(x[:2]))
        torch.testing.assert_close(g(z)[:2], g(z[:2]))
        torch.testing.assert_close(g(z)[:2], g(torch.cat([z[:2], torch.randn(4, 8)]))[:2])
    # The check has teeth: batch statistics make an image's output depend on its batch.
    batch = Generator(z_dim=8, width=4, norm="batch")
    assert not torch.allclose(batch(z)[:2], batch(z[:2]))
    assert any("weight" in k for k, _ in Discriminator(width=4, norm="layer").named_parameters()
               if k.startswith("features.3"))  # the LayerNorm's own scale


def test_resize_upsampling_has_no_checkerboard() -> None:
    torch.manual_seed(0)
    resize = ResizeConv2d(3, 2).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    # It is a nearest x2 resize followed by its 3x3 convolution ...
    reference = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), resize.weight,
                         resize.bias, padding=1)
    torch.testing.assert_close(resize(x), reference, rtol=0, atol=1e-12)
    # ... so a constant input gives a constant output away from the border.
    const = torch.ones(1, 3, 7, 7, dtype=torch.float64)
    inner = resize(const)[..., 1:-1, 1:-1]
    assert (inner - inner[..., :1, :1]).abs().max() < 1e-12
    # A stride-2 transposed convolution (same shapes, same init) checkerboards: its interior
    # alternates with the parity of the output pixel.
    torch.manual_seed(0)
    transposed = torch.nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1).double()
    t_inner = transposed(const)[..., 1:-1, 1:-1]
    assert (t_inner - t_inner[..., :1, :1]).abs().max() > 1e-3
    # The whole generator, fed a constant seed map: its output is flat inside too (the first
    # block's 1-pixel border is 2 pixels after the second resize, 3 after its convolution).
    g = Generator(z_dim=4, width=4, norm="none", upsample="resize", output="tanh").double()
    flat = g.up(torch.ones(1, 8, 7, 7, dtype=torch.float64))[..., 3:-3, 3:-3]
    assert (flat - flat[..., :1, :1]).abs().max() < 1e-12


# -- the method ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("condition", ["weights", "set"])
def test_samples_are_drawings_in_0_1(condition: str, splits: Splits) -> None:
    loop = small_loop(splits, **{"gan.condition": condition})
    support = loop.sampler.sample(2).support_x  # [2, 4, 1, 28, 28]
    rng = torch.Generator().manual_seed(0)
    for steps in (0, 2):
        drawn = loop.method.adapt_and_sample(support, 5, steps, rng)
        assert drawn.shape == (2, 5, 1, 28, 28)
        assert 0 <= drawn.min() and drawn.max() <= 1
        assert drawn.std() > 0  # not a constant image
    # The generator ends in tanh: its raw output spans [-1, 1], and reaches below 0.
    with torch.no_grad():
        out = loop.method._sample_signed(
            {k: v.unsqueeze(0) for k, v in loop.method.generator.named_parameters()}, 8, rng,
            support[:1] * 2 - 1)
    assert out.min() < 0 and -1 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("meta_algorithm", ["reptile", "fomaml"])
@pytest.mark.parametrize("condition", ["weights", "set"])
def test_both_conditionings_train_with_finite_losses(condition: str, meta_algorithm: str,
                                                     splits: Splits) -> None:
    loop = small_loop(splits, **{"gan.condition": condition, "gan.meta_algorithm": meta_algorithm})
    names = {k for k, _ in loop.method.generator.named_parameters()}
    assert any(k.startswith("encoder.") for k in names) == (condition == "set")
    before = {k: p.detach().clone() for k, p in loop.method.named_parameters()}
    for _ in range(3):
        metrics = loop.step()
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert {"d_loss", "g_loss", "grad_norm"} <= set(metrics)
    # Every weight, the set encoder's too, is meta-learned; but the critic's output bias, which
    # cancels in E[D(fake)] - E[D(real)] and moves no input gradient, never has a gradient.
    still = [k for k, p in loop.method.named_parameters() if torch.equal(before[k], p)]
    assert still == ["discriminator.out.bias"]


def test_config_refusals(splits: Splits) -> None:
    build_config(fewshot_data(**{"gan.loss": "wasserstein", "gan.gp_weight": 10.0}))  # WGAN-GP
    with pytest.raises(ConfigError, match=r"^gan\.gp_weight: fewshot_gan's Wasserstein"):
        build_config(fewshot_data(**{"gan.gp_weight": 0.0}))
    with pytest.raises(ConfigError, match=r"^gan\.spectral_norm"):
        build_config(fewshot_data(**{"gan.spectral_norm": True}))
    # The new keys are fewshot_gan's alone: another method refuses them.
    for key, value in (("gan.norm", "none"), ("gan.upsample", "transposed"),
                       ("gan.condition", "set")):
        with pytest.raises(ConfigError, match=rf"^{key}: not read by method 'meta'"):
            EpisodeLoop(build_config(tiny_data("protonet", **{key: value})), splits=splits)


# -- one meta-iteration against a per-task loop ------------------------------------------------------
def as_double(episode: Episode) -> Episode:
    return dataclasses.replace(episode, support_x=episode.support_x.double(),
                               query_x=episode.query_x.double())


@pytest.mark.parametrize("meta_algorithm, condition, loss", [
    ("reptile", "weights", "wasserstein"), ("reptile", "set", "wasserstein"),
    ("fomaml", "weights", "wasserstein"), ("fomaml", "weights", "hinge")])
def test_batched_meta_iteration_equals_a_per_task_loop(meta_algorithm: str, condition: str,
                                                       loss: str, splits: Splits) -> None:
    """A hinge loss has no penalty, so no penalty weights are drawn: the query noise of
    first-order MAML must still come from the same point of the stream."""
    loop = small_loop(splits, **{"gan.meta_algorithm": meta_algorithm,
                                 "gan.condition": condition, "gan.loss": loss})
    gan = loop.method.double()
    assert isinstance(gan, FewShotGan)
    assert gan.gp_weight == (10.0 if loss == "wasserstein" else 0.0)
    reference = copy.deepcopy(gan)
    episode = as_double(loop.sampler.sample(2))
    rng = copy.deepcopy(gan.noise)  # the noise the batched step will draw
    # The batched step: the loop's own phase update (Adam on the meta-gradient).
    phase = loop.phases[0]
    out = phase.loss(episode)
    torch.autograd.backward(out.objective)
    batched_grads = [p.grad.clone() for p in phase.params]
    loop.optimizers[phase.name].step()
    # The reference: a loop over tasks, then the same Adam step.
    per_task_meta_step(reference, episode, rng)
    ref_params = dict(reference.named_parameters())
    for (name, _), g in zip(gan.named_parameters(), batched_grads):
        torch.testing.assert_close(g, ref_params[name].grad, rtol=1e-7, atol=1e-9, msg=name)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=loop.cfg.optim.lr,
                               betas=(loop.cfg.gan.beta1, loop.cfg.gan.beta2))
    ref_opt.step()
    for (name, p), q in zip(gan.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-9, msg=name)
    assert any(g.abs().max() > 1e-6 for g in batched_grads)  # a step that moves something


RESUME = """
import sys, torch
from metagan.run import load_loop
loop = load_loop(sys.argv[1])
for _ in range(2):
    loop.step()
torch.save(loop.state_dict(), sys.argv[1] + ".resumed.pt")
"""


def test_wgan_gp_with_a_set_resumes_exactly_in_a_fresh_process(splits: Splits,
                                                               tmp_path: Path) -> None:
    # The penalty's interpolation weights come from the method's saved noise generator too.
    from metagan.checkpoint import save_checkpoint

    from .conftest import ROOT
    from .test_loop import assert_same_state

    loop = small_loop(splits, **{"gan.condition": "set", "gan.meta_algorithm": "fomaml"})
    for _ in range(2):
        loop.step()
    save_checkpoint(tmp_path / "ckpt", loop.cfg, loop.state_dict())
    for _ in range(2):
        loop.step()
    r = subprocess.run([sys.executable, "-c", RESUME, str(tmp_path / "ckpt")], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    resumed = torch.load(tmp_path / "ckpt.resumed.pt", weights_only=True)
    for part in ("method", "optimizers", "sampler"):
        assert_same_state(loop.state_dict()[part], resumed[part], part)


# -- the adaptation length, selectable on meta-val -----------------------------------------------


def test_evaluate_takes_the_adaptation_length(splits: Splits) -> None:
    loop = small_loop(splits, **{"gan.eval_adapt_steps": 1})
    loop.step()
    default = loop.evaluate("val", 4)
    assert loop.evaluate("val", 4, adapt_steps=1) == default  # the config's length
    unadapted = loop.evaluate("val", 4, adapt_steps=0)
    assert unadapted != default  # the generator really adapted for one step, not for none
    assert set(unadapted) == set(default)
    with pytest.raises(ConfigError, match="adapt_steps"):
        loop.evaluate("val", 4, adapt_steps=-1)


@pytest.mark.slow
def test_cli_evaluate_adapt_steps(tmp_path: Path) -> None:
    from metagan.api import load_model
    from metagan.run import train

    from .conftest import run_cli

    out = tmp_path / "run"
    train(build_config(fewshot_data(**{"train.iterations": 1, "schedule.eval_every": 0,
                                       "gan.eval_adapt_steps": 1})), out)
    found = {}
    for steps in ([], ["--adapt-steps", "0"], ["--adapt-steps", "1"]):
        r = run_cli("evaluate", str(out), "--episodes", "4", *steps)
        assert r.returncode == 0, r.stderr
        found[tuple(steps)] = json.loads(r.stdout)
    assert [f["adapt_steps"] for f in found.values()] == [1, 0, 1]
    assert found[()] == found[("--adapt-steps", "1")] != found[("--adapt-steps", "0")]
    r = run_cli("evaluate", str(out), "--adapt-steps", "-2")
    assert r.returncode == 2 and "--adapt-steps" in r.stderr
    # Sampling from Python and the CLI takes the same length.
    model = load_model(out)
    support = torch.from_numpy(load_splits(model.config.data).val.images[:2]).unsqueeze(1)
    drawn = {steps: model.sample(support, 3, seed=0, adapt_steps=steps) for steps in (None, 0, 1)}
    assert torch.equal(drawn[None], drawn[1]) and not torch.equal(drawn[0], drawn[1])
    with pytest.raises(ConfigError, match="adapt_steps"):
        model.sample(support, 3, adapt_steps=-1)
    grids = {}
    for steps in ("0", "1"):
        png = tmp_path / f"{steps}.png"
        r = run_cli("sample", str(out), "--out", str(png), "--samples", "3", "--adapt-steps", steps)
        assert r.returncode == 0, r.stderr
        grids[steps] = png.read_bytes()
    assert grids["0"] != grids["1"]
