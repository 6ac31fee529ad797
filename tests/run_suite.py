"""The whole suite as two pytest processes side by side: what starts Ray or S3, and the rest.

Run alone, the suite leaves one of the two cores idle most of the time (CLI start-ups, Ray
and S3 waits, single-thread torch). The tests that start Ray or S3 (markers `ray`, `s3`)
stay in one process, one after another as before, because their trials use both cores; the
others run beside them, at the lowest CPU priority: Ray runs trial actors at niceness 15, so
at equal priority the other tests would starve the trials (the cluster test took 565 s instead
of 90 s), while these tests only fill the time the services part leaves idle. Both use one
torch thread: two processes with two intra-op threads each on two cores wait on each other's
threads.

Usage: python tests/run_suite.py [extra pytest args, given to both parts]. Exit status: 0 only
if both parts pass; a part that collects nothing fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Part -> (marker expression, niceness). The expressions are complementary: every collected
# test runs in exactly one part.
PARTS = {"services": ("ray or s3", 0), "core": ("not (ray or s3)", 19)}


def part_command(marks: str, basetemp: Path, extra: list[str]) -> list[str]:
    """The pytest command line of one part."""
    return [sys.executable, "-m", "pytest", "-q", "-rs", "--durations=15", "-p", "no:cacheprovider",
            "--basetemp", str(basetemp), "-m", marks, *extra]


class Terminated(KeyboardInterrupt):
    """SIGTERM: ends the run as Ctrl-C does (both parts tear down what they started)."""


def interrupted(signum: int, frame: object) -> None:
    """Turn SIGTERM into an exception the run loop handles."""
    raise Terminated


def main(extra: list[str]) -> int:
    """Run both parts at once; print each part's output when it ends; 0 if both passed."""
    signal.signal(signal.SIGTERM, interrupted)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    scratch = Path(tempfile.mkdtemp(prefix="metagan-suite-"))
    procs: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    try:
        for name, (marks, niceness) in PARTS.items():
            log = scratch / f"{name}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(["nice", "-n", str(niceness),
                                         *part_command(marks, scratch / name, extra)], cwd=ROOT,
                                        env=env, stdout=out, stderr=subprocess.STDOUT)
            procs[name] = (proc, log, time.monotonic())
        print(f"running parts {', '.join(PARTS)} side by side; live output: {scratch}/*.log",
              flush=True)
        failed = []
        pending = dict(procs)
        while pending:
            for name, (proc, log, start) in list(pending.items()):
                if proc.poll() is None:
                    continue
                del pending[name]
                print(f"===== part '{name}' (-m '{PARTS[name][0]}'): exit {proc.returncode} "
                      f"after {time.monotonic() - start:.0f} s =====", flush=True)
                sys.stdout.write(log.read_text(errors="replace"))
                sys.stdout.flush()
                if proc.returncode != 0:  # 5 (nothing collected) is a failure too
                    failed.append(name)
            time.sleep(0.5)
    except KeyboardInterrupt as stop:
        # pytest tears down on SIGINT: the Ray and S3 it started are stopped by their PIDs.
        # Ctrl-C already reached the parts (same process group); a second SIGINT would cut
        # their teardown short, so only SIGTERM is passed on.
        if isinstance(stop, Terminated):
            for proc, _, _ in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        for proc, _, _ in procs.values():
            proc.wait()
        return 130
    finally:
        if all(p.poll() is not None for p, _, _ in procs.values()):
            shutil.rmtree(scratch, ignore_errors=True)
    if failed:
        print(f"FAILED parts: {', '.join(failed)}", flush=True)
        return 1
    print("both parts passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
