"""The first queries over a freshly ingested corpus (issue 14, "cold corpus"), through the runtime.

Run: `python -m scripts.cold_bench [--corpus corpus.jsonl] [--queries queries.jsonl] [--turns 50]`.
Ingests the corpus (SciFact by default) into a new data dir (lazy sentence vectors, the default),
starts `keel serve` on it (SQLite checkpoints, no LLM: the extractive answerer), asks one
unrelated warm-up question (model load, connections), then the first `--turns` distinct claims,
one turn each over SSE, at once. Prints the ingestion time, turn p50/p95, first-event p50/p95,
per-node p50, and how many sentence vectors the store held before and after (0 before: nothing
was embedded per sentence at ingestion). Numbers on a shared machine are upper bounds.
"""

import argparse
import contextlib
import json
import sqlite3
import tempfile
from pathlib import Path

from cli.bench import _ingest, _server, _turns
from evals import SCIFACT
from graph.settings import Settings

WARM_UP = "What does this collection say about the weather in Lisbon?"


def _stored_sentences(data_dir: Path) -> int:
    """Sentences whose vectors are stored (the embedded chunk store, read directly)."""
    settings = Settings(data_dir=data_dir)
    path = settings.corpus_store_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute(
            "SELECT COALESCE(SUM(json_array_length(sentences)), 0) FROM keel_corpus_chunks"
        ).fetchone()
    return int(row[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SCIFACT / "corpus.jsonl")
    parser.add_argument("--queries", type=Path, default=SCIFACT / "queries.jsonl")
    parser.add_argument("--turns", type=int, default=50)
    args = parser.parse_args()
    questions = list(dict.fromkeys(json.loads(line)["text"] for line in args.queries.open()))[
        : args.turns
    ]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        report: dict[str, object] = {"ingest": _ingest(args.corpus, data_dir)}
        report["sentence_vectors_stored_before"] = _stored_sentences(data_dir)
        env = {"KEEL_DATA_DIR": str(data_dir), "KEEL_DATABASE_URL": f"sqlite:///{tmp}/c.sqlite"}
        with _server(env, Path(tmp) / "serve.log") as server:
            _turns(server.url, [WARM_UP])
            report["first_queries"] = _turns(server.url, questions)
        report["sentence_vectors_stored_after"] = _stored_sentences(data_dir)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
