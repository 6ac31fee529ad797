"""The few-shot GAN's meta-iteration written the plain way, one character at a time (as FIGR's
code does): copies of G and D, torch.optim.SGD inner steps, the gradient penalty by
torch.autograd.grad. It is what the batched torch.func meta-iteration of gan/fewshot.py is
checked against (tests/test_fewshot_gan.py) and timed against (benchmarks/throughput.py).
"""

from __future__ import annotations

import copy

import torch

from ..data.episodes import Episode
from .fewshot import FewShotGan, class_sets, to_signed
from .losses import LOSSES, gradient_penalty


def per_task_meta_step(gan: FewShotGan, episode: Episode, rng: torch.Generator) -> None:
    """One meta-iteration of gan's settings over the characters of `episode`, one at a time;
    leaves the meta-gradient in the .grad of gan's weights (Reptile: theta - mean phi;
    first-order MAML: the query losses' gradient at phi). Noise comes from `rng`, drawn in the
    order and shapes the batched method draws it, so both see the same noise."""
    cfg = gan.cfg.gan
    d_loss_fn, g_loss_fn = LOSSES[cfg.loss]
    gp_weight = gan.gp_weight  # the method's own: 0 without a Wasserstein loss
    tasks = class_sets(episode)
    k = episode.shots
    reptile = cfg.meta_algorithm == "reptile"
    adapt_on = tasks if reptile else tasks[:, :k]
    t_all, m = adapt_on.shape[:2]

    def noise(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
        # As FewShotGan._noise: z, then the penalty's weights only when there is a penalty.
        z = torch.randn(*shape, cfg.z_dim, generator=rng).to(tasks)
        eps = torch.rand(*shape, generator=rng) if gp_weight else torch.zeros(shape)
        return z, eps.to(tasks)

    z, eps = noise(t_all, cfg.inner_steps, m)
    if not reptile:
        z_q, eps_q = noise(t_all, tasks.shape[1] - k)
    set_cond = cfg.condition == "set"
    params = list(gan.generator.parameters()) + list(gan.discriminator.parameters())
    meta_grads = [torch.zeros_like(p) for p in params]
    for t in range(t_all):
        g, d = copy.deepcopy(gan.generator), copy.deepcopy(gan.discriminator)
        g_opt = torch.optim.SGD(g.parameters(), lr=cfg.inner_lr)
        d_opt = torch.optim.SGD(d.parameters(), lr=cfg.inner_lr)
        real = to_signed(adapt_on[t])
        cond = (real[:k],) if set_cond else ()

        def d_total(x: torch.Tensor, fake: torch.Tensor, w: torch.Tensor,
                    d: torch.nn.Module = d) -> torch.Tensor:
            loss: torch.Tensor = d_loss_fn(d(x), d(fake))
            return loss + gp_weight * gradient_penalty(d, x, fake, w) if gp_weight else loss

        for s in range(cfg.inner_steps):
            d_opt.zero_grad()
            torch.autograd.backward(d_total(real, g(z[t, s], *cond).detach(), eps[t, s]))
            d_opt.step()
            g_opt.zero_grad()
            torch.autograd.backward(g_loss_fn(d(g(z[t, s], *cond))))
            g_opt.step()
        if reptile:
            adapted = list(g.parameters()) + list(d.parameters())
            for acc, p, q in zip(meta_grads, params, adapted):
                acc += (p.detach() - q.detach()) / t_all
            continue
        q_real = to_signed(tasks[t, k:])
        fake = g(z_q[t], *cond)
        d_grads = torch.autograd.grad(d_total(q_real, fake.detach(), eps_q[t]),
                                      list(d.parameters()))
        g_grads = torch.autograd.grad(g_loss_fn(d(fake)), list(g.parameters()))
        for acc, gr in zip(meta_grads, list(g_grads) + list(d_grads)):
            acc += gr / t_all
    for p, acc in zip(params, meta_grads):
        p.grad = acc
