"""MAML and first-order MAML, batched over the tasks of a meta-batch with torch.func."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .base import MetaLearner, register

Params = dict[str, torch.Tensor]


def sgd_adapt(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, lr: float,
              steps: int, first_order: bool) -> Params:
    """`steps` SGD steps on cross-entropy of one task: the MAML inner loop (pure function)."""

    def loss(p: Params) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    for _ in range(steps):
        grads = grad(loss)(params)
        # First order: the inner gradient is a constant to the outer loop, so no
        # second-derivative terms reach the meta-gradient.
        params = {k: params[k] - lr * (grads[k].detach() if first_order else grads[k])
                  for k in params}
    return params


@register("maml")
class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning (Finn et al. 2017), second order."""

    first_order = False
    reads = MetaLearner.reads | {"meta.inner_lr", "meta.inner_steps", "meta.eval_inner_steps"}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, ways: int,
              steps: int | None = None) -> Params:
        """Fast weights per task: a dict of [B, ...] tensors."""
        params: Params = dict(self.model.named_parameters())
        steps = steps or self.cfg.inner_steps

        def one_task(x: torch.Tensor, y: torch.Tensor) -> Params:
            return sgd_adapt(self.model, params, x, y, self.cfg.inner_lr, steps, self.first_order)

        return vmap(one_task, randomness="same")(support_x, support_y)

    def predict(self, adapted: Params, query_x: torch.Tensor) -> torch.Tensor:
        """Query logits under each task's fast weights."""
        logits: torch.Tensor = vmap(lambda p, x: functional_call(self.model, p, (x,)))(
            adapted, query_x)
        return logits


@register("fomaml")
class FOMAML(MAML):
    """First-order MAML: the meta-gradient ignores second derivatives through the inner loop."""

    first_order = True
