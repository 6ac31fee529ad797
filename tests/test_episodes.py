"""The N-way K-shot sampler: shapes, relabelling, determinism, distinct classes."""

from __future__ import annotations

import torch

from metagan.config import DataConfig
from metagan.data import load_splits
from metagan.data.episodes import TaskSampler


def sampler(seed: int = 0, ways: int = 5, shots: int = 2, queries: int = 3) -> TaskSampler:
    return TaskSampler(load_splits(DataConfig()).train, ways, shots, queries, seed)


def test_shapes_and_labels() -> None:
    ep = sampler().sample(7)
    assert ep.support_x.shape == (7, 10, 1, 28, 28) and ep.query_x.shape == (7, 15, 1, 28, 28)
    assert ep.support_x.dtype == torch.float32
    assert 0.0 <= ep.support_x.min() and ep.support_x.max() <= 1.0
    for b in range(7):
        assert sorted(ep.support_y[b].tolist()) == sorted(list(range(5)) * 2)
        assert sorted(ep.query_y[b].tolist()) == sorted(list(range(5)) * 3)
    assert ep.classes.shape == (7, 5)


def test_no_class_repeated_within_a_task() -> None:
    s = sampler()
    for _ in range(20):
        ep = s.sample(32)
        assert all(len(set(row.tolist())) == 5 for row in ep.classes)


def test_labels_follow_the_classes_and_instances_are_distinct() -> None:
    s = sampler(shots=2, queries=3)
    ep = s.sample(4)
    flat_images = s.images.flatten(1).float() / 255
    for b in range(4):
        for x, y in ((ep.support_x[b], ep.support_y[b]), (ep.query_x[b], ep.query_y[b])):
            for img, label in zip(x, y):
                cls = ep.classes[b, label].item()
                start, count = s.start[cls].item(), s.count[cls].item()
                match = (flat_images[start:start + count] == img.flatten()).all(1)
                assert match.any()  # the image belongs to the class its label names
        both = torch.cat([ep.support_x[b], ep.query_x[b]]).flatten(1)
        assert torch.unique(both, dim=0).shape[0] == both.shape[0]  # no image drawn twice


def test_deterministic_given_seed_and_state() -> None:
    a, b = sampler(seed=3), sampler(seed=3)
    for _ in range(3):
        ea, eb = a.sample(8), b.sample(8)
        assert torch.equal(ea.support_x, eb.support_x) and torch.equal(ea.query_y, eb.query_y)
    assert not torch.equal(sampler(seed=4).sample(8).classes, sampler(seed=3).sample(8).classes)
    state = a.state_dict()
    next_a = a.sample(8)
    c = sampler(seed=99)
    c.load_state_dict(state)
    assert torch.equal(c.sample(8).query_x, next_a.query_x)


def test_affine_augmentation_is_seeded_and_keeps_the_drawing() -> None:
    splits = load_splits(DataConfig())
    a = TaskSampler(splits.train, 5, 1, 2, 0, affine=True).sample(4)
    b = TaskSampler(splits.train, 5, 1, 2, 0, affine=True).sample(4)
    plain = TaskSampler(splits.train, 5, 1, 2, 0).sample(4)
    assert torch.equal(a.support_x, b.support_x)  # deterministic given the seed
    assert torch.equal(a.classes, plain.classes)  # the same tasks, jittered
    assert not torch.equal(a.support_x, plain.support_x)
    # A small jitter keeps most of the ink: total intensity within 25% per image.
    ink_a, ink_p = a.support_x.sum((2, 3, 4)), plain.support_x.sum((2, 3, 4))
    assert ((ink_a - ink_p).abs() / ink_p < 0.25).all()
