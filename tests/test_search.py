"""The search platform end to end: Ray Tune on a local Ray, results in a real S3 endpoint.

Each test drives `metagan search` as a user would (a CLI process that joins the session's
Ray), and reads what landed in the bucket with boto3.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, S3_SECRET, started_by_this_ray, tiny_data

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.s3]


def write_space(path: Path, *, iterations: int = 40, samples: int = 4, scheduler: str = "asha",
                keep: int = 2, step: int = 10, checkpoint_every: int | None = None,
                **sections: Any) -> Path:
    """A tiny search: ProtoNet on the bundled data, seconds per trial; a report (and by default
    a checkpoint) every `step` meta-iterations."""
    data = {
        "base": tiny_data("protonet", **{
            "train.iterations": iterations, "schedule.eval_every": step,
            "schedule.eval_episodes": 16, "schedule.checkpoint_every": checkpoint_every or step}),
        "space": {"optim.lr": {"loguniform": [1e-5, 0.05]}, "model.hidden": {"choice": [8, 16]}},
        "search": {"algorithm": "hyperopt", "num_samples": samples, "max_concurrent": 2,
                   "initial_points": 2, "seed": 0},
        "scheduler": {"name": scheduler, "grace_period": 10, "reduction_factor": 2},
        "checkpoint": {"keep": keep},
        "failure": {"max_retries": 2},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    return path


def search_cmd(space: Path, name: str, address: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "metagan.cli", "search", str(space), "--name", name,
            "--storage", f"s3://metagan/{name}-root", "--address", address, "--quiet", *extra]


def keys(s3: dict, prefix: str) -> list[str]:
    """Every object key under a prefix."""
    pages = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def read(s3: dict, key: str) -> bytes:
    return s3["client"].get_object(Bucket=s3["bucket"], Key=key)["Body"].read()


def trials(s3: dict, experiment: str) -> dict[str, dict[str, Any]]:
    """Per trial directory: its result records and its checkpoint directories with files."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"results": [], "checkpoints": defaultdict(set),
                                                          "files": set()})
    for key in keys(s3, experiment + "/"):
        parts = key[len(experiment) + 1:].split("/")
        if len(parts) < 2 or not parts[0].startswith("EpisodeTrainable"):
            continue
        t = out[parts[0]]
        if parts[1].startswith("checkpoint_"):
            t["checkpoints"][parts[1]].add("/".join(parts[2:]))
        else:
            t["files"].add(parts[1])
        if parts[1] == "result.json":
            t["results"] = [json.loads(line) for line in read(s3, key).decode().splitlines() if line]
    return dict(out)


