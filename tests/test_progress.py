"""The progress bar of `metagan train` names the run and shows the method's own metrics."""

from __future__ import annotations

import math

import pytest

from metagan.cli import progress_fields, run_label
from metagan.config import build_config
from metagan.loop import EpisodeLoop

from .conftest import tiny_data

GAN = {"gan.width": 8, "gan.z_dim": 8}


@pytest.mark.parametrize("algorithm, extra, label, shown", [
    ("protonet", {}, "protonet", "loss"),
    ("fomaml", {"method": "metagan", **GAN}, "metagan+fomaml", "D/loss"),
    ("protonet", {"method": "dagan", "gan.pretrain_steps": 1, **GAN}, "dagan+protonet", "meta/loss"),
])
def test_each_method_shows_its_own_finite_metrics(algorithm: str, extra: dict, label: str,
                                                  shown: str) -> None:
    cfg = build_config(tiny_data(algorithm, **extra))
    loop = EpisodeLoop(cfg)
    loop.step()
    fields = progress_fields(loop.step())
    assert run_label(cfg) == label
    assert shown in fields and "tasks_s" in fields
    assert all(math.isfinite(float(v)) for v in fields.values()), fields
    assert not any(k.endswith("grad_norm") or k in ("lr", "iteration") for k in fields)


def test_a_few_shot_gan_is_named_by_its_method_alone() -> None:
    cfg = build_config({"method": "fewshot_gan", "task": {"ways": 2, "shots": 2, "queries": 2,
                                                          "meta_batch": 2}})
    assert run_label(cfg) == "fewshot_gan"
