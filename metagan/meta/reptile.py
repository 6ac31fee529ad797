"""Reptile (Nichol et al. 2018): move the initialisation towards each task's adapted weights."""

from __future__ import annotations

import torch
from torch.func import vmap

from ..data.episodes import Episode
from .base import PhaseOutput, accuracy, register, task_cross_entropy
from .maml import MAML, Params, sgd_adapt


def reptile_objective(params: Params, adapted: Params) -> torch.Tensor:
    """0.5 * ||theta - mean_b phi_b||^2, whose gradient in theta is the Reptile direction."""
    terms = [0.5 * (p - adapted[k].mean(0).detach()).pow(2).sum() for k, p in params.items()]
    return torch.stack(terms).sum()


@register("reptile")
class Reptile(MAML):
    """Reptile with an SGD inner loop; the outer optimiser steps along theta - mean(phi).

    Meta-test is MAML's (adapt on the support set, predict the queries)."""

    first_order = True

    def meta_loss(self, episode: Episode, context: int | None = None) -> PhaseOutput:
        """Adapt on each task's support and query images together (all of a task's data).

        Support mode: normalised by the real support images' statistics throughout, as at
        meta-test; transductive: by the statistics of all of them."""
        x = torch.cat([episode.support_x, episode.query_x], dim=1)
        y = torch.cat([episode.support_y, episode.query_y], dim=1)
        params = {k: p.detach() for k, p in self.model.named_parameters()}
        rows = self.statistics_rows(episode.support_x.shape[1], context)

        def one_task(xt: torch.Tensor, yt: torch.Tensor) -> Params:
            return sgd_adapt(self.model, params, xt, yt, self.cfg.inner_lr, self.cfg.inner_steps,
                             first_order=True, rows=rows)

        with torch.no_grad():
            adapted = vmap(one_task)(x, y)
            logits = vmap(lambda p, xt: self.call_model(p, xt, rows))(adapted, x)
        objective = reptile_objective(dict(self.model.named_parameters()), adapted)
        return PhaseOutput(objective, {"loss": task_cross_entropy(logits, y),
                                       "accuracy": accuracy(logits, y)})