def test_s3_search_hyperopt_asha(tmp_path: Path, s3: dict, ray_cluster: str) -> None:
    """4 trials, TPE + ASHA: everything in the bucket, an early stop, the right best trial."""
    space = write_space(tmp_path / "space.yaml")
    r = subprocess.run(search_cmd(space, "asha", ray_cluster, "--json", str(tmp_path / "r.json")),
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    experiment = "asha-root/asha"
    found = trials(s3, experiment)
    assert len(found) == 4
    for name, t in found.items():
        assert {"result.json", "progress.csv", "params.json"} <= t["files"], name
        assert any(f.startswith("events.out.tfevents") for f in t["files"]), name
        assert t["checkpoints"], name
        for files in t["checkpoints"].values():
            assert {"state.pt", "config.yaml", "metrics.json", "params.json"} <= files
    assert f"{experiment}/metagan_space.yaml" in keys(s3, experiment)
    last = {name: t["results"][-1]["iteration"] for name, t in found.items()}
    assert min(last.values()) < 40 <= max(last.values()), last  # ASHA stopped someone early
    best = max(rec["val_accuracy"] for t in found.values() for rec in t["results"])
    m = re.search(r"best trial (\w+): val_accuracy = ([0-9.]+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(2)) == pytest.approx(best, abs=5e-5)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["best_value"] == pytest.approx(best)
    # The same name again is refused before anything is written.
    before = {k: read(s3, k) for k in keys(s3, experiment) if k.endswith(".yaml")}
    again = subprocess.run(search_cmd(space, "asha", ray_cluster), capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
    assert again.returncode == 2 and "already exists" in again.stderr and "--resume asha" in again.stderr
    assert {k: read(s3, k) for k in keys(s3, experiment) if k.endswith(".yaml")} == before
    winner = [t for t in found.values() if any(rec["val_accuracy"] == best for rec in t["results"])]
    assert winner[0]["results"][0]["trial_id"] == m.group(1)
    # The best checkpoint is in the bucket, loads safely, and holds the winner's config.
    ckpt = result["best_checkpoint"]
    assert ckpt.startswith("s3://metagan/asha-root/asha/")
    body = read(s3, ckpt[len("s3://metagan/"):] + "/state.pt")
    import io

    import torch

    state = torch.load(io.BytesIO(body), weights_only=True)
    assert state["iteration"] > 0
    # No credential in anything stored or printed.
    assert S3_SECRET not in r.stdout + r.stderr
    for key in keys(s3, experiment):
        if not key.endswith(".pt"):
            assert S3_SECRET.encode() not in read(s3, key), key
    # A damaged line in one trial's result.json is named; the report covers the others.
    damaged = sorted(found)[0]
    key = f"{experiment}/{damaged}/result.json"
    lines = read(s3, key).decode().splitlines()
    s3["client"].put_object(Bucket=s3["bucket"], Key=key,
                            Body=("\n".join([lines[0], "{garbage", *lines[1:]]) + "\n").encode())
    report = subprocess.run([sys.executable, "-m", "metagan.cli", "report", "asha", "--storage",
                             "s3://metagan/asha-root", "--out", str(tmp_path / "report.png")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert report.returncode == 0, report.stderr[-2000:]
    assert f"{damaged}/result.json: line 2 is damaged" in report.stderr
    assert "Traceback" not in report.stderr and (tmp_path / "report.png").stat().st_size > 0
    rows = [line for line in report.stdout.splitlines()[1:] if not line.startswith("wrote ")]
    assert len(rows) == 3, report.stdout  # the other three trials


def stored_metrics(s3: dict, experiment: str) -> dict[str, dict[str, Any]]:
    """Every stored checkpoint directory's metrics.json (read with boto3, not the store)."""
    return {key.rsplit("/", 1)[0]: json.loads(read(s3, key)) for key in keys(s3, experiment + "/")
            if re.search(r"/checkpoint_\d+/metrics\.json$", key)}


def test_summary_api_and_report_agree_when_checkpoints_are_sparser_than_reports(
        tmp_path: Path, s3: dict, ray_cluster: str) -> None:
    """Reports every 10 meta-iterations, checkpoints every 20: a best report may have no
    checkpoint. The printed best, the API and `metagan report` name the same stored checkpoint."""
    space = write_space(tmp_path / "space.yaml", iterations=60, samples=2, scheduler="none",
                        keep=10, checkpoint_every=20)
    out = tmp_path / "r.json"
    r = subprocess.run(search_cmd(space, "agree", ray_cluster, "--json", str(out)),
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    experiment = "agree-root/agree"
    found = trials(s3, experiment)
    assert len(found) == 2
    stored = stored_metrics(s3, experiment)
    assert {m["iteration"] for m in stored.values()} == {20, 40, 60}  # half the reports
    assert all(len(t["results"]) == 6 for t in found.values())
    m = re.search(r"best trial (\w+): val_accuracy = ([0-9.]+)", r.stdout)
    assert m, r.stdout
    printed_trial, printed = m.group(1), float(m.group(2))
    result = json.loads(out.read_text())
    ckpt = result["best_checkpoint"]
    assert result["best_trial"] == printed_trial
    assert result["best_value"] == pytest.approx(printed, abs=5e-5)
    # That checkpoint holds the printed value, and no stored checkpoint holds a better one.
    held = stored[ckpt[len("s3://metagan/"):]]
    assert held["val_accuracy"] == result["best_value"] == max(s["val_accuracy"] for s in stored.values())
    best_report = max(rec["val_accuracy"] for t in found.values() for rec in t["results"])
    assert result["best_reported"] == best_report >= result["best_value"]
    assert ("best reported:" in r.stdout) == (best_report > result["best_value"]), r.stdout
    # The checkpoint is in the printed trial's directory.
    (trial_dir,) = [n for n, t in found.items() if t["results"][0]["trial_id"] == printed_trial]
    assert ckpt.startswith(f"s3://metagan/{experiment}/{trial_dir}/checkpoint_")
    # The API (no Ray) names the same trial and checkpoint.
    from metagan import api
    from metagan.report import write_report

    best = api.best_result("agree", "s3://metagan/agree-root")
    assert (best.trial_id, best.trial, best.checkpoint, best.value) == (
        printed_trial, trial_dir, ckpt, result["best_value"])
    # metagan report: its top row is that trial, with that checkpoint's value.
    report = subprocess.run([sys.executable, "-m", "metagan.cli", "report", "agree", "--storage",
                             "s3://metagan/agree-root", "--out", str(tmp_path / "report.png")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert report.returncode == 0, report.stderr[-2000:]
    top = report.stdout.splitlines()[1].split()
    assert top[0] == printed_trial and float(top[1]) == pytest.approx(printed, abs=5e-5), report.stdout
    _, rows = write_report("agree", "s3://metagan/agree-root", tmp_path / "again.png")
    assert (rows[0]["trial"], rows[0]["checkpoint"], rows[0]["best"]) == (
        printed_trial, ckpt, result["best_value"])


def test_a_confirmed_search_answers_with_its_rescored_winner(
        tmp_path: Path, s3: dict, ray_cluster: str) -> None:
    """search.confirm_top: the two trials are re-scored on 48 meta-val tasks after the search;
    the record is stored beside the trials, and the summary and the API name its winner."""
    space = write_space(tmp_path / "space.yaml", iterations=20, samples=2, scheduler="none",
                        search={"confirm_top": 2, "confirm_episodes": 48})
    out = tmp_path / "r.json"
    r = subprocess.run(search_cmd(space, "confirmed", ray_cluster, "--json", str(out)),
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    stored = json.loads(read(s3, "confirmed-root/confirmed/confirmed.json"))
    assert stored["episodes"] == 48 and len(stored["candidates"]) == 2
    winner = max(stored["candidates"], key=lambda c: c["confirmed"])
    assert stored["best"] == winner["key"]
    assert winner["checkpoint"] == f"s3://metagan/confirmed-root/confirmed/{winner['key']}"
    result = json.loads(out.read_text())
    assert result["best_checkpoint"] == winner["checkpoint"]
    assert result["confirmed"]["best"]["confirmed"] == winner["confirmed"]
    assert "chosen on 48 meta-val tasks among the 2 best trials" in r.stdout, r.stdout
    from metagan import api

    best = api.best_result("confirmed", "s3://metagan/confirmed-root")
    assert (best.checkpoint, best.confirmed, best.confirmed_episodes) == (
        winner["checkpoint"], winner["confirmed"], 48)
    # The re-scoring is the same measurement as loading the checkpoint and evaluating it.
    loop = api.load_best_model("confirmed", "s3://metagan/confirmed-root")[0].loop
    assert loop.evaluate("val", 48)["accuracy"] == pytest.approx(winner["confirmed"])


def test_keep_base_finds_the_base_trial_and_answers_by_the_paired_rule(
        tmp_path: Path, s3: dict, ray_cluster: str) -> None:
    """search.keep_base: the trial Ray ran for the base config is found by its sampled values
    and re-scored beside the top trial; the answer is the candidate only if its paired
    difference from the base, measured here again from the two checkpoints, is above zero."""
    space = write_space(tmp_path / "space.yaml", iterations=20, samples=3, scheduler="none",
                        search={"confirm_top": 1, "confirm_episodes": 48, "keep_base": True})
    out = tmp_path / "r.json"
    r = subprocess.run(search_cmd(space, "kept", ray_cluster, "--json", str(out)),
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    stored = json.loads(read(s3, "kept-root/kept/confirmed.json"))
    base, (top,) = stored["base"], stored["candidates"]
    base_point = {"optim.lr": 0.001, "model.hidden": 8}  # tiny_data's values
    assert json.loads(read(s3, f"kept-root/kept/{base['key']}/params.json")) == base_point
    config = yaml.safe_load(read(s3, f"kept-root/kept/{base['key']}/config.yaml"))
    assert (config["optim"]["lr"], config["model"]["hidden"]) == (0.001, 8)
    from metagan import api
    from metagan.results import Experiment
    from metagan.run import load_loop

    found = Experiment.open("s3://metagan/kept-root", "kept")
    per_task = {}
    for c in (base, top):
        per_task[c["key"]] = load_loop(found.download(c["checkpoint"], tmp_path / c["trial"])
                                       ).task_accuracies("val", 48)
    diff = per_task[top["key"]] - per_task[base["key"]]
    mean, half = diff.mean().item(), 1.96 * diff.std().item() / 48 ** 0.5
    assert top["vs_base"]["diff"] == pytest.approx(mean, abs=1e-6)
    beaten = top["key"] != base["key"] and mean - half > 0
    assert stored["best"] == (top if beaten else base)["key"]
    result = json.loads(out.read_text())
    assert result["best_checkpoint"] == (top if beaten else base)["checkpoint"]
    assert api.best_result("kept", "s3://metagan/kept-root").checkpoint == result["best_checkpoint"]
    assert f"the base config's trial {base['trial_id']}" in r.stdout, r.stdout
    for c in (base, top):  # every stored checkpoint of the trial re-scored; the latest stands
        stored_keys = {k[len("kept-root/kept/"):].rsplit("/", 1)[0]  # for it unless beaten
                       for k in keys(s3, f"kept-root/kept/{c['trial']}/")
                       if k.endswith("/metrics.json")}
        assert {k["key"] for k in c["checkpoints"]} == stored_keys and len(stored_keys) >= 2
        latest = max(c["checkpoints"], key=lambda k: k["iteration"])
        beaten = [k for k in c["checkpoints"] if k["vs_latest"]["diff"] - k["vs_latest"]["ci95"] > 0]
        assert c["key"] == max(beaten, key=lambda k: k["confirmed"], default=latest)["key"]


def test_unreachable_or_missing_bucket_fails_before_any_trial(tmp_path: Path, s3: dict) -> None:
    space = write_space(tmp_path / "space.yaml")
    from .services import closed_port

    start = time.monotonic()
    with closed_port() as port:
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        r = subprocess.run([sys.executable, "-m", "metagan.cli", "search", str(space),
                            "--storage", "s3://metagan/x"], env=env, capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 4, r.stderr
    assert "endpoint unreachable" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - start < 60
    r = subprocess.run([sys.executable, "-m", "metagan.cli", "search", str(space),
                        "--storage", "s3://no-such-bucket/x"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 4 and "bucket 'no-such-bucket' does not exist" in r.stderr, r.stderr
    assert "Started a local Ray" not in r.stderr + r.stdout
    assert not keys(s3, "x/")


def stored_status(s3: dict, experiment: str) -> dict[str, str]:
    """Trial id -> status in the newest experiment state Tune stored."""
    states = sorted(k for k in keys(s3, experiment + "/") if re.search(r"/experiment_state-[^/]*\.json$", k))
    if not states:
        return {}
    data = json.loads(read(s3, states[-1]))
    infos = [json.loads(t[0]) if isinstance(t[0], str) else t[0] for t in data["trial_data"]]
    return {info["trial_id"]: info["status"] for info in infos}


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"search ended before {what}: rc {proc.returncode}\n{err[-3000:]}")
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def test_resume_after_the_driver_is_killed(tmp_path: Path, s3: dict, ray_cluster: str) -> None:
    """Completed trials are not re-run; interrupted ones continue from their last checkpoint.

    Two trials of different lengths (train.iterations is searched): the short one finishes while
    the long one is surely mid-run. Which is which is read from the experiment state Tune stored
    last before the kill, which is exactly what --resume reads (Tune snapshots it about every
    10 s, so a trial may have finished or checkpointed since). Checkpoints are ranked by score
    with keep=3, so the checkpoint a snapshot names may have been rotated out by the time the
    driver dies: the resumed trial must then continue from its newest stored checkpoint.
    """
    step, lengths = 20, (40, 1000)
    space = write_space(tmp_path / "space.yaml", iterations=max(lengths), samples=1,
                        scheduler="none", keep=3, step=step, search={"algorithm": "grid"})
    data = yaml.safe_load(space.read_text())
    data["space"] = {"train.iterations": {"grid": list(lengths)}, "model.hidden": {"grid": [8]}}
    space.write_text(yaml.safe_dump(data))
    experiment = "resume-root/resume"
    proc = subprocess.Popen(search_cmd(space, "resume", ray_cluster), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def one_done_one_checkpointed():
        status = stored_status(s3, experiment)
        found = trials(s3, experiment)
        ids = {n: t["results"][0]["trial_id"] for n, t in found.items() if t["results"]}
        done = [n for n, i in ids.items() if status.get(i) == "TERMINATED"]
        checkpointed = [n for n, i in ids.items() if status.get(i) == "RUNNING"
                        and len(found[n]["checkpoints"]) >= 2]
        return found if done and checkpointed else None

    _wait(one_done_one_checkpointed, 400, "a finished and a checkpointed trial", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = stored_status(s3, experiment)  # what --resume will read
    before = trials(s3, experiment)
    ids = {n: t["results"][0]["trial_id"] for n, t in before.items() if t["results"]}
    done = [n for n, i in ids.items() if status.get(i) == "TERMINATED"]
    running = [n for n, i in ids.items() if status.get(i) == "RUNNING"]
    assert done and running, (status, {n: len(t["results"]) for n, t in before.items()})
    r = subprocess.run([sys.executable, "-m", "metagan.cli", "search", "--resume", "resume",
                        "--storage", "s3://metagan/resume-root", "--address", ray_cluster, "--quiet",
                        "--json", str(tmp_path / "resumed.json")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert all(t["error"] is None for t in resumed["trials"]), resumed["trials"]
    after = trials(s3, experiment)
    assert len(after) == 2
    for name in done:  # finished before the kill: not a single new record
        assert after[name]["results"] == before[name]["results"]
    for name in running:
        records = after[name]["results"]
        # Records go on past the restore; the first one after it continues from a checkpoint
        # past the start (not from scratch).
        restarts = [rec for rec in records[1:] if rec["iterations_since_restore"] == 1]
        assert restarts, [rec["iteration"] for rec in records]
        assert restarts[0]["iteration"] > step
    for name, t in after.items():
        params = json.loads(read(s3, f"{experiment}/{name}/params.json"))
        length = params.get("train.iterations") or params["grid"]["train.iterations"]
        assert t["results"][-1]["iteration"] == length and t["results"][-1]["done"], name
        assert t["checkpoints"], name


def test_a_killed_trial_actor_restarts_from_its_checkpoint(tmp_path: Path, s3: dict,
                                                           ray_cluster: str) -> None:
    import psutil

    # About a second a report (a tiny step takes ~10 ms here): the actor is surely alive when
    # it has two checkpoints, and has most of its 1200 iterations still to run.
    space = write_space(tmp_path / "space.yaml", iterations=1200, step=100, samples=1,
                        scheduler="none")
    experiment = "kill-root/kill"
    out = tmp_path / "r.json"
    proc = subprocess.Popen(search_cmd(space, "kill", ray_cluster, "--json", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def actor_with_checkpoint():
        found = trials(s3, experiment)
        if not any(len(t["checkpoints"]) >= 2 for t in found.values()):
            return None
        # Only this session's trial actors: a search running beside the suite keeps its own.
        procs = [p for p in psutil.process_iter(["cmdline"])
                 if any("EpisodeTrainable" in part for part in p.info["cmdline"] or [])
                 and started_by_this_ray(p)]
        return procs or None

    actors = _wait(actor_with_checkpoint, 300, "a checkpointed trial actor", proc)
    for p in actors:
        p.kill()
    assert proc.poll() is None  # killed mid-run
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    (t,) = trials(s3, experiment).values()
    records = t["results"]
    restarts = [rec for rec in records[1:] if rec["iterations_since_restore"] == 1]
    assert restarts and restarts[0]["iteration"] > 100, [r["iteration"] for r in records]
    assert records[-1]["iteration"] == 1200 and records[-1]["done"]
    result = json.loads(out.read_text())
    assert result["trials"][0]["error"] is None


def _checkpoint_index(name: str) -> int:
    return int(name.split("_")[1])


def test_a_30_s_storage_outage_errors_no_trial_and_loses_no_checkpoint(
        tmp_path: Path, s3: dict, ray_cluster: str) -> None:
    # 12 reports of about a second each: both trials are mid-run when the endpoint goes down
    # (after their second checkpoint), and a trial's next checkpoint upload waits out the
    # outage, so each still has reports to make when the endpoint is back.
    space = write_space(tmp_path / "space.yaml", iterations=1200, step=100, samples=2,
                        scheduler="none", keep=1000)
    experiment = "outage-root/outage"
    out = tmp_path / "r.json"
    proc = subprocess.Popen(search_cmd(space, "outage", ray_cluster, "--json", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    proxy = s3["proxy"]
    try:
        _wait(lambda: len(trials(s3, experiment)) == 2 and all(
            len(t["checkpoints"]) >= 2 for t in trials(s3, experiment).values()), 300,
            "checkpoints of both trials", proc)
        down = time.time()
        proxy.block()
        time.sleep(30)
    finally:
        proxy.unblock()
    up = time.time()
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(out.read_text())
    assert all(t["error"] is None for t in result["trials"]), result["trials"]
    found = trials(s3, experiment)
    assert len(found) == 2
    waited = []
    for name, t in found.items():
        records = t["results"]
        assert records[-1]["iteration"] == 1200 and records[-1]["done"], name
        # No trial failed even once (Tune would retry it from a checkpoint and repeat reports).
        iterations = [rec["iteration"] for rec in records]
        failures = [read(s3, f"{experiment}/{name}/{f}").decode()[-3000:]
                    for f in sorted(t["files"]) if f.startswith("error") and f.endswith(".txt")]
        assert len(set(iterations)) == len(iterations) and not failures, (
            name, iterations, failures, stderr[-3000:])
        stamps = [rec["timestamp"] for rec in records]  # whole seconds
        assert stamps[0] <= down and stamps[-1] >= up, name  # the trial spanned the outage
        waited.append(max(b - a for a, b in zip(stamps, stamps[1:])))
        # Every report checkpointed (schedule.checkpoint_every = eval_every), none missing.
        indices = sorted(_checkpoint_index(c) for c in t["checkpoints"])
        assert indices == list(range(len(records))), (name, indices, len(records))
        assert all("state.pt" in files for files in t["checkpoints"].values())
    # A report takes about a second; a gap of 20 s or more is a checkpoint upload that waited
    # for the endpoint (and then succeeded: every checkpoint is there).
    assert max(waited) >= 20, waited


def test_a_permanent_outage_ends_the_search_and_keeps_what_was_stored(
        tmp_path: Path, s3: dict, ray_cluster: str) -> None:
    space = write_space(tmp_path / "space.yaml", iterations=3000, step=100, samples=2,
                        scheduler="none", storage={"outage_s": 10})
    experiment = "down-root/down"
    proc = subprocess.Popen(search_cmd(space, "down", ray_cluster), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    proxy = s3["proxy"]
    try:
        _wait(lambda: any(len(t["checkpoints"]) >= 2 for t in trials(s3, experiment).values()), 300,
              "a checkpoint", proc)
        stored = keys(s3, experiment)
        proxy.block()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proxy.unblock()
    assert proc.returncode == 4, stderr[-3000:]
    assert "unreachable for more than 10 s" in stderr and "--resume" in stderr
    # Everything stored before the outage is still there and readable.
    import io

    import torch

    now = set(keys(s3, experiment))
    checkpoints = [k for k in stored if k.endswith("state.pt")]
    assert checkpoints
    for key in checkpoints:
        if key in now:  # (num_to_keep may have rotated an old one out before the outage)
            assert torch.load(io.BytesIO(read(s3, key)), weights_only=True)["iteration"] > 0
    assert f"{experiment}/metagan_space.yaml" in now


@pytest.mark.parametrize("algorithm, scheduler", [("grid", "median"), ("random", "pbt")])
def test_other_search_algorithms_and_schedulers(tmp_path: Path, s3: dict, ray_cluster: str,
                                                algorithm: str, scheduler: str) -> None:
    """Grid search with median stopping, random search with population-based training."""
    lr = {"grid": [0.001, 0.01]} if algorithm == "grid" else {"loguniform": [0.001, 0.01]}
    hidden = {"grid": [8]} if algorithm == "grid" else {"choice": [8, 16]}
    space = write_space(tmp_path / "space.yaml", iterations=30, samples=2, scheduler=scheduler,
                        keep=3, search={"algorithm": algorithm})
    data = yaml.safe_load(space.read_text())
    data["space"] = {"optim.lr": lr, "model.hidden": hidden}
    data["scheduler"]["perturbation_interval"] = 10
    space.write_text(yaml.safe_dump(data))
    name = f"{algorithm}-{scheduler}"
    out = tmp_path / "r.json"
    r = subprocess.run(search_cmd(space, name, ray_cluster, "--json", str(out)),
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    trials_run = result["trials"]
    assert len(trials_run) == (4 if algorithm == "grid" else 2)  # grid: 2 points x 2 samples
    if algorithm == "grid":
        assert sorted({t["params"]["optim.lr"] for t in trials_run}) == [0.001, 0.01]
        # The two repeats of each point are different runs: their own seeds, recorded.
        assert sorted((t["params"]["optim.lr"], t["params"]["train.seed"]) for t in trials_run) == [
            (0.001, 0), (0.001, 1), (0.01, 0), (0.01, 1)]
    assert all(t["error"] is None for t in trials_run)
    # The best is the best stored checkpoint (PBT keeps each trial's newest `keep`, so a better
    # report's checkpoint may be gone): never above the best report, and held by its metrics.json.
    stored = stored_metrics(s3, f"{name}-root/{name}")
    assert result["best_value"] == max(m["val_accuracy"] for m in stored.values())
    assert result["best_value"] <= max(t["best"] for t in trials_run)
    assert stored[result["best_checkpoint"][len("s3://metagan/"):]]["val_accuracy"] == result["best_value"]


def test_a_trial_no_node_can_run_is_refused_not_left_pending(tmp_path: Path, s3: dict,
                                                             ray_cluster: str) -> None:
    space = write_space(tmp_path / "space.yaml", resources={"gpu": 1})  # the test Ray has none
    r = subprocess.run(search_cmd(space, "gpu", ray_cluster), capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 5, r.stderr[-2000:]
    assert "largest node of the cluster has 2 CPU and 0 GPU" in r.stderr
    assert "Traceback" not in r.stderr  # (and it ended: pending forever would hit the timeout)
    assert not [k for k in keys(s3, "gpu-root/gpu/") if "EpisodeTrainable" in k]


def test_a_relative_data_root_runs_every_trial(tmp_path: Path, s3: dict, ray_cluster: str,
                                               image_folder: Path) -> None:
    """Tune runs trials in directories of their own: the driver makes data paths absolute."""
    space = write_space(tmp_path / "space.yaml", iterations=10, samples=2, scheduler="none",
                        step=5)
    data = yaml.safe_load(space.read_text())
    data["base"]["data"] = {"source": "folder", "root": image_folder.name, "rotations": False,
                            "val_groups": 2, "test_groups": 2}
    space.write_text(yaml.safe_dump(data))
    # 5-way tasks cannot come from 2 meta-val classes: refused before Ray, not in every trial.
    r = subprocess.run(search_cmd(space, "relative", ray_cluster), capture_output=True,
                       text=True, timeout=300, cwd=image_folder.parent)
    assert r.returncode == 2 and "task.ways: 5-way tasks need 5 classes but meta-val has 2" in \
        r.stderr, r.stderr[-2000:]
    data["base"]["task"]["ways"] = 2
    space.write_text(yaml.safe_dump(data))
    out = tmp_path / "r.json"
    r = subprocess.run(search_cmd(space, "relative", ray_cluster, "--json", str(out)),
                       capture_output=True, text=True, timeout=600, cwd=image_folder.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["trials"]) == 2
    assert all(t["error"] is None and t["iteration"] == 10 for t in result["trials"]), result


def test_trials_of_one_pretraining_key_share_one_stored_gan(tmp_path: Path, s3: dict,
                                                            ray_cluster: str) -> None:
    """DAGAN trials that differ only in keys outside the pre-training key (the fakes' weight,
    the learning rate) share one stored G: the first to need it trains and stores it under a
    lock, the others load it, and so does a later search."""
    cache = tmp_path / "cache"
    space = write_space(tmp_path / "space.yaml", iterations=4, samples=3, scheduler="none",
                        step=2)
    data = yaml.safe_load(space.read_text())
    data["base"]["method"] = "dagan"
    data["base"]["gan"] = {"augment": 1, "pretrain_steps": 2, "critic_steps": 2, "width": 8,
                           "z_dim": 8}
    data["base"]["data"] = {"cache_dir": str(cache)}
    data["space"] = {"gan.fake_weight": {"choice": [0.5, 1.0]},
                     "optim.lr": {"loguniform": [1e-4, 1e-2]}}
    space.write_text(yaml.safe_dump(data))
    runs = []
    for name in ("shared-gan", "shared-gan-again"):
        out = tmp_path / f"{name}.json"
        r = subprocess.run(search_cmd(space, name, ray_cluster, "--json", str(out)),
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        result = json.loads(out.read_text())
        assert len(result["trials"]) == 3
        assert all(t["error"] is None and t["iteration"] == 4 for t in result["trials"]), result
        assert len({json.dumps(t["params"], sort_keys=True) for t in result["trials"]}) > 1
        stored = sorted((cache / "dagan").glob("*.pt"))
        runs.append([(p.name, p.stat().st_mtime_ns) for p in stored])
    assert len(runs[0]) == 1, runs  # one key, one pre-training
    assert runs[1] == runs[0]  # the later search loaded it: the file was not written again


def test_the_best_model_of_a_search_classifies_your_files_without_the_data(
        tmp_path: Path, s3: dict, ray_cluster: str, omniglot_folder: Path) -> None:
    """A search trains on a character folder that is then gone; in a fresh process with no Ray,
    the best model loads from the bucket and classifies 5-way 1-shot tasks of unseen
    (meta-val) characters given as image files, above 80%; `metagan predict` agrees."""
    data_copy = tmp_path / "train-data"
    shutil.copytree(omniglot_folder, data_copy)
    space = write_space(tmp_path / "space.yaml", iterations=600, samples=1, scheduler="none",
                        step=300)
    data = yaml.safe_load(space.read_text())
    data["base"]["data"] = {"source": "folder", "root": str(data_copy), "rotations": True,
                            "val_groups": 20, "test_groups": 20}
    data["base"]["task"] = {"ways": 20, "shots": 1, "queries": 5, "meta_batch": 2,
                            "eval_ways": 5}
    data["base"]["model"] = {"hidden": 32, "depth": 4}
    data["base"]["optim"] = {"name": "adam", "lr": 0.002}
    data["base"]["schedule"]["eval_episodes"] = 100
    data["space"] = {"optim.lr": {"grid": [0.002, 0.001]}}
    data["search"] = {"algorithm": "grid", "max_concurrent": 2, "seed": 0}
    space.write_text(yaml.safe_dump(data))
    r = subprocess.run(search_cmd(space, "predict", ray_cluster), capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.rmtree(data_copy)
    storage = "s3://metagan/predict-root"
    check = """
import json, random, sys
from pathlib import Path
from metagan import api
from metagan.data.images import split_groups
model, best = api.load_best_model("predict", sys.argv[1])
assert "ray" not in sys.modules
chars = Path(sys.argv[2])
d = model.config.data
# The run's meta-val characters: the split is a pure function of the class folders and seed.
groups = split_groups(sorted(p.name for p in chars.iterdir()), d.val_groups, d.test_groups,
                      d.split_seed)
rng = random.Random(0)
hits = total = 0
for _ in range(40):
    names = rng.sample(groups["val"], 5)
    support, queries, truth = [], [], []
    for n in names:
        s, *q = rng.sample(sorted((chars / n).glob("*.png")), 4)
        support.append(s); queries += q; truth += [n] * 3
    labels = model.predict(support, names, queries).labels
    hits += sum(a == b for a, b in zip(labels, truth)); total += len(truth)
print(json.dumps({"accuracy": hits / total, "val": groups["val"]}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    fresh = subprocess.run([sys.executable, "-c", check, storage, str(omniglot_folder)],
                           env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    out = json.loads(fresh.stdout.strip().splitlines()[-1])
    print(f"predict: {out['accuracy']:.4f} of 120 meta-val queries")  # shown with pytest -s
    assert out["accuracy"] > 0.8, out
    # The CLI on the downloaded best checkpoint: a 5-way 1-shot task as folders.
    from metagan import api

    ckpt = api.download_checkpoint("predict", storage, tmp_path / "best")
    names = out["val"][:5]
    support, query = tmp_path / "support", tmp_path / "query"
    query.mkdir()
    for n in names:
        files = sorted((omniglot_folder / n).glob("*.png"))
        (support / n).mkdir(parents=True)
        shutil.copy(files[0], support / n / "0.png")
        for f in files[1:6]:
            shutil.copy(f, query / f"{n}--{f.name}")
    csv_path = tmp_path / "p.csv"
    r = subprocess.run([sys.executable, "-m", "metagan.cli", "predict", str(ckpt), "--support",
                        str(support), "--query", str(query), "--out", str(csv_path)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 25
    assert sum(row["label"] == row["file"].split("--")[0] for row in rows) / 25 > 0.6, rows


def test_an_s3_data_root_is_fetched_by_every_trial(tmp_path: Path, s3: dict, ray_cluster: str,
                                                   image_folder: Path) -> None:
    """A dataset root in the bucket: the driver checks it before Ray, every trial reads it
    from its node's cache; an empty prefix is one line on the driver, before any trial."""
    for path in sorted(image_folder.rglob("*.png")):
        s3["client"].upload_file(str(path), s3["bucket"],
                                 f"datasets/search/{path.relative_to(image_folder).as_posix()}")
    space = write_space(tmp_path / "space.yaml", iterations=10, samples=2, scheduler="none",
                        step=5)
    data = yaml.safe_load(space.read_text())
    data["base"]["data"] = {"source": "folder", "root": "s3://metagan/datasets/search",
                            "rotations": False, "val_groups": 2, "test_groups": 2}
    data["base"]["task"]["ways"] = 2
    space.write_text(yaml.safe_dump(data))
    out = tmp_path / "r.json"
    r = subprocess.run(search_cmd(space, "s3data", ray_cluster, "--json", str(out)),
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["trials"]) == 2
    assert all(t["error"] is None and t["iteration"] == 10 for t in result["trials"]), result
    data["base"]["data"]["root"] = "s3://metagan/datasets/none-here"
    space.write_text(yaml.safe_dump(data))
    r = subprocess.run(search_cmd(space, "s3data-empty", ray_cluster), capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and "none-here" in r.stderr and "no objects under this prefix" in \
        r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not keys(s3, "s3data-empty-root")  # nothing stored for the refused search
