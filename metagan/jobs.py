"""Searches as Ray Jobs on a cluster: submit, status, logs, stop.

On a cluster started with Ray 2.60's token authentication (RAY_AUTH_MODE=token on its nodes)
the dashboard's Jobs API answers only requests that carry `Authorization: Bearer <token>`. The
token is read from RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (which
`ray get-auth-token --generate` writes) and sent as an explicit header whenever one is found.
It is never printed, logged or stored.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError
from .tune.cluster import ClusterError, auth_token, split_host_port

PACKAGE_DIR = Path(__file__).resolve().parent
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# Storage settings that are not secrets and that the job's driver needs like the client.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def _headers() -> dict[str, str]:
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def dashboard_url(address: str | None) -> str:
    """Normalise a dashboard address: http://HOST:8265 (default: $RAY_ADDRESS)."""
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address:
        raise ConfigError("--address: give the cluster's dashboard, e.g. http://HEAD:8265 "
                          "(or set RAY_ADDRESS)")
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"--address {address}: expected http://HOST:PORT of the Ray dashboard")
    split_host_port(address.rstrip("/"), "--address")
    return address.rstrip("/")


def request(address: str, path: str, timeout: float = 10.0) -> Any:
    """GET a dashboard REST path with the token; clear errors for the usual failures."""
    url = dashboard_url(address) + path
    req = urllib.request.Request(url, headers=_headers())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read().decode()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            if auth_token() is None:
                raise ClusterError(f"{dashboard_url(address)}: the cluster requires a token and "
                                   "none was found (set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or "
                                   "copy the head node's ~/.ray/auth_token)") from None
            raise ClusterError(f"{dashboard_url(address)}: the cluster refused the token "
                               f"(HTTP {e.code}): it is wrong or from another cluster") from None
        if e.code == 404:
            raise ClusterError(f"{url}: not found (HTTP 404)") from None
        raise ClusterError(f"{url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ClusterError(f"cannot reach the Ray dashboard at {dashboard_url(address)} "
                           f"({reason})") from None
    return json.loads(body) if body else None


def client(address: str):
    """A JobSubmissionClient for a reachable cluster whose token was accepted."""
    from ray.job_submission import JobSubmissionClient

    request(address, "/api/version")  # reachability and token, with a clear message
    return JobSubmissionClient(dashboard_url(address), headers=_headers())


@dataclass
class Submitted:
    job_id: str
    name: str
    dashboard: str


def submit(space: str | Path, address: str, storage: str, name: str | None = None,
           overrides: list[str] | None = None) -> Submitted:
    """Validate the space and storage here, then run `metagan search` as a Ray Job."""
    from .space import load_spec
    from .storage import check_name, check_storage, parse_storage

    name = check_name(name or f"search-{time.strftime('%Y%m%d-%H%M%S')}")
    dashboard_url(address)                       # a malformed address fails before any network
    spec = load_spec(space, overrides)           # a bad space fails here, not on the cluster
    store = parse_storage(storage, spec.storage.outage_s)
    if not store.is_s3:
        raise ConfigError(f"--storage {storage!r}: a cluster job needs s3://bucket/prefix, "
                          "which every node can reach")
    check_storage(store)                         # an unreachable bucket fails here too
    jobs = client(address)                       # and an unreachable cluster or a bad token
    workdir = Path(tempfile.mkdtemp(prefix="metagan-job-"))
    # The resolved space (its base config inlined) travels; so does the package itself.
    (workdir / "space.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env["PYTHONUNBUFFERED"] = "1"
    try:
        job_id = jobs.submit_job(
            # Ray runs the entrypoint in a shell: both values are validated and quoted.
            entrypoint=shlex.join(["python", "-m", "metagan.cli", "search", "space.yaml",
                                   "--name", name, "--storage", store.uri]),
            submission_id=f"metagan-{name}-{uuid.uuid4().hex[:6]}",
            runtime_env={"working_dir": str(workdir), "py_modules": [str(PACKAGE_DIR)],
                         "env_vars": env, "excludes": ["__pycache__"]},
            metadata={"metagan_experiment": name, "metagan_storage": storage})
    except RuntimeError as e:  # the Jobs API answered with an error
        raise ClusterError(f"{dashboard_url(address)}: the cluster refused the job: {e}") from None
    return Submitted(job_id, name, dashboard_url(address))


def status(job_id: str | None, address: str) -> list[dict[str, Any]]:
    """One job's status, or every metagan job's (newest first)."""
    jobs = client(address)
    if job_id:
        try:
            info = jobs.get_job_info(job_id)
        except RuntimeError as e:
            raise ClusterError(f"job {job_id}: not found on {dashboard_url(address)}") from e
        infos = [info]
    else:
        infos = [j for j in jobs.list_jobs() if (j.metadata or {}).get("metagan_experiment")]
        infos.sort(key=lambda j: j.start_time or 0, reverse=True)
    return [{"job_id": j.submission_id, "status": str(j.status.value if hasattr(j.status, "value")
                                                       else j.status),
             "experiment": (j.metadata or {}).get("metagan_experiment"),
             "storage": (j.metadata or {}).get("metagan_storage"),
             "message": j.message} for j in infos]


def logs(job_id: str, address: str, follow: bool = False):
    """The job's driver output: all of it, or (follow) chunks as they come until it ends."""
    jobs = client(address)
    try:
        if not follow:
            yield jobs.get_job_logs(job_id)
            return
        import asyncio

        async def tail():
            async for chunk in jobs.tail_job_logs(job_id):
                yield chunk

        agen = tail()
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.close()
    except RuntimeError as e:
        raise ClusterError(f"job {job_id}: not found on {dashboard_url(address)}") from e


def stop(job_id: str, address: str) -> bool:
    """Ask the cluster to stop a job; True if it was running."""
    jobs = client(address)
    try:
        return jobs.stop_job(job_id)
    except RuntimeError as e:
        raise ClusterError(f"job {job_id}: not found on {dashboard_url(address)}") from e
