"""Smoke of scripts/mcp_bench.py: a few MCP tool calls and `/runs/wait` calls on Postgres, and
every line of its report with sane numbers; the timings are for the benchmark, not this test."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMING = r"p50 +([0-9.]+) ms  p95 +([0-9.]+) ms"


def test_mcp_bench_reports_first_progress_and_overhead(postgres_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "scripts" / "mcp_bench.py"), "--calls", "3"]
    command += ["--database-url", postgres_url]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "3 calls each, alternating"
    timings = {}
    for line, label in zip(lines[1:4], ("first", "mcp", "wait"), strict=True):
        match = re.search(TIMING, line)
        assert match, line
        timings[label] = [float(v) for v in match.groups()]
        assert 0 < timings[label][0] <= timings[label][1] < 30_000, line
    assert timings["first"][0] < timings["mcp"][0]  # progress arrives before the answer
    assert re.fullmatch(r"MCP over /runs/wait: +p50 [+-][0-9.]+%  p95 [+-][0-9.]+%", lines[4])
    assert re.fullmatch(
        r"goals: first progress p50 <= 50 ms: (met|missed); overhead p50 <= 10%: (met|missed)",
        lines[5],
    )
