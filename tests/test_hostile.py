"""Hostile and broken input through every verb: one clear line, the promised exit code, no
traceback, nothing stored changed, and nothing started.

Each case runs `metagan.cli.main` in-process (the same code as the console script) against a
folder holding a real trained run and a stored experiment name, and compares every stored
file's bytes before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from metagan.cli import main
from metagan.config import ConfigError
from metagan.run import LAST, train

from .conftest import tiny_config, tiny_data

BAD_NAMES = ["x;id;#", "a b", "a/b", "../../x", "..", "", "-rf", "x" * 101, "$(id)", "`id`",
             "x\ny", "naïve", ".hidden", "a|b", "a>b", "a&b", "*"]
BAD_STORAGE = ["s3://Bad_Bucket/x", "s3://ab/x", "s3://metagan/../x", "s3://metagan/a b",
               "s3://metagan/x?y=1", "s3://metagan/x;id", "gs://bucket/x", "s3:///x",
               "s3://-metagan/x", "s3://metagan/x#frag"]
BAD_ENDPOINTS = ["localhost:9000", "ftp://h:21", "http://h:notaport", "http://:9000",
                 "http://h:70000", "http://key:topsecret@h:9000", "http://[h:9000"]
NON_FINITE = [".inf", "-.inf", ".nan"]


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder: a trained run, a space file, a config, an experiment store."""
    root = tmp_path_factory.mktemp("hostile")
    train(tiny_config("protonet", **{"train.iterations": 2}), root / "run")
    config = tiny_data("protonet", **{"train.iterations": 2, "schedule.eval_every": 1,
                                      "schedule.eval_episodes": 4})
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    space = {"base": config, "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]},
                                       "model.hidden": {"choice": [8, 16]}},
             "search": {"num_samples": 2}, "scheduler": {"name": "none"}}
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    (root / "store").mkdir()
    return root


