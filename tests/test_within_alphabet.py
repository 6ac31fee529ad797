"""Per-alphabet accuracy and Lake et al.'s within-alphabet 20-way one-shot evaluation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from metagan import api
from metagan.config import ConfigError
from metagan.data import ImageSet, Splits
from metagan.data.alphabets import ROTATED, alphabet_offset
from metagan.data.episodes import Episode
from metagan.data.images import with_rotations
from metagan.loop import EpisodeLoop
from metagan.run import train

from .conftest import run_cli, tiny_config

DRAWINGS = 4  # per character: enough for 1 shot + 2 queries, and for 1 + 1 within an alphabet
# Synthetic alphabets and their characters: two meta-test alphabets big enough for 20-way
# tasks, one too small for them (but not for 5-way tasks with its rotations), one too small
# for either (1 character = 4 classes with its rotations).
TEST_ALPHABETS = {"Alpha": 23, "Beta": 21, "Gamma": 8, "Delta": 1}


def alphabet_images(sizes: dict[str, int], rng: np.random.Generator) -> ImageSet:
    """Characters of random (so pairwise distinct) drawings, grouped into alphabets."""
    classes = [f"{a}/character{i + 1:02d}" for a, n in sizes.items() for i in range(n)]
    groups = [a for a, n in sizes.items() for _ in range(n)]
    images = (rng.random((len(classes) * DRAWINGS, 28, 28)) * 255).astype(np.uint8)
    labels = np.repeat(np.arange(len(classes)), DRAWINGS)
    return with_rotations(ImageSet(images, labels, tuple(classes), tuple(groups)))


@pytest.fixture(scope="module")
def splits() -> Splits:
    rng = np.random.default_rng(0)
    parts = {"train": alphabet_images({"T1": 25, "T2": 25}, rng),
             "val": alphabet_images({"V1": 22}, rng),
             "test": alphabet_images(TEST_ALPHABETS, rng)}
    return Splits(parts["train"], parts["val"], parts["test"],
                  {k: sorted(set(v.groups)) for k, v in parts.items()})


def identify(images: ImageSet) -> Callable[[torch.Tensor], tuple[str, str, int]]:
    """Image -> (class, alphabet, index in the set) by its pixels (every drawing is distinct)."""
    where = {images.images[i].tobytes(): i for i in range(len(images.images))}
    assert len(where) == len(images.images)

    def find(x: torch.Tensor) -> tuple[str, str, int]:
        i = where[(x.squeeze(0) * 255).round().to(torch.uint8).cpu().numpy().tobytes()]
        c = int(images.labels[i])
        return images.classes[c], images.groups[c], i

    return find


def record_episodes(loop: EpisodeLoop, monkeypatch: pytest.MonkeyPatch) -> list[Episode]:
    """Every episode the loop's method scores from now on (the real method still scores it)."""
    seen: list[Episode] = []
    real = loop.method.task_accuracy

    def task_accuracy(episode: Episode, rng: torch.Generator) -> torch.Tensor:
        seen.append(episode)
        return real(episode, rng)

    monkeypatch.setattr(loop.method, "task_accuracy", task_accuracy)
    return seen


def check_within_alphabet(episode: Episode, find: Callable, ways: int) -> set[str]:
    """Asserts every task of the episode is a within-alphabet one-shot one-query task of
    distinct unrotated characters; returns the alphabets its tasks came from."""
    assert (episode.ways, episode.shots, episode.queries) == (ways, 1, 1)
    drawn = set()
    for b in range(episode.num_tasks):
        assert len(set(episode.classes[b].tolist())) == ways  # the `classes` field: distinct
        support = [find(x) for x in episode.support_x[b]]
        query = [find(x) for x in episode.query_x[b]]
        assert len({name for name, _, _ in support}) == ways  # distinct characters
        assert len({alphabet for _, alphabet, _ in support + query}) == 1  # of ONE alphabet
        assert not any(ROTATED.search(name) for name, _, _ in support + query)  # unrotated
        for label in range(ways):
            (s_name, _, s_index), = [support[i] for i in range(ways)
                                     if episode.support_y[b, i] == label]
            (q_name, _, q_index), = [query[i] for i in range(ways)
                                     if episode.query_y[b, i] == label]
            assert s_name == q_name and s_index != q_index  # the same character, another drawing
        drawn.add(support[0][1])
    return drawn


