"""Meta-learners: batched gradients equal per-task references; one contract for all of them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metagan.config import MetaConfig
from metagan.data.episodes import Episode
from metagan.meta import REGISTRY, build_learner
from metagan.meta.protonet import prototypes
from metagan.models import Conv4, context_statistics


def small_episode(tasks: int = 4, ways: int = 3, shots: int = 2, queries: int = 2,
                  side: int = 12, seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1)
    qy = torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1)
    return Episode(torch.rand(tasks, ways * shots, 1, side, side, generator=g, dtype=torch.double),
                   sy, torch.rand(tasks, ways * queries, 1, side, side, generator=g,
                                  dtype=torch.double), qy, ways, shots, queries,
                   torch.arange(ways).repeat(tasks, 1))


def small_model(ways: int | None = 3) -> Conv4:
    torch.manual_seed(0)
    return Conv4(hidden=8, depth=2, image_size=12, num_classes=ways).double()


def per_task_maml_gradient(model: Conv4, ep: Episode, lr: float, steps: int,
                           second_order: bool, rows: int | None = None) -> list[torch.Tensor]:
    """The textbook computation: one task at a time, torch.autograd.grad for the inner loop.
    `rows`: batch norm takes its statistics from the first `rows` support images throughout
    (support mode: queries predicted behind the support set); None: each batch its own."""
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    n = ep.support_x.shape[1]
    total = 0.0
    with context_statistics(model, rows):
        for b in range(ep.num_tasks):
            fast = params
            for _ in range(steps):
                logits = functional_call(model, dict(zip(names, fast)), (ep.support_x[b],))
                grads = torch.autograd.grad(F.cross_entropy(logits, ep.support_y[b]), fast,
                                            create_graph=second_order)
                fast = [p - lr * g for p, g in zip(fast, grads)]
            if rows is None:
                logits = functional_call(model, dict(zip(names, fast)), (ep.query_x[b],))
            else:
                logits = functional_call(model, dict(zip(names, fast)),
                                         (torch.cat([ep.support_x[b], ep.query_x[b]]),))[n:]
            total = total + F.cross_entropy(logits, ep.query_y[b])
    return list(torch.autograd.grad(total / ep.num_tasks, params))


@pytest.mark.parametrize("algorithm, second_order", [("maml", True), ("fomaml", False)])
@pytest.mark.parametrize("steps", [1, 3])
def test_batched_maml_meta_gradient_matches_per_task(algorithm: str, second_order: bool,
                                                     steps: int) -> None:
    model = small_model()
    # The reference normalises the queries as one batch: model.batch_norm transductive (the
    # support mode is checked in tests/test_batch_norm.py).
    learner = build_learner(MetaConfig(algorithm=algorithm, inner_lr=0.3, inner_steps=steps), model,
                            batch_norm="transductive")
    ep = small_episode()
    batched = torch.autograd.grad(learner.meta_loss(ep).objective, list(model.parameters()))
    reference = per_task_maml_gradient(model, ep, 0.3, steps, second_order)
    for a, b in zip(batched, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if second_order:  # and the first-order gradient really is different
        fo = per_task_maml_gradient(model, ep, 0.3, steps, second_order=False)
        assert max((a - b).abs().max() for a, b in zip(batched, fo)) > 1e-4


# Reptile's meta-gradient (theta minus the mean adapted weights) is checked in both batch-norm
# modes in tests/test_batch_norm.py.


def test_prototypes_are_class_means() -> None:
    z = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 3.0], [3.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(prototypes(z, y, 2), torch.tensor([[1.0, 1.0], [2.0, 4.0]]))


def test_protonet_classifies_by_nearest_prototype() -> None:
    model = small_model(ways=None)
    learner = build_learner(MetaConfig(algorithm="protonet"), model)
    ep = small_episode()
    # Queries identical to the supports of their class: the nearest prototype is their own
    # class only if the per-task embedding is consistent, so accuracy is perfect.
    same = Episode(ep.support_x, ep.support_y, ep.support_x, ep.support_y, ep.ways, ep.shots,
                   ep.shots, ep.classes)
    assert learner.task_accuracy(same).min().item() == 1.0


@pytest.mark.parametrize("algorithm", sorted(REGISTRY))
def test_learner_contract(algorithm: str) -> None:
    """Every registered learner: finite objective, gradients for every parameter, learns."""
    cls = REGISTRY[algorithm]
    torch.manual_seed(0)
    model = Conv4(hidden=8, depth=2, image_size=12, num_classes=cls.head_size(3)).double()
    learner = build_learner(MetaConfig(algorithm=algorithm, inner_lr=0.3, inner_steps=2), model)
    ep = small_episode()
    out = learner.meta_loss(ep)
    assert out.objective.ndim == 0 and torch.isfinite(out.objective)
    assert {"loss", "accuracy"} <= set(out.metrics)
    grads = torch.autograd.grad(out.objective, list(model.parameters()), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    acc = learner.task_accuracy(ep)
    assert acc.shape == (ep.num_tasks,) and ((0 <= acc) & (acc <= 1)).all()
    # Meta-training on one fixed meta-batch fits it.
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = learner.meta_loss(ep).metrics["loss"].item()
    for _ in range(30):
        opt.zero_grad()
        learner.meta_loss(ep).objective.backward()
        opt.step()
    assert learner.meta_loss(ep).metrics["loss"].item() < first
