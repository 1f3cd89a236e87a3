"""Smoke of scripts/mcp_bench.py: a few MCP tool calls and `/runs/wait` calls on Postgres, and
every line of its report (both protocol eras) with sane numbers; the timings are for the benchmark, not this test."""

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
    assert lines[0] == "3 calls each, taking turns"
    wait = _timing(lines[1], "/runs/wait:")
    for era, block in zip(("2025-11-25", "2026-07-28"), (lines[2:6], lines[6:10]), strict=True):
        first = _timing(block[0], f"MCP {era} first progress:")
        call = _timing(block[1], f"MCP {era} tool call:")
        assert first[0] < call[0] and wait[0] > 0  # progress arrives before the answer
        assert re.fullmatch(
            rf"MCP {era} over /runs/wait: +p50 [+-][0-9.]+%  p95 [+-][0-9.]+%", block[2]
        )
        assert re.fullmatch(
            rf"goals {era}: first progress p50 <= 50 ms: (met|missed); "
            r"overhead p50 <= 10%: (met|missed)",
            block[3],
        )
    assert len(lines) == 10


def _timing(line: str, label: str) -> list[float]:
    """p50 and p95 of a timing line, each positive, in order and below 30 s."""
    assert line.startswith(label), line
    match = re.search(TIMING, line)
    assert match, line
    p50, p95 = (float(v) for v in match.groups())
    assert 0 < p50 <= p95 < 30_000, line
    return [p50, p95]
