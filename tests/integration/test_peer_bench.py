"""Smoke of scripts/peer_bench.py: every server answers a few turns and the table holds sane numbers.

Runs the real script (keel on the suite's Postgres with one worker, then two workers sharing a
Chroma server and the suite's Redis, then `langgraph dev`); the timings are for the benchmark,
not this test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_peer_bench_prints_positive_numbers_for_every_server(
    postgres_url: str, redis_url: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "scripts" / "peer_bench.py")]
    command += ["--postgres-url", postgres_url, "--redis-url", redis_url]
    command += ["--turns", "2", "--concurrency", "2", "--load-turns", "20"]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("| server | first_event_p50_ms")
    keel, workers, peer = json.loads(lines[-1])
    assert keel["server"] == "keel (Postgres)"
    assert workers["server"] == "keel (Postgres, 2 workers)"
    assert peer["server"].startswith("langgraph dev")
    for row in (keel, workers, peer):
        for key in (
            "first_event_p50_ms",
            "turn_p50_ms",
            "turns_per_s_c2",
            "server_cpu_ms_per_turn",
            "client_cpu_ms_per_turn",
        ):
            assert 0 < row[key] < 60_000, (key, row)
        assert row["first_event_p50_ms"] <= row["turn_p95_ms"]
    for row in (keel, workers):  # durability on: the database does work
        assert row["postgres_cpu_ms_per_turn"] > 0
    assert workers["chroma_redis_cpu_ms_per_turn"] > 0  # the workers share a Chroma server
