"""A dataset root in S3-compatible storage (`data.root: s3://bucket/prefix`), fetched once per
machine into the cache before anything reads it.

The local copy is keyed by the prefix's content (every object's key, size and ETag), so a
changed dataset is fetched anew and an unchanged one never twice: the trials of a search that
share a node share one copy. The copy is written to a private folder and renamed into place
under a lock, so a concurrent trial never reads half a dataset. Credentials and the endpoint
come from the standard AWS variables, as for result storage (metagan.storage).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from ..config import ConfigError
from ..locks import locked
from .images import DataError

SCHEME = "s3://"


def is_remote(root: str) -> bool:
    """Whether a data root names S3-compatible storage rather than a local folder."""
    return root.startswith(SCHEME)


def _listing(uri: str) -> tuple[str, str, list[tuple[str, int, str]]]:
    """(bucket, prefix, [(relative key, size, etag)]) of every object under the URI's prefix;
    every failure one DataError line naming the URI and endpoint."""
    # Here, not at the top: pyarrow and boto3 load only for a remote root.
    from ..storage import parse_storage, s3_client, s3_endpoint, s3_failure

    try:
        storage = parse_storage(uri)
    except ConfigError as e:  # "storage 's3://...': why" -> "data.root: s3://...: why"
        raise ConfigError(f"data.root: {uri}: {str(e).split(': ', 1)[-1]}") from None
    bucket, prefix = storage.bucket, storage.prefix
    where = f"data.root {uri} (endpoint {s3_endpoint() or 'AWS'})"
    start = f"{prefix}/" if prefix else ""
    objects: list[tuple[str, int, str]] = []
    try:
        pages = s3_client(timeout_s=10).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=start)
        for page in pages:
            for item in page.get("Contents", []):
                relative = item["Key"][len(start):]
                if relative and not relative.endswith("/"):
                    objects.append((relative, int(item["Size"]), str(item.get("ETag", ""))))
    except Exception as e:
        reason = s3_failure(e, bucket)
        if reason is None:
            raise
        raise DataError(f"{where}: {reason}") from None
    if not objects:
        raise DataError(f"{where}: no objects under this prefix")
    for relative, _, _ in objects:
        parts = PurePosixPath(relative).parts
        if ".." in parts or relative.startswith("/"):
            raise DataError(f"{where}: object key {relative!r} would leave the data folder")
    return bucket, start, sorted(objects)


def fetch(uri: str, cache_dir: Path) -> Path:
    """The local copy of the dataset under `uri` (fetched on first use on this machine)."""
    from ..storage import s3_client

    bucket, start, objects = _listing(uri)
    where = f"s3://{bucket}/{start}"  # s3://b/p and s3://b/p/ are one dataset
    key = hashlib.sha256(json.dumps([where, objects]).encode()).hexdigest()[:20]
    root = cache_dir / "remote"
    dest = root / key
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with locked(dest):
        if dest.is_dir():  # another trial on this machine fetched it while we waited
            return dest
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}-"))
        try:
            client = s3_client(timeout_s=30)
            for relative, _, _ in objects:
                target = tmp.joinpath(*PurePosixPath(relative).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, start + relative, str(target))
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
            os.replace(tmp, dest)
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, DataError):
                raise
            raise DataError(f"data.root {uri}: fetching failed ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return dest
