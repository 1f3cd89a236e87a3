"""Retrieval regression gate: `keel eval` on a fixed 100-query sample of SciFact train.

What runs: the `eval` subcommand's own entry point (`evals.cli.add_eval_parser` -> `run_eval`),
so ingestion, the compiled graph (in-memory checkpointer, cache off), scoring and every output
file are exercised for real, with the shipped default configuration (hybrid + rerank; eval runs
keep 100 candidates).

To finish in a few minutes on 2 cores, the corpus is NOT the full 5,183 abstracts: it is the
sample's judged (relevant) documents plus 400 distractors drawn at random with a fixed seed
(`--distractors 400 --seed 0`), ingested into a temporary directory. With fewer distractors the
scores run higher than on the full corpus, so the threshold below was set a little under what this
exact subset measured (see GATE_NDCG10), not from the full-corpus numbers.
"""

import argparse
import json
from pathlib import Path

import pytest

from evals import SCIFACT
from evals.cli import add_eval_parser
from evals.datasets import load_beir

SAMPLE, SEED, DISTRACTORS = 100, 0, 400
# Measured on this exact subset (hybrid + rerank, 100 candidates, document-head dense vectors):
# nDCG@10 0.847, recall@100 0.985 with the sentence-maxsim reranker; 0.836 / 0.990 with the
# learned linear one (level with it on all 809 claims cold); 0.854 / 0.990 with the 19-signal
# network (2026-12-06; it saw these claims in training). A drop of ~0.01-0.02 nDCG@10 (or of 2.5
# points of recall) fails.
GATE_NDCG10 = 0.83
GATE_RECALL100 = 0.96


@pytest.mark.slow
def test_scifact_sample_keeps_ndcg_above_gate(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="keel")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            "eval",
            "--dataset",
            str(SCIFACT),
            "--split",
            "train",
            "--sample",
            str(SAMPLE),
            "--seed",
            str(SEED),
            "--distractors",
            str(DISTRACTORS),
            "--config",
            "default",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert args.func(args) == 0

    summary = json.loads((out / "summary.json").read_text())
    (config,) = summary["configs"]
    assert config["queries"] == SAMPLE
    assert config["metrics"]["ndcg@10"] >= GATE_NDCG10, config["metrics"]
    assert config["metrics"]["recall@100"] >= GATE_RECALL100, config["metrics"]
    # Every query ran the whole graph and answered; rerank may rarely hit its 2 s budget on a
    # loaded CI machine (1 in 100 seen with 8 busy processes on 2 cores), never often.
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == SAMPLE
    assert all(row["retrieved"] and row["answer"] for row in rows)
    assert config["rates"]["rerank_skipped"] <= 0.05
    assert {"retrieve", "rerank", "generate", "total"} <= set(config["latency_ms"])
    for name in ("report.md", "latency.png", "metrics.png"):
        assert (out / name).stat().st_size > 0
    # 20 sampled answers, each beside its gold rationale sentences, for a reader.
    answers = (out / "answers.md").read_text()
    assert answers.count("\n## ") == 20 and answers.count("Gold evidence:") == 20


@pytest.mark.slow
def test_rerun_reuses_the_isolated_collection(tmp_path: Path) -> None:
    """A second run over an unchanged corpus ingests nothing."""
    parser = argparse.ArgumentParser(prog="keel")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    common = [
        "eval",
        "--dataset",
        str(SCIFACT),
        "--sample",
        "3",
        "--seed",
        "1",
        "--distractors",
        "5",
        "--config",
        "hybrid",
        "--data-dir",
        str(tmp_path / "data"),
        "--no-progress",
        "--no-plots",
    ]
    for n in (1, 2):
        args = parser.parse_args([*common, "--out", str(tmp_path / f"out{n}")])
        assert args.func(args) == 0
    first, second = (
        json.loads((tmp_path / f"out{n}" / "summary.json").read_text())["configs"][0]["ingest"]
        for n in (1, 2)
    )
    assert first["chunks_added"] > 0 and not first["reused"]
    assert second["chunks_added"] == 0 and second["reused"]
    assert first["collection"] == second["collection"]


@pytest.mark.slow
def test_without_relevant_counts_not_found_answers(tmp_path: Path) -> None:
    """With the judged abstracts taken out, no query can retrieve them, and the summary says
    how often keel answered "not found"."""
    parser = argparse.ArgumentParser(prog="keel")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            *("eval", "--dataset", str(SCIFACT), "--sample", "6", "--distractors", "30"),
            *("--without-relevant", "--config", "default", "--data-dir", str(tmp_path / "data")),
            *("--out", str(out), "--no-progress", "--no-plots"),
        ]
    )
    assert args.func(args) == 0
    (config,) = json.loads((out / "summary.json").read_text())["configs"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    retrieved = {doc for row in rows for doc in row["doc_ranking"]}
    assert len(rows) == 6 and retrieved
    queries = {q.id: q for q in load_beir(SCIFACT, "train").queries}
    assert not any(set(queries[row["query_id"]].relevant) & set(row["doc_ranking"]) for row in rows)
    not_found = [row for row in rows if not row["found"]]
    assert config["rates"]["not_found"] == round(len(not_found) / 6, 4)
    assert all(row["answer"] and not row["citations"] for row in not_found)