@pytest.fixture(autouse=True)
def same_environment():
    """The CLI runs in this process: whatever it sets in os.environ goes when the case ends."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def refused(place: Path, capsys, argv: list[str], code: int, words: str) -> str:
    """Run the CLI; assert the exit code, one line naming the problem, nothing stored changed."""
    before = snapshot(place)
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert snapshot(place) == before
    return lines[0]


def space_with(place: Path, name: str, **changes) -> Path:
    data = yaml.safe_load((place / "space.yaml").read_text())
    for key, value in changes.items():
        node = data
        *parents, last = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = place / "spaces" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", BAD_NAMES)
def test_search_refuses_unsafe_names(place: Path, capsys, name: str) -> None:
    refused(place, capsys, ["search", str(place / "space.yaml"), "--name", name,
                            "--storage", str(place / "store")], 2, "--name")


@pytest.mark.parametrize("name", ["../x", "a;b", "a b"])
def test_search_resume_refuses_unsafe_names(place: Path, capsys, name: str) -> None:
    refused(place, capsys, ["search", "--resume", name, "--storage", str(place / "store")], 2,
            "--resume")


@pytest.mark.parametrize("name", ["x;id;#", "a b", "a/b", "$(id)"])
def test_submit_refuses_unsafe_names_before_contacting_the_cluster(place: Path, capsys,
                                                                    name: str) -> None:
    # The address is unreachable: a refusal naming --name proves nothing was sent.
    refused(place, capsys, ["submit", str(place / "space.yaml"), "--name", name,
                            "--storage", "s3://metagan/x", "--address", "http://127.0.0.1:1"],
            2, "--name")


@pytest.mark.parametrize("storage", ["s3://metagan/x;id", "s3://metagan/$(id)", "/tmp/local dir",
                                     "s3://metagan/a b"])
def test_submit_refuses_unsafe_or_local_storage(place: Path, capsys, storage: str) -> None:
    refused(place, capsys, ["submit", str(place / "space.yaml"), "--name", "ok",
                            "--storage", storage, "--address", "http://127.0.0.1:1"], 2,
            "--storage" if storage.startswith("/") else "storage")


@pytest.mark.parametrize("storage", BAD_STORAGE)
def test_search_refuses_malformed_storage_uris(place: Path, capsys, storage: str) -> None:
    refused(place, capsys, ["search", str(place / "space.yaml"), "--name", "ok",
                            "--storage", storage], 2, "storage")


@pytest.mark.parametrize("endpoint", BAD_ENDPOINTS)
def test_search_refuses_a_malformed_endpoint(place: Path, capsys, monkeypatch,
                                             endpoint: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    line = refused(place, capsys, ["search", str(place / "space.yaml"), "--name", "ok",
                                   "--storage", "s3://metagan/x"], 2, "AWS_ENDPOINT_URL")
    assert "topsecret" not in line


@pytest.mark.parametrize("key", ["optim.lr", "meta.inner_lr", "gan.ema", "optim.weight_decay"])
@pytest.mark.parametrize("value", NON_FINITE)
def test_train_refuses_non_finite_numbers(place: Path, capsys, key: str, value: str) -> None:
    refused(place, capsys, ["train", str(place / "config.yaml"), "--set", f"{key}={value}",
                            "--out", str(place / "never")], 2, key)
    assert not (place / "never").exists()


@pytest.mark.parametrize("dist", [{"uniform": [0.001, float("inf")]},
                                  {"loguniform": [float("nan"), 0.1]},
                                  {"uniform": [float("-inf"), 0.1]},
                                  {"quniform": [0.001, 0.1, float("nan")]}])
def test_search_refuses_non_finite_bounds(place: Path, capsys, dist: dict) -> None:
    space = space_with(place, "nonfinite", **{"space/optim.lr": dist})
    refused(place, capsys, ["search", str(space), "--dry-run"], 2, "space.optim.lr")


@pytest.mark.parametrize("point, key", [({"optim.lr": 5.0, "model.hidden": 8}, "optim.lr"),
                                        ({"optim.lr": 1e-3, "model.hidden": 12}, "model.hidden"),
                                        ({"optim.lr": "big", "model.hidden": 8}, "optim.lr"),
                                        ({"optim.lr": float("nan"), "model.hidden": 8}, "optim.lr")])
def test_search_refuses_starting_points_outside_the_space(place: Path, capsys, point: dict,
                                                          key: str) -> None:
    space = space_with(place, "points", **{"search/points_to_evaluate": [point]})
    refused(place, capsys, ["search", str(space), "--dry-run"], 2,
            f"points_to_evaluate[0].{key}")


@pytest.mark.parametrize("key, value", [("data.split_seed", "3"), ("task.ways", "3"),
                                        ("model.hidden", "16"), ("method", "dagan"),
                                        ("meta.algorithm", "maml"), ("optim.lr", "0.1"),
                                        ("train.seed", "4"), ("data.affine_augment", "true"),
                                        ("schedule.test_episodes", "10")])
def test_train_resume_refuses_overrides_it_cannot_honour(place: Path, capsys, key: str,
                                                         value: str) -> None:
    refused(place, capsys, ["train", "--resume", str(place / "run"), "--set", f"{key}={value}"],
            2, f"--set {key}")


def test_train_resume_refuses_fewer_iterations_and_extra_arguments(place: Path, capsys) -> None:
    refused(place, capsys, ["train", "--resume", str(place / "run"), "--set",
                            "train.iterations=1"], 2, "already at iteration 2")
    refused(place, capsys, ["train", str(place / "config.yaml"), "--resume", str(place / "run")],
            2, "give no CONFIG")
    refused(place, capsys, ["train", "--resume", str(place / "run"), "--out", str(place / "o")],
            2, "no --out")
    refused(place, capsys, ["train", "--resume", str(place / "store")], 2, "no checkpoint")


@pytest.mark.parametrize("content, words", [(b"\x00\xff\xfe binary", "not a text file"),
                                            (b"", "empty"), (b"task: {ways: 5\n", "malformed YAML"),
                                            (b"- 1\n- 2\n", "expected a mapping"),
                                            (b"colour: blue\n", "colour"),
                                            (b"train: {iterations: .inf}\n", "train.iterations")])
def test_train_refuses_broken_config_files(place: Path, capsys, content: bytes,
                                           words: str) -> None:
    bad = place / "broken.yaml"
    bad.write_bytes(content)
    try:
        refused(place, capsys, ["train", str(bad), "--out", str(place / "never")], 2, words)
    finally:
        bad.unlink()


def test_train_refuses_outputs_it_cannot_write(place: Path, capsys) -> None:
    refused(place, capsys, ["train", str(place / "config.yaml"), "--out",
                            str(place / "config.yaml")], 2, "is a file")
    refused(place, capsys, ["train", str(place / "config.yaml"), "--out", str(place / "run")], 2,
            "already holds a run")
    refused(place, capsys, ["train", str(place / "config.yaml"), "--out", str(place / "run"),
                            "--resume", str(place / "run")], 2, "give no CONFIG")


@pytest.fixture
def damaged(place: Path):
    """A copy of the trained run, damaged by the test, removed afterwards."""
    copy = place / "damaged"
    shutil.copytree(place / "run", copy)
    yield copy
    shutil.rmtree(copy)


@pytest.mark.parametrize("what, words", [
    ("truncated", "state.pt: damaged"), ("garbage", "state.pt: damaged"),
    ("empty", "state.pt: damaged"), ("not-a-dict", "state.pt: not a metagan"),
    ("foreign", "does not fit its config.yaml"), ("config-binary", "config.yaml: not a text"),
    ("config-missing", "not a metagan checkpoint"), ("config-other-keys", "config.yaml: model.width"),
    ("metrics-garbage", "metrics.json: damaged")])
def test_evaluate_names_a_damaged_checkpoint(place: Path, capsys, damaged: Path, what: str,
                                             words: str) -> None:
    import torch

    ck = damaged / LAST
    state = ck / "state.pt"
    if what == "truncated":
        state.write_bytes(state.read_bytes()[:200])
    elif what == "garbage":
        state.write_bytes(b"PK\x03\x04 garbage" * 20)
    elif what == "empty":
        state.write_bytes(b"")
    elif what == "not-a-dict":
        torch.save([1, 2, 3], state)
    elif what == "foreign":
        other = place / "other"
        if not other.exists():
            train(tiny_config("protonet", **{"train.iterations": 2, "model.hidden": 16}), other)
        shutil.copy(other / LAST / "state.pt", state)
    elif what == "config-binary":
        (ck / "config.yaml").write_bytes(b"\x00\xff\x00")
    elif what == "config-missing":
        (ck / "config.yaml").unlink()
    elif what == "config-other-keys":
        (ck / "config.yaml").write_text("model: {width: 3}\n")
    else:
        (ck / "metrics.json").write_text("{not json")
    line = refused(place, capsys, ["evaluate", str(damaged), "--episodes", "4"], 2, words)
    assert "weights_only=False" not in line


@pytest.mark.parametrize("argv, words", [
    (["--ways", "1"], "--ways"), (["--ways", "1000"], "--ways"), (["--ways", "0"], "--ways"),
    (["--shots", "1000"], "--shots"), (["--episodes", "0"], "--episodes"),
    (["--episodes", "-5"], "--episodes"), (["--adapt-steps", "3"], "does not generate"),
    (["--adapt-steps", "-1"], "--adapt-steps")])
def test_evaluate_refuses_impossible_tasks(place: Path, capsys, argv: list[str],
                                           words: str) -> None:
    refused(place, capsys, ["evaluate", str(place / "run"), *argv], 2, words)


def test_evaluate_and_sample_refuse_missing_paths(place: Path, capsys) -> None:
    refused(place, capsys, ["evaluate", str(place / "nowhere")], 2, "no such run")
    refused(place, capsys, ["sample", str(place / "run"), "--out", str(place / "store")], 2,
            "is a directory")
    refused(place, capsys, ["sample", str(place / "run"), "--out", str(place / "no/dir/x.png")],
            2, "does not exist")
    refused(place, capsys, ["sample", str(place / "run"), "--out", str(place / "x.png"),
                            "--samples", "0"], 2, "--samples")


def test_search_refuses_outputs_before_any_work(place: Path, capsys) -> None:
    refused(place, capsys, ["search", str(place / "space.yaml"), "--name", "ok", "--storage",
                            str(place / "store"), "--json", str(place / "store")], 2, "--json")
    refused(place, capsys, ["report", "x", "--storage", str(place / "store"), "--out",
                            str(place / "store")], 2, "--out")


@pytest.mark.parametrize("address", ["http://h:notaport", "http://:8265", "http://h:8265/x/y",
                                     "ftp://h:8265"])
def test_cluster_verbs_refuse_malformed_dashboard_addresses(place: Path, capsys,
                                                            address: str) -> None:
    for argv in (["status"], ["logs", "job1"], ["stop", "job1"]):
        refused(place, capsys, [*argv, "--address", address], 2, "--address")


@pytest.mark.parametrize("address", ["127.0.0.1:notaport", "http://127.0.0.1:8265", "h:99999",
                                     ":6379"])
def test_search_refuses_malformed_cluster_addresses(place: Path, capsys, address: str) -> None:
    refused(place, capsys, ["search", str(place / "space.yaml"), "--name", "ok", "--storage",
                            str(place / "store"), "--address", address], 2, "--address")


def test_search_gives_up_on_an_unreachable_cluster_in_seconds(place: Path, capsys) -> None:
    import time

    import metagan.tune.search  # noqa: F401  (Ray's import time is not what is measured)

    from .services import closed_port

    start = time.monotonic()
    with closed_port() as port:
        refused(place, capsys, ["search", str(place / "space.yaml"), "--name", "ok", "--storage",
                                str(place / "store"), "--address", f"127.0.0.1:{port}"], 5,
                "no Ray cluster answers")
    assert time.monotonic() - start < 60  # Ray's own client retries for minutes


@pytest.mark.parametrize("content", ["plain-torch-save", "text", "empty", "zip-of-junk"])
def test_train_refuses_a_feature_model_that_is_not_torchscript(place: Path, capsys,
                                                               content: str) -> None:
    import zipfile

    import torch

    path = place / f"feature-{content}.pt"
    if content == "plain-torch-save":
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    elif content == "text":
        path.write_text("def f(x): return x\n")
    elif content == "empty":
        path.write_bytes(b"")
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("m/code/x.py", "junk")
    try:
        refused(place, capsys, ["train", str(place / "config.yaml"), "--set", "method=fewshot_gan",
                                "--set", f"gan.feature_model={path}", "--out",
                                str(place / "never")], 2, "is not a TorchScript model")
    finally:
        path.unlink()


@pytest.mark.parametrize("content, words", [(b"\xff\xfe\x00", "damaged (not text)"),
                                            (b"base: [unclosed\n", "damaged (not YAML)"),
                                            (b"- a list\n", "damaged (not a search space)"),
                                            (b"base: {}\nspace: {optim.lr: {uniform: [1, 0]}}\n",
                                             "low < high")])
def test_search_resume_names_a_damaged_stored_space(place: Path, capsys, content: bytes,
                                                    words: str) -> None:
    stored = place / "store" / "broken" / "metagan_space.yaml"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(content)
    try:
        line = refused(place, capsys, ["search", "--resume", "broken", "--storage",
                                       str(place / "store")], 2, words)
        assert "metagan_space.yaml" in line
    finally:
        shutil.rmtree(stored.parent)


@pytest.mark.parametrize("extra, words", [(["--set", "search.num_samples=9"], "--set"),
                                          (["SPACE"], "SPACE"), (["--name", "other"], "--name"),
                                          (["--dry-run"], "--dry-run")])
def test_search_resume_refuses_arguments_it_would_ignore(place: Path, capsys, extra: list[str],
                                                         words: str) -> None:
    extra = [str(place / "space.yaml") if e == "SPACE" else e for e in extra]
    refused(place, capsys, ["search", *extra, "--resume", "old", "--storage",
                            str(place / "store")], 2, f"{words} cannot be applied")


# The public Python API: the same refusals, as one exception whose message is one line.
API_CASES = [
    ("best_result", ("../x", "STORE"), "experiment name"),
    ("best_result", ("x;id", "STORE"), "experiment name"),
    ("best_result", ("ok", "s3://Bad_Bucket/x"), "not a valid bucket name"),
    ("best_result", ("ok", "gs://b/x"), "expected s3://bucket/prefix"),
    ("best_result", ("nope", "STORE"), "no experiment 'nope'"),
    ("best_result", ("ok", "STORE/missing-dir"), "no such directory"),
    ("list_experiments", ("STORE/missing-dir",), "no such directory"),
    ("list_experiments", ("s3://[",), "not a URI"),
    ("download_checkpoint", ("a/b", "STORE"), "experiment name"),
    ("load_best_model", ("..", "STORE"), "experiment name"),
    ("load_best_model", ("nope", "STORE"), "no experiment 'nope'"),
    ("submit", ("SPACE", "http://127.0.0.1:1", "s3://metagan/x", "x;id"), "--name"),
    ("submit", ("SPACE", "http://127.0.0.1:1", "/local/dir", "ok"), "needs s3://"),
    ("submit", ("SPACE", "ftp://h:1", "s3://metagan/x", "ok"), "--address"),
    ("status", ("job", "http://h:notaport"), "--address"),
]


@pytest.mark.parametrize("function, args, words", API_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(API_CASES)])
def test_the_api_refuses_with_one_clear_line(place: Path, function: str, args: tuple,
                                             words: str) -> None:
    from metagan import api
    from metagan.storage import StorageError
    from metagan.tune.cluster import ClusterError

    real = [str(place / "space.yaml") if a == "SPACE" else
            a.replace("STORE", str(place / "store")) for a in args]
    before = snapshot(place)
    with pytest.raises((ConfigError, StorageError, ClusterError)) as e:
        getattr(api, function)(*real)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert snapshot(place) == before


@pytest.fixture
def user_images(tmp_path: Path) -> Path:
    """support/<a|b>/*.png, query/*.png, and folders that are wrong in one way each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def png(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(path)

    for c in "ab":
        png(tmp_path / "support" / c / "0.png")
        png(tmp_path / "one-class" / c / "0.png") if c == "a" else None
    png(tmp_path / "query" / "q0.png")
    (tmp_path / "no-classes").mkdir()
    (tmp_path / "empty-query").mkdir()
    (tmp_path / "broken-query").mkdir()
    (tmp_path / "broken-query" / "q.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return tmp_path


@pytest.mark.parametrize("change, words", [
    ({"checkpoint": "nowhere"}, "no such run"),
    ({"--support": "missing"}, "no such folder"),
    ({"--support": "no-classes"}, "no class folders"),
    ({"--support": "one-class"}, "at least 2 classes"),
    ({"--query": "missing"}, "no such folder"),
    ({"--query": "empty-query"}, "no .png/.jpg/.jpeg images"),
    ({"--query": "broken-query"}, "not a readable image"),
    ({"--out": "."}, "is a directory"),
    ({"--out": "p.txt"}, "expected a .csv file name"),
    ({"--out": "no/dir/p.csv"}, "does not exist"),
])
def test_predict_refuses_bad_input_in_one_line(place: Path, capsys, user_images: Path,
                                               change: dict[str, str], words: str) -> None:
    args = {"checkpoint": str(place / "run"), "--support": "support", "--query": "query",
            "--out": "p.csv", **change}
    argv = ["predict", args["checkpoint"] if change.get("checkpoint") is None
            else str(place / args["checkpoint"])]
    for flag in ("--support", "--query", "--out"):
        argv += [flag, str(user_images / args[flag])]
    refused(place, capsys, argv, 2, words)
    assert not (user_images / "p.csv").exists()


def test_predict_and_sample_name_a_damaged_or_wrong_checkpoint(place: Path, capsys,
                                                                damaged: Path,
                                                                user_images: Path) -> None:
    (damaged / LAST / "state.pt").write_bytes(b"PK\x03\x04 garbage" * 20)
    line = refused(place, capsys, ["predict", str(damaged), "--support",
                                   str(user_images / "support"), "--query",
                                   str(user_images / "query")], 2, "state.pt: damaged")
    assert "weights_only=False" not in line
    # A classifier has no generator; a missing support folder is named.
    refused(place, capsys, ["sample", str(place / "run"), "--support",
                            str(user_images / "support" / "a"), "--out",
                            str(user_images / "g.png")], 2, "has no generator")
    refused(place, capsys, ["sample", str(place / "run"), "--support",
                            str(user_images / "nope"), "--out", str(user_images / "g.png")], 2,
            "nope: no such folder or file")
