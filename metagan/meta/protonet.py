"""Prototypical Networks (Snell et al. 2017): classify by distance to class-mean embeddings."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.func import vmap

from .base import MetaLearner, register


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means: embeddings [n, D], labels [n] -> [ways, D]."""
    onehot = F.one_hot(labels, ways).to(embeddings.dtype)  # [n, ways]
    return (onehot.T @ embeddings) / onehot.sum(0).unsqueeze(1)


def squared_distance_logits(query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distances: [m, D] x [ways, D] -> [m, ways]."""
    return -torch.cdist(query, protos).pow(2)


@register("protonet")
class ProtoNet(MetaLearner):
    """The support set is the adapted state; support and query are embedded together per task.

    Batch-norm statistics are those of the task's real support images (support mode), or of
    the whole task, support and queries (transductive)."""

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, ways: int,
              steps: int | None = None, context: int | None = None) -> Any:
        """Nothing to optimise: keep the support set (and the rows giving the statistics)."""
        return support_x, support_y, ways, self.statistics_rows(support_x.shape[1], context)

    def predict(self, adapted: Any, query_x: torch.Tensor) -> torch.Tensor:
        """Logits from distances to each task's prototypes."""
        support_x, support_y, ways, rows = adapted
        params: dict[str, torch.Tensor] = dict(self.model.named_parameters())
        n = support_x.shape[1]

        def one_task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
            z = self.call_model(params, torch.cat([sx, qx]), rows)
            return squared_distance_logits(z[n:], prototypes(z[:n], sy, ways))

        logits: torch.Tensor = vmap(one_task)(support_x, support_y, query_x)
        return logits

    @classmethod
    def head_size(cls, ways: int) -> int | None:
        """No classifier head: the embedding is the output."""
        return None
