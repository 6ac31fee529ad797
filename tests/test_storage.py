"""The storage layer against a real S3 endpoint (moto's server) behind a blockable proxy."""

from __future__ import annotations

import pickle
import threading
import time

import pyarrow.fs as pafs
import pytest

from metagan.config import ConfigError
from metagan.storage import (
    ResilientS3Handler,
    StorageError,
    check_readable,
    check_storage,
    is_transient,
    parse_storage,
)

from .conftest import S3_SECRET

pytestmark = pytest.mark.s3


def test_parse_storage() -> None:
    s = parse_storage("s3://bucket/a/b/")
    assert (s.bucket, s.prefix, s.storage_path) == ("bucket", "a/b", "bucket/a/b")
    assert s.experiment_path("x") == "bucket/a/b/x" and s.uri_of("bucket/a") == "s3://bucket/a"
    local = parse_storage("./results")
    assert not local.is_s3 and local.filesystem is None and local.storage_path.endswith("/results")
    with pytest.raises(ConfigError, match="expected s3://"):
        parse_storage("gs://bucket/x")
    with pytest.raises(ConfigError, match="no bucket"):
        parse_storage("s3:///x")


def test_transient_errors() -> None:
    assert is_transient(OSError("AWS Error NETWORK_CONNECTION during PutObject: curlCode: 7"))
    assert not is_transient(FileNotFoundError("Path does not exist"))
    assert not is_transient(OSError("AWS Error ACCESS_DENIED during HeadObject"))


def test_filesystem_pickles_without_credentials(s3: dict) -> None:
    fs = parse_storage("s3://metagan/p").filesystem
    blob = pickle.dumps(fs)
    assert S3_SECRET.encode() not in blob and b"testing" not in blob
    again = pickle.loads(blob)
    with again.open_output_stream("metagan/p/hello.txt") as f:
        f.write(b"hi")
    assert s3["client"].get_object(Bucket="metagan", Key="p/hello.txt")["Body"].read() == b"hi"


def test_write_waits_out_a_short_outage(s3: dict) -> None:
    fs = pafs.PyFileSystem(ResilientS3Handler(s3["proxy"].url, "us-east-1", outage_s=30))
    s3["proxy"].block()
    threading.Timer(3.0, s3["proxy"].unblock).start()
    start = time.monotonic()
    with fs.open_output_stream("metagan/outage/file.bin") as f:
        f.write(b"x" * 1000)
    assert time.monotonic() - start >= 2.5
    body = s3["client"].get_object(Bucket="metagan", Key="outage/file.bin")["Body"].read()
    assert body == b"x" * 1000
    with fs.open_input_stream("metagan/outage/file.bin") as f:
        assert f.read() == b"x" * 1000


def test_a_longer_outage_is_a_clear_error(s3: dict) -> None:
    fs = pafs.PyFileSystem(ResilientS3Handler(s3["proxy"].url, "us-east-1", outage_s=2))
    s3["proxy"].block()
    try:
        with pytest.raises(Exception, match="unreachable for 2 s"):
            fs.get_file_info("metagan/anything")
    finally:
        s3["proxy"].unblock()
    with pytest.raises(FileNotFoundError):  # a real "no" is not retried
        with fs.open_input_stream("metagan/does/not/exist"):
            pass


def test_preflight_checks(s3: dict, tmp_path) -> None:
    check_storage(parse_storage("s3://metagan/ok"))
    with pytest.raises(StorageError, match="bucket 'nope' does not exist"):
        check_storage(parse_storage("s3://nope/x"))
    with pytest.raises(StorageError, match="no such directory"):
        check_readable(parse_storage(str(tmp_path / "missing")))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    import os

    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(StorageError, match="not writable"):
            check_storage(parse_storage(str(ro / "sub")))
