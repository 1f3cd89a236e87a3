"""Smoke of scripts/replica_bench.py: two replicas sharing Postgres, Redis and a Chroma server
start, drain, resume after a SIGKILL and carry concurrent streams, and every line says so.

Runs the real script with few streams; the timings are for the benchmark, not this test."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_replica_bench_drains_resumes_and_streams(postgres_url: str, redis_url: str) -> None:
    command = [sys.executable, "-m", "scripts.replica_bench"]
    command += ["--database-url", postgres_url, "--redis-url", redis_url]
    command += ["--drain-streams", "4", "--kill-streams", "2", "--load-streams", "10"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    drain, kill, load = done.stdout.strip().splitlines()[-3:]
    assert re.fullmatch(
        r"SIGTERM drain: \d+\.\d\d s with 4 streams; 4/4 finished clean \(no gap, no duplicate\); "
        r"model calls per call site: max 1, 4 sites; errors 0",
        drain,
    ), drain
    assert re.fullmatch(
        r"SIGKILL: 2/2 runs resumed on the other replica, slowest after \d+\.\d\d s; 2/2 clean; "
        r"slow live run \(node > lease\) model calls: \[1\], finished run.finished",
        kill,
    ), kill
    gap = re.fullmatch(
        r"load: 10 streams over 2 replicas, p99 gap between tokens (\d+) ms, errors 0", load
    )
    assert gap and 0 < int(gap.group(1)) < 5000, load