def test_within_alphabet_tasks_are_one_alphabets_unrotated_characters(
        splits: Splits, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = EpisodeLoop(tiny_config("protonet"), splits)
    find = identify(splits.test)
    # The sampler the evaluation uses: its `classes` index the alphabet's unrotated characters.
    for alphabet in ("Alpha", "Beta"):
        chars, sampler = loop.within_alphabet_tasks("test", alphabet, 20)
        assert chars.num_classes == TEST_ALPHABETS[alphabet]
        assert set(chars.groups) == {alphabet} and not any(map(ROTATED.search, chars.classes))
        episode = sampler.sample(6)
        check_within_alphabet(episode, find, 20)
        for b in range(6):  # `classes` names the characters shown
            names = {chars.classes[c] for c in episode.classes[b].tolist()}
            assert names == {find(x)[0] for x in episode.support_x[b]}
    # And the episodes the evaluation scores.
    seen = record_episodes(loop, monkeypatch)
    result = loop.evaluate_within_alphabet("test", episodes=6, ways=20)
    drawn = set().union(*(check_within_alphabet(e, find, 20) for e in seen))
    assert drawn == {"Alpha", "Beta"}
    assert sum(e.num_tasks for e in seen) == result["episodes"] == 12


def test_within_alphabet_reports_overall_and_per_alphabet_and_skips_small_alphabets(
        splits: Splits) -> None:
    loop = EpisodeLoop(tiny_config("protonet"), splits)
    result = loop.evaluate_within_alphabet("test", episodes=5, ways=20)
    assert set(result["alphabets"]) == {"Alpha", "Beta"}
    assert set(result["skipped"]) == {"Gamma", "Delta"}
    assert "8 unrotated characters, fewer than 20" in result["skipped"]["Gamma"]
    per = result["alphabets"]
    assert all(p["episodes"] == 5 and p["error"] == pytest.approx(1 - p["accuracy"])
               for p in per.values())
    # The overall figure pools every task: here the plain mean of two equal-sized alphabets.
    assert result["accuracy"] == pytest.approx(np.mean([p["accuracy"] for p in per.values()]))
    assert result["error"] == pytest.approx(1 - result["accuracy"])
    assert result["episodes"] == 10 and result["ci95"] > 0
    # Deterministic, and independent of training: the training sampler is not touched.
    before = loop.sampler.state_dict()["generator"].clone()
    assert loop.evaluate_within_alphabet("test", episodes=5, ways=20) == result
    assert torch.equal(loop.sampler.state_dict()["generator"], before)
    # Fewer ways: the smaller alphabet takes part too.
    assert set(loop.evaluate_within_alphabet("test", 2, ways=8)["alphabets"]) == {
        "Alpha", "Beta", "Gamma"}
    with pytest.raises(ConfigError, match="no alphabet of meta-test can supply 30-way tasks"):
        loop.evaluate_within_alphabet("test", 2, ways=30)


def test_the_same_tasks_whatever_was_trained(splits: Splits) -> None:
    loop = EpisodeLoop(tiny_config("protonet"), splits)
    first = loop.within_alphabet_tasks("test", "Alpha")[1].sample(4)
    loop.step()
    loop.step()
    again = loop.within_alphabet_tasks("test", "Alpha")[1].sample(4)
    assert torch.equal(first.classes, again.classes)
    assert torch.equal(first.support_x, again.support_x) and torch.equal(first.query_x,
                                                                         again.query_x)


def test_a_fixed_head_learner_of_other_ways_is_refused(splits: Splits) -> None:
    loop = EpisodeLoop(tiny_config("maml"), splits)
    with pytest.raises(ConfigError) as e:
        loop.evaluate_within_alphabet("test", 2, ways=20)
    assert str(e.value) == ("maml has a 5-way classifier head: --within-alphabet needs 20-way "
                            "tasks; train with task.ways: 20")
    # Its own ways are fine.
    assert set(loop.evaluate_within_alphabet("test", 1, ways=5)["alphabets"]) == {
        "Alpha", "Beta", "Gamma"}


def test_per_alphabet_accuracy_covers_each_alphabet_with_its_own_classes(
        splits: Splits, monkeypatch: pytest.MonkeyPatch) -> None:
    loop = EpisodeLoop(tiny_config("protonet"), splits)
    find = identify(splits.test)
    seen = record_episodes(loop, monkeypatch)
    result = loop.evaluate_per_group("test", 3)
    # Delta: 1 character, 4 classes with its rotations: too few for 5-way tasks.
    assert set(result["alphabets"]) == {"Alpha", "Beta", "Gamma"}
    assert set(result["skipped"]) == {"Delta"} and "4 classes, fewer than 5" in result[
        "skipped"]["Delta"]
    assert result["episodes_per_alphabet"] == 3 and result["ways"] == 5
    assert len(seen) == 3  # one meta-batch per alphabet, in sorted order
    rotated = 0
    for episode, alphabet in zip(seen, sorted(result["alphabets"])):
        assert episode.num_tasks == 3 and episode.ways == 5
        for b in range(episode.num_tasks):
            shown = [find(x) for x in torch.cat([episode.support_x[b], episode.query_x[b]])]
            assert {a for _, a, _ in shown} == {alphabet}
            rotated += sum(bool(ROTATED.search(name)) for name, _, _ in shown)
    assert rotated > 0  # the same class population as the headline: rotations included
    for alphabet, figures in result["alphabets"].items():
        assert figures == loop.evaluate("test", 3, group=alphabet)  # deterministic
    seen.clear()
    loop.evaluate("test", 3)  # the headline's tasks mix the alphabets
    assert len({find(x)[1] for x in seen[0].support_x.flatten(0, 1)}) > 1
    with pytest.raises(ValueError, match="no alphabet 'Omega'"):
        loop.evaluate("test", 3, group="Omega")


def test_alphabet_offsets_are_stable_across_processes() -> None:
    # sha256 of the name: fixed values, unlike Python's salted hash().
    assert alphabet_offset("Greek") == alphabet_offset("Greek") != alphabet_offset("Latin")
    assert alphabet_offset("Greek") == int.from_bytes(
        __import__("hashlib").sha256(b"Greek").digest()[:4], "big") >> 1


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("within") / "run"
    result = train(tiny_config("protonet", **{"train.iterations": 2}), out)
    return out, result


def test_train_result_holds_test_accuracy_per_alphabet(protonet_run: tuple[Path, dict]) -> None:
    out, result = protonet_run
    saved = json.loads((out / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    loop = api.load_model(out).loop
    alphabets = sorted(set(loop.splits.test.groups))
    per = saved["test_per_alphabet"]
    assert sorted(per["alphabets"]) == alphabets and per["skipped"] == {}
    assert per["episodes_per_alphabet"] == max(1, 8 // len(alphabets))  # test_episodes: 8
    # What a later evaluation of the checkpoint finds: the tasks do not depend on training.
    assert per == json.loads(json.dumps(loop.evaluate_per_group("test", per[
        "episodes_per_alphabet"])))
    assert 0 <= saved["test_accuracy"] <= 1  # the headline keys are unchanged


@pytest.mark.slow
def test_cli_within_alphabet_prints_overall_and_per_alphabet(
        protonet_run: tuple[Path, dict]) -> None:
    out, _ = protonet_run
    r = run_cli("evaluate", str(out), "--within-alphabet", "--split", "test", "--episodes", "2")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    model = api.load_model(out)
    unrotated = {a: sum(1 for c, g in zip(model.loop.splits.test.classes,
                                          model.loop.splits.test.groups)
                        if g == a and not ROTATED.search(c))
                 for a in set(model.loop.splits.test.groups)}
    assert printed["protocol"] == "within-alphabet" and printed["split"] == "test"
    assert printed["ways"] == 20 and printed["shots"] == 1 and printed["iteration"] == 2
    assert sorted(printed["alphabets"]) == sorted(a for a, n in unrotated.items() if n >= 20)
    assert printed["episodes"] == 2 * len(printed["alphabets"])
    # The Python API gives the same figures in this process (seeds do not use hash()).
    found = model.within_alphabet_accuracy("test", episodes=2)
    assert {k: printed[k] for k in found} == json.loads(json.dumps(found))
    # More ways than the smallest alphabet has characters: it is skipped and named.
    ways = min(unrotated.values()) + 1
    if ways <= max(unrotated.values()):
        r = run_cli("evaluate", str(out), "--within-alphabet", "--split", "test",
                    "--episodes", "1", "--ways", str(ways))
        assert r.returncode == 0, r.stderr
        printed = json.loads(r.stdout)
        assert set(printed["skipped"]) == {a for a, n in unrotated.items() if n < ways}
        assert set(printed["alphabets"]) == {a for a, n in unrotated.items() if n >= ways}


@pytest.mark.slow
def test_cli_within_alphabet_refuses_a_5_way_head(tmp_path: Path) -> None:
    out = tmp_path / "maml"
    train(tiny_config("maml", **{"train.iterations": 1, "schedule.test_episodes": 2}), out)
    r = run_cli("evaluate", str(out), "--within-alphabet", "--split", "test")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: maml has a 5-way classifier head: --within-alphabet needs 20-way tasks; train "
        "with task.ways: 20"]
    assert r.stdout == ""
