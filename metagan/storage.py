"""Where a search keeps its results: a local path or an S3-compatible bucket (no Ray here).

Ray Tune writes to S3 through a pyarrow filesystem handed to it (`Storage.filesystem`), and the
results store (`metagan.results`) reads through the same one. The filesystem is
wrapped in `ResilientS3Handler`, which retries every operation with backoff while the endpoint
is unreachable (up to `outage_s`), so a short outage delays a checkpoint upload instead of
failing the trial; the checkpoint stays in the trial's local directory until it is stored.

Credentials are never passed explicitly or pickled: pyarrow and boto3 read them from the
standard AWS variables (or an instance role) in each process. The endpoint comes from
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (MinIO, Ceph, moto ...), the region from AWS_REGION /
AWS_DEFAULT_REGION.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from .config import ConfigError


class StorageError(RuntimeError):
    """Storage that cannot be used: unreachable, missing, or not writable."""


# An experiment name becomes a directory, a Ray job id and a command-line argument: letters,
# digits and . _ - only, so it can never leave the storage root or reach a shell as syntax.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# S3 bucket naming rules; a prefix is path segments of the same safe characters.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._=+-]+")


def check_name(name: str, what: str = "--name") -> str:
    """`name` if it is a safe experiment name, else a ConfigError saying what is allowed."""
    if not NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{what} {name!r}: an experiment name is 1-100 letters, digits, '.', "
                          "'_' or '-', starting with a letter or digit")
    return name


def check_endpoint(url: str | None) -> str | None:
    """The S3 endpoint URL if it is http(s)://HOST[:PORT][/...], else a ConfigError."""
    if url is None:
        return None
    if "@" in url.split("://", 1)[-1].split("/", 1)[0]:  # user:secret@host: never echoed
        raise ConfigError("AWS_ENDPOINT_URL: credentials inside the URL are not accepted (give "
                          "them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    try:
        parsed = urlparse(url)
    except ValueError:
        raise ConfigError(f"AWS_ENDPOINT_URL {url!r}: expected http(s)://HOST[:PORT]") from None
    try:
        port_ok = parsed.port is None or 0 < parsed.port < 65536
    except ValueError:
        port_ok = False
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not port_ok:
        raise ConfigError(f"AWS_ENDPOINT_URL {url!r}: expected http(s)://HOST[:PORT]")
    return url


# Substrings of pyarrow / AWS SDK errors that mean "the endpoint did not answer" (retry),
# as opposed to "the endpoint answered no" (missing key, access denied: do not retry).
_TRANSIENT = ("NETWORK_CONNECTION", "curlCode", "Couldn't connect", "Connection refused",
              "connection", "Connection", "timed out", "Timeout", "SERVICE_UNAVAILABLE",
              "SLOW_DOWN", "INTERNAL_FAILURE", "Broken pipe", "reset by peer", "HTTP response code: 5")


def is_transient(error: BaseException) -> bool:
    """Whether an S3 error looks like an outage rather than a definite answer."""
    if isinstance(error, (FileNotFoundError, PermissionError)):
        return False
    return isinstance(error, OSError) and any(t in str(error) for t in _TRANSIENT)


def s3_endpoint() -> str | None:
    """The S3-compatible endpoint URL from the environment (None: AWS itself), checked."""
    return check_endpoint(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                          or None)


def s3_region() -> str:
    """The region from the environment."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


class ResilientS3Handler(pafs.FileSystemHandler):
    """A pyarrow S3 filesystem whose operations wait out short outages (retry with backoff).

    Uploads are buffered in memory and sent on close, so a failed upload can be sent again;
    downloads are read whole before they are handed out, so a broken read is retried too.
    """

    def __init__(self, endpoint: str | None, region: str, outage_s: float = 300.0,
                 max_backoff_s: float = 5.0) -> None:
        self.endpoint, self.region = endpoint, region
        self.outage_s, self.max_backoff_s = outage_s, max_backoff_s
        self._inner: pafs.S3FileSystem | None = None

    def __reduce__(self):
        # Only the endpoint and settings travel (to Ray workers, into Tune's state): no secrets.
        return (ResilientS3Handler, (self.endpoint, self.region, self.outage_s, self.max_backoff_s))

    @property
    def inner(self) -> pafs.S3FileSystem:
        if self._inner is None:
            kwargs: dict[str, Any] = {}
            if self.endpoint:
                url = urlparse(self.endpoint)
                kwargs.update(endpoint_override=url.netloc or url.path, scheme=url.scheme or "https")
            self._inner = pafs.S3FileSystem(
                region=self.region, connect_timeout=3, request_timeout=20,
                # One attempt per call: retries (and their patience) are ours.
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
                background_writes=False, **kwargs)
        return self._inner

    def _retry(self, what: str, fn, *args):
        deadline = time.monotonic() + self.outage_s
        delay = 0.25
        while True:
            try:
                return fn(*args)
            except OSError as e:
                if not is_transient(e) or time.monotonic() + delay > deadline:
                    if is_transient(e):
                        raise StorageError(f"S3 endpoint {self.endpoint or 'AWS'} unreachable for "
                                           f"{self.outage_s:.0f} s ({what}): {e}") from e
                    raise
                time.sleep(delay)
                delay = min(2 * delay, self.max_backoff_s)

    # pyarrow FileSystemHandler interface
    def get_type_name(self) -> str:
        return "metagan-s3"

    def normalize_path(self, path: str) -> str:
        return self.inner.normalize_path(path)

    def get_file_info(self, paths):
        return self._retry("stat", self.inner.get_file_info, paths)

    def get_file_info_selector(self, selector):
        return self._retry("list", self.inner.get_file_info, selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._retry("mkdir", lambda: self.inner.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        self._retry("delete", self.inner.delete_dir, path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._retry("delete", lambda: self.inner.delete_dir_contents(
            path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        raise StorageError("refusing to delete the whole bucket")

    def delete_file(self, path: str) -> None:
        self._retry("delete", self.inner.delete_file, path)

    def move(self, src: str, dest: str) -> None:
        self._retry("move", self.inner.move, src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self._retry("copy", self.inner.copy_file, src, dest)

    def _read(self, path: str) -> pa.BufferReader:
        def read() -> bytes:
            with self.inner.open_input_stream(path, compression=None) as f:
                return f.read()
        return pa.BufferReader(self._retry(f"read {path}", read))

    def open_input_stream(self, path: str):
        return self._read(path)

    def open_input_file(self, path: str):
        return self._read(path)

    def open_output_stream(self, path: str, metadata):
        return pa.PythonFile(_UploadOnClose(self, path, metadata), mode="w")

    def open_append_stream(self, path: str, metadata):
        raise StorageError("S3 has no append")

    def upload(self, path: str, data: bytes, metadata=None) -> None:
        """Write one object, retrying through an outage."""
        def write() -> None:
            with self.inner.open_output_stream(path, compression=None, metadata=metadata) as f:
                f.write(data)
        self._retry(f"write {path}", write)

    def __eq__(self, other) -> bool:
        return isinstance(other, ResilientS3Handler) and (self.endpoint, self.region) == (
            other.endpoint, other.region)

    def __ne__(self, other) -> bool:
        return not self == other


class _UploadOnClose(io.RawIOBase):
    """A write buffer that becomes one S3 object (with retries) when closed."""

    def __init__(self, handler: ResilientS3Handler, path: str, metadata) -> None:
        self.handler, self.path, self.metadata = handler, path, metadata
        self.buffer = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.buffer.write(data)

    def close(self) -> None:
        if not self.closed:
            data = self.buffer.getvalue()
            super().close()
            self.handler.upload(self.path, data, self.metadata)


@dataclass(frozen=True)
class Storage:
    """A parsed `--storage` URI."""

    uri: str
    bucket: str = ""          # s3 only
    prefix: str = ""          # s3 only
    outage_s: float = 300.0

    @property
    def is_s3(self) -> bool:
        return bool(self.bucket)

    @property
    def filesystem(self) -> pafs.FileSystem | None:
        """The pyarrow filesystem to hand to Ray Tune (None: a local path)."""
        if not self.is_s3:
            return None
        return pafs.PyFileSystem(ResilientS3Handler(s3_endpoint(), s3_region(), self.outage_s))

    @property
    def storage_path(self) -> str:
        """RunConfig.storage_path: "bucket/prefix" beside a filesystem, else an absolute path."""
        if self.is_s3:
            return posixpath.join(self.bucket, self.prefix) if self.prefix else self.bucket
        return str(Path(self.uri).expanduser().resolve())

    def experiment_path(self, name: str) -> str:
        """Where experiment `name` lives on the filesystem (a checked name: never outside it)."""
        check_name(name, "experiment")
        return posixpath.join(self.storage_path, name) if self.is_s3 else str(
            Path(self.storage_path) / name)

    def uri_of(self, fs_path: str) -> str:
        """A user-facing URI for a path on the filesystem (s3://... or a local path)."""
        return f"s3://{fs_path}" if self.is_s3 else fs_path

    def path_of(self, uri: str) -> str:
        """The filesystem path of a URI `uri_of` made (its inverse); a ConfigError for another scheme."""
        if self.is_s3 != uri.startswith("s3://"):
            raise ConfigError(f"{uri}: not a location in storage {self.uri}")
        return uri[len("s3://"):] if self.is_s3 else uri


def parse_storage(uri: str, outage_s: float = 300.0) -> Storage:
    """Read `s3://bucket/prefix` or a local path."""
    if "://" not in uri:
        return Storage(uri, outage_s=outage_s)
    try:
        url = urlparse(uri)
    except ValueError as e:  # e.g. an unbalanced "[" read as an IPv6 host
        raise ConfigError(f"storage {uri!r}: not a URI ({e})") from None
    if url.scheme != "s3":
        raise ConfigError(f"storage {uri!r}: expected s3://bucket/prefix or a local path")
    if not url.netloc:
        raise ConfigError(f"storage {uri!r}: no bucket name")
    if not BUCKET.fullmatch(url.netloc) or ".." in url.netloc:
        raise ConfigError(f"storage {uri!r}: {url.netloc!r} is not a valid bucket name (3-63 "
                          "lower-case letters, digits, '.' or '-')")
    prefix = url.path.strip("/")
    if url.query or url.fragment or any(
            not PREFIX_SEGMENT.fullmatch(seg) or seg in (".", "..") for seg in prefix.split("/") if prefix):
        raise ConfigError(f"storage {uri!r}: the prefix may hold only letters, digits and "
                          "'._=+-' between slashes")
    return Storage(uri, url.netloc, prefix, outage_s)


def s3_client(timeout_s: float = 5.0):
    """A boto3 S3 client for the configured endpoint, failing fast when it is down."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", endpoint_url=s3_endpoint(), region_name=s3_region(),
                        config=BotoConfig(connect_timeout=timeout_s, read_timeout=timeout_s,
                                          retries={"max_attempts": 2, "mode": "standard"}))


def s3_failure(error: BaseException, bucket: str) -> str | None:
    """Why a boto3 call on `bucket` failed, in one line (None: not a client or endpoint
    failure, which callers let through)."""
    import botocore.exceptions as be

    if isinstance(error, be.NoCredentialsError):
        return "no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use an " \
               "instance role)"
    if isinstance(error, (be.EndpointConnectionError, be.ConnectTimeoutError,
                          be.ReadTimeoutError)):
        return f"endpoint unreachable ({type(error).__name__})"
    if isinstance(error, be.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket"):
            return f"bucket {bucket!r} does not exist"
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied to bucket {bucket!r} ({code})"
        return code or str(error).splitlines()[0][:200]
    if isinstance(error, be.BotoCoreError):  # a bad profile, partial credentials, TLS, proxy ...
        return type(error).__name__
    return None


def _s3_checked(storage: Storage, action) -> None:
    """Run boto3 calls, turning the usual failures into one clear StorageError."""
    where = f"storage {storage.uri} (endpoint {s3_endpoint() or 'AWS'})"
    try:
        action(s3_client())
    except Exception as e:
        reason = s3_failure(e, storage.bucket)
        if reason is None:
            raise
        raise StorageError(f"{where}: {reason}") from None


def check_readable(storage: Storage) -> None:
    """Fail fast unless the storage can be read (the bucket or directory exists, access allowed)."""
    if not storage.is_s3:
        if not Path(storage.storage_path).is_dir():
            raise StorageError(f"storage {storage.uri}: no such directory")
        return
    _s3_checked(storage, lambda c: c.head_bucket(Bucket=storage.bucket))


def check_storage(storage: Storage) -> None:
    """Fail fast, before any trial, unless the storage is reachable and writable."""
    if not storage.is_s3:
        path = Path(storage.storage_path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe_file = path / f".metagan-probe-{uuid.uuid4().hex}"
            probe_file.write_text("ok")
            probe_file.unlink()
        except OSError as e:
            raise StorageError(f"storage {storage.uri}: not writable ({e.strerror})") from None
        return
    key = posixpath.join(storage.prefix, f".metagan-probe-{uuid.uuid4().hex}")

    def probe(client) -> None:
        client.head_bucket(Bucket=storage.bucket)
        client.put_object(Bucket=storage.bucket, Key=key, Body=b"ok")
        client.delete_object(Bucket=storage.bucket, Key=key)

    _s3_checked(storage, probe)
