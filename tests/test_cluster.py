"""Cluster use end to end: a local multi-node Ray (cluster/local_cluster.sh) with S3 beside it,
`metagan submit/status/logs`, the dashboard's job API and Prometheus metrics, then the Python
API from a process with no Ray, and `metagan report`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from .conftest import ROOT, tiny_data
from .services import closed_port, free_port, free_ports

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.s3]
SCRIPT = ROOT / "cluster" / "local_cluster.sh"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Head (no CPUs) + two 1-CPU worker nodes + moto S3, on free ports; stopped by PID."""
    state = tmp_path_factory.mktemp("local-cluster")
    ports = {"HEAD_PORT": free_port(), "DASHBOARD_PORT": free_port(), "S3_PORT": free_port()}
    metrics = free_ports(3)  # head, then one per worker
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "STATE": str(state),
           "METRICS_PORT": str(metrics),
           # Fixed, above free_ports()'s range and below Linux's ephemeral one (32768+).
           "WORKER_PORT_BASE": "24000",
           "BIN": str(Path(sys.executable).parent), "AWS_ACCESS_KEY_ID": "local",
           "AWS_SECRET_ACCESS_KEY": "local-secret", "AWS_REGION": "us-east-1"}
    env.pop("RAY_ADDRESS", None)
    # Ray's default client-server port, 10001, held as another Ray head (or a lingering one)
    # would hold it: the script must not need it.
    blocker = socket.socket()
    try:
        blocker.bind(("0.0.0.0", 10001))
        blocker.listen()
    except OSError:  # somebody holds it already, which tests the same thing
        pass
    try:
        with blocker:
            r = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                               text=True, timeout=300)
        pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
        assert r.returncode == 0, r.stdout + r.stderr + "".join(
            p.read_text()[-2000:] for p in state.glob("*.log"))
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{ports['S3_PORT']}"
        yield {"env": env, "address": f"http://127.0.0.1:{ports['DASHBOARD_PORT']}",
               "metrics": [f"http://127.0.0.1:{metrics + i}/metrics" for i in (1, 2)],
               "state": state, "pids": pids}
    finally:  # also after a failed start: stop whatever did start
        pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
        tree = {proc: name for name, pid in pids.items() for proc in process_tree(pid)}
        stop = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True,
                              text=True, timeout=180)
        assert stop.returncode == 0, stop.stderr
        # Stop returns only when every process it started, and all below them, is gone, and
        # with them every fixed port (a new cluster on the same ports can start at once).
        alive = [f"{name}: {proc.pid}" for proc, name in tree.items() if still_running(proc)]
        assert not alive, f"still running after stop: {alive}"
        ports = subprocess.run(["bash", str(SCRIPT), "check-ports"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert ports.returncode == 0, ports.stderr


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and every process below it; empty if it is gone (a worker may exit meanwhile)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def still_running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (the same process: is_running also compares its start time)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cli(cluster: dict, *args: str, env: dict | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "metagan.cli", *args], env=env or cluster["env"],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def token_headers() -> dict[str, str]:
    from metagan.jobs import auth_token

    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def test_submit_watch_fetch(tmp_path: Path, cluster: dict) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "base": tiny_data("protonet", **{"train.iterations": 2000, "schedule.eval_every": 250,
                                         "schedule.eval_episodes": 32,
                                         "schedule.checkpoint_every": 250}),
        "space": {"optim.lr": {"loguniform": [1e-4, 0.02]}, "model.hidden": {"choice": [8, 16]}},
        "search": {"num_samples": 4, "max_concurrent": 2, "initial_points": 2, "seed": 1},
        "scheduler": {"name": "asha", "grace_period": 500, "reduction_factor": 2},
        "checkpoint": {"keep": 2}}))
    r = cli(cluster, "submit", str(space), "--address", cluster["address"],
            "--storage", "s3://metagan/searches", "--name", "e2e")
    assert r.returncode == 0, r.stderr
    job = re.search(r"submitted job (\S+)", r.stdout).group(1)
    assert cluster["address"] in r.stdout

    seen_metrics = ""
    deadline = time.monotonic() + 600
    state = ""
    while time.monotonic() < deadline:
        r = cli(cluster, "status", job, "--address", cluster["address"], "--json")
        assert r.returncode == 0, r.stderr
        state = json.loads(r.stdout)[0]["status"]
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        if "ray_metagan_val_accuracy" not in seen_metrics:
            seen_metrics = "".join(scrape(u) for u in cluster["metrics"])
        time.sleep(2)
    logs = cli(cluster, "logs", job, "--address", cluster["address"]).stdout
    assert state == "SUCCEEDED", logs[-4000:]
    followed = cli(cluster, "logs", job, "--address", cluster["address"], "--follow", timeout=120)
    assert followed.returncode == 0 and "best trial" in followed.stdout  # ends with the job

    # The dashboard's job API (with the token) knows the job and its experiment.
    req = urllib.request.Request(f"{cluster['address']}/api/jobs/{job}", headers=token_headers())
    with urllib.request.urlopen(req, timeout=10) as resp:
        details = json.loads(resp.read())
    assert details["status"] == "SUCCEEDED" and details["metadata"]["metagan_experiment"] == "e2e"
    # Live trial gauges were exported at a worker node's Prometheus endpoint, tagged by trial.
    m = re.search(r'ray_metagan_val_accuracy\{[^}]*experiment="e2e"[^}]*trial="(\w+)"', seen_metrics)
    assert m, seen_metrics[-2000:]
    assert "ray_metagan_tasks_per_s" in seen_metrics and "ray_metagan_iteration" in seen_metrics

    best = re.search(r"best trial (\w+): val_accuracy = ([0-9.]+)", logs)
    assert best, logs[-3000:]

    # Trials ran on both worker nodes (node ids from Tune's stored results).
    from metagan.report import trial_histories

    env_backup = dict(os.environ)
    os.environ.update({k: cluster["env"][k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                                      "AWS_SECRET_ACCESS_KEY", "AWS_REGION")})
    try:
        _, histories = trial_histories("e2e", "s3://metagan/searches")
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    nodes = {rec["node_id"] for records in histories.values() for rec in records}
    assert len(nodes) == 2, nodes

    # A fresh process with no Ray: the best model loads, adapts to 5-way 1-shot test tasks,
    # and its stored metric is the best the search reported.
    code = """
import json, sys, torch
from metagan import api
from metagan.data import load_splits
from metagan.data.episodes import TaskSampler
model, best = api.load_best_model("e2e", "s3://metagan/searches")
assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
splits = load_splits(model.config.data)
episode = TaskSampler(splits.test, 5, 1, 5, seed=3).sample(40)
acc = model.accuracy(episode).mean().item()
print(json.dumps({"value": best.value, "trial": best.trial, "accuracy": acc,
                  "experiments": api.list_experiments("s3://metagan/searches")}))
"""
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["value"] == pytest.approx(float(best.group(2)), abs=5e-5)
    assert best.group(1) in out["trial"]
    assert out["accuracy"] > 0.35, out  # chance is 0.2
    assert out["experiments"] == ["e2e"]

    # metagan report: a PNG and a table, best first.
    png = tmp_path / "report.png"
    r = cli(cluster, "report", "e2e", "--storage", "s3://metagan/searches", "--out", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert r.stdout.splitlines()[1].startswith(best.group(1))


def test_cluster_and_api_errors(tmp_path: Path, cluster: dict) -> None:
    space = ROOT / "search_spaces" / "demo.yaml"
    with closed_port() as port:
        r = cli(cluster, "submit", str(space), "--address", f"http://127.0.0.1:{port}",
                "--storage", "s3://metagan/x")
    assert r.returncode == 5 and "cannot reach the Ray dashboard" in r.stderr, r.stderr
    r = cli(cluster, "submit", str(space), "--address", cluster["address"],
            "--storage", "s3://missing-bucket/x")
    assert r.returncode == 4 and "bucket 'missing-bucket' does not exist" in r.stderr
    r = cli(cluster, "status", "--address", cluster["address"],
            env={**cluster["env"], "RAY_AUTH_TOKEN": "not-the-token"})
    assert r.returncode == 5 and "refused the token" in r.stderr and "not-the-token" not in r.stderr
    r = cli(cluster, "status", "--address", cluster["address"],
            env={**cluster["env"], "HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")})
    assert r.returncode == 5 and "none was found" in r.stderr
    for command in (["status", "nope"], ["logs", "nope"], ["stop", "nope"]):
        r = cli(cluster, *command, "--address", cluster["address"])
        assert r.returncode == 5 and "job nope: not found" in r.stderr, (command, r.stderr)
    assert "Traceback" not in r.stderr
    # The API: a missing experiment, a bucket without access.
    code = """
from metagan import api
from metagan.config import ConfigError
from metagan.storage import StorageError
for call in (lambda: api.best_result("nope", "s3://metagan/searches"),
             lambda: api.load_best_model("nope", "s3://metagan/searches"),
             lambda: api.list_experiments("s3://metagan/searches")):
    try:
        call()
    except ConfigError as e:
        print("missing:", e)
    except StorageError as e:
        print("denied:", e)
"""
    r = subprocess.run([sys.executable, "-c", code], env=cluster["env"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.stdout.count("missing: no experiment 'nope' in s3://metagan/searches") == 2, (
        r.stdout + r.stderr)
    # A second endpoint that checks credentials (moto with IAM authentication from the first
    # request): our keys are unknown there, so every call is refused.
    from .services import MotoS3

    strict = MotoS3(tmp_path / "strict.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        bad = {**cluster["env"], "AWS_ENDPOINT_URL": strict.url}
        r = subprocess.run([sys.executable, "-c", code], env=bad, capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
    finally:
        strict.stop()
    assert r.stdout.count("denied: storage s3://metagan/searches") == 3, r.stdout + r.stderr
    assert "access denied to bucket 'metagan'" in r.stdout and "Traceback" not in r.stderr


def test_stop_a_running_search(cluster: dict) -> None:
    space = ROOT / "search_spaces" / "demo.yaml"
    r = cli(cluster, "submit", str(space), "--address", cluster["address"],
            "--storage", "s3://metagan/stopped", "--name", "to-stop")
    assert r.returncode == 0, r.stderr
    job = re.search(r"submitted job (\S+)", r.stdout).group(1)
    r = cli(cluster, "stop", job, "--address", cluster["address"])
    assert r.returncode == 0 and "stop requested" in r.stdout, r.stdout + r.stderr
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = cli(cluster, "status", job, "--address", cluster["address"], "--json")
        if json.loads(r.stdout)[0]["status"] == "STOPPED":
            break
        time.sleep(2)
    assert json.loads(r.stdout)[0]["status"] == "STOPPED"


def test_start_refuses_a_held_port_before_starting_anything(tmp_path: Path) -> None:
    """A fixed port in use (another cluster, or one still stopping) is named in one line, and
    nothing is started: no node, no S3, no PID file."""
    state = tmp_path / "state"
    env = {**os.environ, "STATE": str(state), "HEAD_PORT": str(free_port()),
           "DASHBOARD_PORT": str(free_port()), "S3_PORT": str(free_port()),
           "METRICS_PORT": str(free_ports(3)),
           # Apart from the module cluster's fixed ports (24000-26006), which may be up.
           "WORKER_PORT_BASE": "28000",
           "BIN": str(Path(sys.executable).parent)}
    env.pop("RAY_ADDRESS", None)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 28001))
        holder.listen()
        r = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                           text=True, timeout=60)
        held = subprocess.run(["bash", str(SCRIPT), "check-ports"], env=env, capture_output=True,
                              text=True, timeout=60)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == ["port 28001 (WORKER_PORT_BASE+1) is in use: another cluster, or one still "
                     "stopping; stop it or set WORKER_PORT_BASE to free ports"], r.stderr
    assert not list(state.glob("*.pid")) and not list(state.glob("*.log")), sorted(state.glob("*"))
    assert held.returncode != 0 and "port 28001" in held.stderr
    free = subprocess.run(["bash", str(SCRIPT), "check-ports"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert free.returncode == 0 and "every fixed port is free" in free.stdout, free.stderr
