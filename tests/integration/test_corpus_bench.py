"""Smoke of scripts/corpus_bench.py: one tier from the sample corpus (`--docs`, so the Debian
doc packages are not needed) in the server deployment (the suite's Postgres and a Chroma server,
two replicas); every number of the table is there and no question fails. The timings are for
the benchmark, not this test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_corpus_bench_prints_a_full_row_for_a_tier(postgres_url: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "scripts.corpus_bench", "--tiers", "1", "--limit-pages", "30"]
    command += ["--docs", str(ROOT / "samples" / "corpus"), "--data-dir", str(tmp_path / "data")]
    command += ["--postgres-url", postgres_url, "--questions", "6", "--scifact-limit", "2"]
    command += ["--scifact-abstracts", "50"]
    command += ["--json", str(tmp_path / "rows.json")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    header, _, line = done.stdout.strip().splitlines()[:3]
    assert header.startswith("| tier | pages | skipped | chunks_added | ingest_chunks_per_s |")
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert line.startswith("| 1 | 4 | 0 | ")
    assert row["pages"] == 4 and row["chunks"] == row["chunks_added"] > 0
    for key in (
        "ingest_chunks_per_s",
        "ingest_peak_rss_mb",
        "server_peak_rss_mb",
        "restart_to_ready_s",
        "turn_p50_ms",
        "turn_p95_ms",
        "retrieve_p50_ms",
        "retrieve_p95_ms",
        "rerank_p95_ms",
        "generate_p95_ms",
        "replica_visible_s",
    ):
        assert isinstance(row[key], int | float) and 0 < row[key] < 60_000, (key, row)
    assert row["turn_p50_ms"] <= row["turn_p95_ms"]
    assert row["retrieve_p95_ms"] <= row["turn_p95_ms"]
    assert row["failed_questions"] == 0
    assert row["readyz"] == 200 and row["listing"].startswith("4 docs in ")
    assert 0 < float(row["scifact_ndcg10"]) <= 1, row["scifact_ndcg10"]  # `keel eval` ran
