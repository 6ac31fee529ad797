"""MAML and first-order MAML, batched over the tasks of a meta-batch with torch.func."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..models import context_statistics
from .base import MetaLearner, register

Params = dict[str, torch.Tensor]
# MAML's adapted state: the fast weights per task (dicts of [B, ...]), the support sets
# [B, n, ...] and the rows whose batch-norm statistics normalise a task (None: transductive).
Adapted = tuple[Params, torch.Tensor, int | None]


def sgd_adapt(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, lr: float,
              steps: int, first_order: bool, rows: int | None = None) -> Params:
    """`steps` SGD steps on cross-entropy of one task: the MAML inner loop (pure function).

    Batch norm takes its statistics from x[:rows] (None: all of x)."""

    def loss(p: Params) -> torch.Tensor:
        with context_statistics(model, rows):
            logits = functional_call(model, p, (x,))
        return F.cross_entropy(logits, y)

    for _ in range(steps):
        grads = grad(loss)(params)
        # First order: the inner gradient is a constant to the outer loop, so no
        # second-derivative terms reach the meta-gradient.
        params = {k: params[k] - lr * (grads[k].detach() if first_order else grads[k])
                  for k in params}
    return params


@register("maml")
class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning (Finn et al. 2017), second order.

    Support mode: the inner loop normalises by the real support images' statistics (all of the
    support set unless `context` says fewer) and queries pass the network behind the support
    set, normalised by its statistics too, in meta-training (the outer loss) as at meta-test.
    Transductive: the support set by its own statistics, the queries by theirs.
    """

    first_order = False
    reads = MetaLearner.reads | {"meta.inner_lr", "meta.inner_steps", "meta.eval_inner_steps"}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, ways: int,
              steps: int | None = None, context: int | None = None) -> Adapted:
        """Fast weights per task (a dict of [B, ...] tensors), with what predict needs."""
        params: Params = dict(self.model.named_parameters())
        steps = steps or self.cfg.inner_steps
        rows = self.statistics_rows(support_x.shape[1], context)

        def one_task(x: torch.Tensor, y: torch.Tensor) -> Params:
            return sgd_adapt(self.model, params, x, y, self.cfg.inner_lr, steps, self.first_order,
                             rows)

        fast: Params = vmap(one_task, randomness="same")(support_x, support_y)
        return fast, support_x, rows

    def predict(self, adapted: Adapted, query_x: torch.Tensor) -> torch.Tensor:
        """Query logits under each task's fast weights."""
        params, support_x, rows = adapted
        if rows is None:  # transductive: the queries are one batch
            logits: torch.Tensor = vmap(lambda p, q: self.call_model(p, q, None))(params, query_x)
            return logits
        n = support_x.shape[1]

        def one_task(p: Params, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
            return self.call_model(p, torch.cat([s, q]), rows)[n:]

        logits = vmap(one_task)(params, support_x, query_x)
        return logits


@register("fomaml")
class FOMAML(MAML):
    """First-order MAML: the meta-gradient ignores second derivatives through the inner loop."""

    first_order = True
