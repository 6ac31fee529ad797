"""MAML and first-order MAML, batched over the tasks of a meta-batch with torch.func."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..models import Statistics, context_statistics
from .base import MetaLearner, register

Params = dict[str, torch.Tensor]
# MAML's adapted state: the fast weights per task (dicts of [B, ...]), the support sets
# [B, n, ...] and the rows whose batch-norm statistics normalise a task (None: transductive;
# models.INSTANCE: each image its own).
Adapted = tuple[Params, torch.Tensor, Statistics]
# Extra labelled images of each task for the inner loop: images [B, m, ...], labels [B, m] and
# the weight of their cross-entropy (see MAML.adapt).
Extra = tuple[torch.Tensor, torch.Tensor, float]


def behind_support(model: nn.Module, params: Params, support: torch.Tensor,
                   others: torch.Tensor, rows: Statistics, penultimate: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model on one task's support images and on other images of it (queries, generated
    images), normalised as `rows` says: an int k (support mode), one batch [support; others]
    normalised by the statistics of its first k rows, so the others never enter them;
    INSTANCE, each image by itself (computed as one batch); None (transductive), the support
    set and the others as two batches, each by its own statistics."""
    kwargs = {"penultimate": True} if penultimate else {}
    if rows is None:
        with context_statistics(model, None):
            s_out: torch.Tensor = functional_call(model, params, (support,), kwargs)
            o_out: torch.Tensor = functional_call(model, params, (others,), kwargs)
        return s_out, o_out
    n = support.shape[0]
    with context_statistics(model, rows):
        out: torch.Tensor = functional_call(model, params, (torch.cat([support, others]),),
                                            kwargs)
    return out[:n], out[n:]


def sgd_adapt(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, lr: float,
              steps: int, first_order: bool, rows: Statistics = None,
              extra_x: torch.Tensor | None = None, extra_y: torch.Tensor | None = None,
              extra_weight: float = 1.0) -> Params:
    """`steps` SGD steps on cross-entropy of one task: the MAML inner loop (pure function).

    Batch norm takes its statistics from x[:rows] (None: all of x; INSTANCE: each image its
    own). With `extra_x` [m, ...] (labels `extra_y` [m]) the loss is
    CE(x, y) + extra_weight * CE(extra_x, extra_y), each a mean over its own images, the extra
    images normalised as behind_support says (never entering the support statistics)."""

    def loss(p: Params) -> torch.Tensor:
        if extra_x is None or extra_y is None:
            with context_statistics(model, rows):
                logits = functional_call(model, p, (x,))
            return F.cross_entropy(logits, y)
        real, extra = behind_support(model, p, x, extra_x, rows)
        return F.cross_entropy(real, y) + extra_weight * F.cross_entropy(extra, extra_y)

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
    Transductive: the support set by its own statistics, the queries by theirs. Instance: every
    image by itself.
    """

    first_order = False
    reads = MetaLearner.reads | {"meta.inner_lr", "meta.inner_steps", "meta.eval_inner_steps"}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, ways: int,
              steps: int | None = None, context: int | None = None,
              extra: Extra | None = None) -> Adapted:
        """Fast weights per task (a dict of [B, ...] tensors), with what predict needs.

        `extra` = (images [B, m, ...], labels [B, m], weight w): more labelled images of each
        task for the inner loop, whose loss is then CE(support) + w * CE(extra) (e.g. MetaGAN's
        generated images labelled "fake"). They are normalised like queries, never entering
        the support statistics (support mode: behind the support set; instance: each alone;
        transductive: as a batch of their own)."""
        params: Params = dict(self.model.named_parameters())
        steps = steps or self.cfg.inner_steps
        rows = self.statistics_rows(support_x.shape[1], context)

        if extra is None:
            def one_task(x: torch.Tensor, y: torch.Tensor) -> Params:
                return sgd_adapt(self.model, params, x, y, self.cfg.inner_lr, steps,
                                 self.first_order, rows)

            fast: Params = vmap(one_task, randomness="same")(support_x, support_y)
            return fast, support_x, rows
        extra_x, extra_y, weight = extra

        def one_task_extra(x: torch.Tensor, y: torch.Tensor, ex: torch.Tensor,
                           ey: torch.Tensor) -> Params:
            return sgd_adapt(self.model, params, x, y, self.cfg.inner_lr, steps,
                             self.first_order, rows, ex, ey, weight)

        fast = vmap(one_task_extra, randomness="same")(support_x, support_y, extra_x, extra_y)
        return fast, support_x, rows

    def _outputs(self, adapted: Adapted, query_x: torch.Tensor, penultimate: bool
                 ) -> torch.Tensor:
        params, support_x, rows = adapted
        if not isinstance(rows, int):  # transductive, the queries one batch; instance, each alone
            out: torch.Tensor = vmap(lambda p, q: self.call_model(p, q, rows, penultimate))(
                params, query_x)
            return out

        def one_task(p: Params, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
            return behind_support(self.model, p, s, q, rows, penultimate)[1]

        out = vmap(one_task)(params, support_x, query_x)
        return out

    def predict(self, adapted: Adapted, query_x: torch.Tensor) -> torch.Tensor:
        """Query logits under each task's fast weights."""
        return self._outputs(adapted, query_x, penultimate=False)

    def features(self, adapted: Adapted, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features [B, m, D] (what the classifier head reads) of images
        [B, m, ...] under each task's fast weights, normalised as predict normalises queries."""
        return self._outputs(adapted, x, penultimate=True)


@register("fomaml")
class FOMAML(MAML):
    """First-order MAML: the meta-gradient ignores second derivatives through the inner loop."""

    first_order = True
