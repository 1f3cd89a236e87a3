"""`keel bench`: ingestion rate, per-turn server time (no LLM: the extractive answerer) with SQLite
and Postgres checkpoints, and time to first SSE event, against real `keel serve` processes."""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from graph.settings import Settings


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ingest(corpus_file: Path, data_dir: Path) -> dict[str, float]:
    from integrations.corpus import Corpus, open_chroma
    from integrations.embeddings import MiniLMEmbedder
    from integrations.loaders import load_file

    settings = Settings(data_dir=data_dir)
    corpus = Corpus(open_chroma(settings), MiniLMEmbedder(), settings)
    docs = list(load_file(corpus_file))
    started = time.perf_counter()
    report = corpus.ingest(docs)
    seconds = time.perf_counter() - started
    return {
        "documents": report.documents,
        "chunks_added": report.chunks_added,
        "seconds": round(seconds, 1),
        "chunks_per_s": round(report.chunks_added / seconds, 1) if report.chunks_added else 0.0,
    }


def _serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start, see {log}")


def _turns(url: str, questions: list[str]) -> dict[str, object]:
    total, first_event, first_token = [], [], []
    nodes: dict[str, list[float]] = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for question in questions:
            thread_id = client.post("/v1/threads").json()["thread_id"]
            started = time.perf_counter()
            seen_event = seen_token = None
            with connect_sse(
                client,
                "POST",
                f"/v1/threads/{thread_id}/runs/stream",
                json={"message": question, "context": {"use_cache": False}},
            ) as source:
                for sse in source.iter_sse():
                    now = time.perf_counter()
                    seen_event = seen_event or now
                    if sse.event == "token":
                        seen_token = seen_token or now
                    if sse.event == "node.finished":
                        data = json.loads(sse.data)
                        nodes.setdefault(data["node"], []).append(data["duration_ms"])
            total.append((time.perf_counter() - started) * 1000)
            first_event.append(((seen_event or started) - started) * 1000)
            if seen_token:
                first_token.append((seen_token - started) * 1000)

    def stats(values: list[float]) -> dict[str, float]:
        return {"p50": round(_pct(values, 0.5), 1), "p95": round(_pct(values, 0.95), 1)}

    return {
        "turns": len(total),
        "turn_ms": stats(total),
        "first_event_ms": stats(first_event),
        "first_token_ms": stats(first_token) if first_token else None,
        "node_ms_p50": {n: round(statistics.median(v), 1) for n, v in nodes.items()},
    }


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints one JSON report."""
    data_dir = args.data_dir
    report: dict[str, object] = {
        "corpus": str(args.corpus),
        "ingest": _ingest(args.corpus, data_dir),
    }
    questions = [json.loads(line)["text"] for line in args.queries.open()][: args.turns]
    backends = {"sqlite": None, "postgres": args.postgres_url}
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in backends.items():
            if name == "postgres" and not url:
                report[name] = "skipped: pass --postgres-url or set KEEL_DATABASE_URL"
                continue
            env = {
                "KEEL_DATA_DIR": str(data_dir),
                "KEEL_DATABASE_URL": url or f"sqlite:///{tmp}/bench.sqlite",
            }
            proc, base = _serve(env, Path(tmp) / f"{name}.log")
            try:
                _turns(base, questions[:3])  # warm-up: model load, caches, connections
                report[name] = _turns(base, questions)
            finally:
                proc.terminate()
                proc.wait(30)
    print(json.dumps(report, indent=2))
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `keel bench`."""
    scifact = Path("../shared/datasets/scifact")
    bench = subparsers.add_parser(
        "bench", help="latency and ingestion benchmark against real servers"
    )
    bench.add_argument("--corpus", type=Path, default=scifact / "corpus.jsonl")
    bench.add_argument("--queries", type=Path, default=scifact / "queries.jsonl")
    bench.add_argument(
        "--data-dir",
        type=Path,
        default=Path("bench-out/data"),
        help="ingested once, reused while the corpus is unchanged",
    )
    bench.add_argument("--turns", type=int, default=100)
    bench.add_argument("--postgres-url", default=os.environ.get("KEEL_DATABASE_URL"))
    bench.set_defaults(func=run)
