"""Smoke of scripts/cold_bench.py on the sample corpus: it ingests, serves, asks, and reads the
sentence vectors the chunk store holds before and after. The timings are the benchmark's."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_cold_bench_reports_turns_and_the_stored_sentence_vectors() -> None:
    command = [sys.executable, "-m", "scripts.cold_bench", "--corpus", "samples/corpus"]
    done = subprocess.run(
        [*command, "--turns", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ingest"]["chunks_added"] > 0
    assert report["sentence_vectors_stored_before"] == 0  # ingestion embeds heads only
    assert report["first_queries"]["turns"] == 3
    assert (
        0 < report["first_queries"]["turn_ms"]["p50"] <= report["first_queries"]["turn_ms"]["p95"]
    )
    assert isinstance(report["sentence_vectors_stored_after"], int)  # read from the store
