"""A dataset root in S3 (`data.root: s3://bucket/prefix`): fetched once per machine into the
cache, keyed by content, read like a local folder; an unreachable or empty root is one line
before any work. Against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metagan.config import build_config
from metagan.data import DataError, load_splits
from metagan.data.remote import fetch

from .conftest import run_cli, tiny_data, write_yaml

pytestmark = [pytest.mark.s3]


def upload(s3: dict, folder: Path, prefix: str) -> str:
    """Every file under `folder` to s3://metagan/<prefix>/..., returning the URI."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3["client"].upload_file(str(path), s3["bucket"],
                                     f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{s3['bucket']}/{prefix}"


def folder_data(uri: str, cache: Path, **extra: object) -> dict[str, object]:
    return tiny_data("protonet", **{"data.source": "folder", "data.root": uri,
                                    "data.rotations": False, "data.val_groups": 2,
                                    "data.test_groups": 2, "data.cache_dir": str(cache),
                                    "task.ways": 2, **extra})


def test_an_s3_root_is_fetched_once_and_read_like_the_folder(
        s3: dict, image_folder: Path, tmp_path: Path) -> None:
    uri = upload(s3, image_folder, "datasets/once")
    cache = tmp_path / "cache"
    remote = load_splits(build_config(folder_data(uri, cache)).data)
    local = load_splits(build_config(folder_data(str(image_folder), tmp_path / "c2")).data)
    for split in ("train", "val", "test"):
        assert (remote.get(split).images == local.get(split).images).all()
        assert remote.get(split).classes == local.get(split).classes
    copies = list((cache / "remote").iterdir())
    copies = [c for c in copies if c.is_dir()]
    assert len(copies) == 1
    stamp = copies[0].stat().st_mtime_ns
    again = fetch(uri, cache)  # unchanged content: the same copy, not fetched anew
    assert again == copies[0] and again.stat().st_mtime_ns == stamp
    # Changed content is a new key: fetched anew.
    s3["client"].put_object(Bucket=s3["bucket"], Key="datasets/once/class00/extra.png",
                            Body=(image_folder / "class00" / "0.png").read_bytes())
    changed = fetch(uri, cache)
    assert changed != again and (changed / "class00" / "extra.png").is_file()


def test_train_on_an_s3_root(s3: dict, image_folder: Path, tmp_path: Path) -> None:
    uri = upload(s3, image_folder, "datasets/train")
    config = write_yaml(tmp_path / "c.yaml", folder_data(uri, tmp_path / "cache"))
    r = run_cli("train", str(config), "--out", str(tmp_path / "run"), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["iteration"] == 6


@pytest.mark.parametrize("what, uri, message", [
    ("empty", "s3://metagan/datasets/nothing-here", "no objects under this prefix"),
    ("no bucket", "s3://no-such-bucket-xyz/data", "bucket 'no-such-bucket-xyz' does not exist"),
    ("bad name", "s3://Bad_Bucket/data", "data.root: s3://Bad_Bucket/data: 'Bad_Bucket' is not "
                                         "a valid bucket name"),
])
def test_an_unusable_s3_root_is_one_line_before_work(s3: dict, tmp_path: Path, what: str,
                                                     uri: str, message: str) -> None:
    config = write_yaml(tmp_path / "c.yaml", folder_data(uri, tmp_path / "cache"))
    r = run_cli("train", str(config), "--out", str(tmp_path / "run"), "--quiet")
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not list((tmp_path / "run").glob("*"))  # nothing written (the same --out works later)


def test_an_unreachable_endpoint_is_named(s3: dict, image_folder: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    uri = upload(s3, image_folder, "datasets/down")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DataError, match=r"data.root s3://metagan/datasets/down \(endpoint "
                                        r"http://127.0.0.1:9\): endpoint unreachable"):
        fetch(uri, tmp_path / "cache")
    assert not (tmp_path / "cache" / "remote").exists() or not any(
        p.is_dir() for p in (tmp_path / "cache" / "remote").iterdir())


def test_a_bad_aws_profile_is_one_line(s3: dict, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's own errors (here ProfileNotFound) are named, never a traceback."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile-metagan")
    with pytest.raises(DataError, match=r"data.root s3://metagan/x .*: ProfileNotFound"):
        fetch("s3://metagan/x", tmp_path / "cache")
