"""Smoke of scripts/store_search_bench.py on SQLite: three pages of vectors (items cut by the
page boundaries), ranked as a brute-force ranking of the same vectors does."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_store_search_bench_ranks_as_brute_force_does() -> None:
    command = [sys.executable, "-m", "scripts.store_search_bench", "--fields", "4500"]
    done = subprocess.run(
        [*command, "--queries", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["database"] == "sqlite" and report["fields"] == 4500
    assert report["top10_matches_brute_force"] is True
    assert 0 < report["query_ms"]["p50"] <= report["query_ms"]["p95"]
    assert report["fields_ranked_per_s"] > 0 and report["write_fields_per_s"] > 0
