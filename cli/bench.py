"""`keel bench`: ingestion rate, per-turn server time (no LLM: the extractive answerer) with SQLite
and Postgres checkpoints, and time to first SSE event, against real `keel serve` processes."""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from cli.process import ServerProcess, free_port
from evals import SCIFACT
from graph.settings import Settings


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ingest(corpus: Path, data_dir: Path) -> dict[str, float]:
    """Ingests a corpus (a file, or a directory's supported files) into `data_dir`."""
    from corpus import open_corpora
    from corpus.loaders import load_paths

    settings = Settings(data_dir=data_dir)
    docs = load_paths([corpus])
    started = time.perf_counter()
    report = open_corpora(settings).get().ingest(docs)
    seconds = time.perf_counter() - started
    return {
        "documents": report.documents,
        "chunks_added": report.chunks_added,
        "seconds": round(seconds, 1),
        "chunks_per_s": round(report.chunks_added / seconds, 1) if report.chunks_added else 0.0,
    }


def _server(env: dict[str, str], log: Path) -> ServerProcess:
    """A `keel serve` process on a free port (a context manager that stops it)."""
    port = free_port()
    return ServerProcess(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
        port,
        {**os.environ, **env},
        log,
    )


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


async def _event_log_cost(url: str, events: int = 500) -> dict[str, float]:
    """Milliseconds per appended event (one INSERT in its own transaction, as runs do)."""
    from checkpoints import open_persistence

    async with open_persistence(url) as p:
        run, _ = await p.runs.create("bench", "bench-thread", "enqueue", {"message": "x"}, None)
        data = {"text": "a token of about this size ", "node": "generate"}
        started = time.perf_counter()
        for seq in range(1, events + 1):
            await p.runs.append(run.run_id, seq, "token", data)
        elapsed = time.perf_counter() - started
        await p.runs.delete_thread("bench-thread")
    return {"ms_per_event": round(elapsed * 1000 / events, 3)}


def _thread_bytes(url: str, thread_id: str) -> int:
    import psycopg

    total = 0
    with psycopg.connect(url) as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            row = conn.execute(
                f"SELECT COALESCE(SUM(pg_column_size(t.*)), 0) FROM {table} t WHERE thread_id = %s",
                (thread_id,),
            ).fetchone()
            total += int(row[0]) if row else 0
    return total


def _storage(url: str, turns: int) -> dict[str, object]:
    """Bytes a thread adds per turn around turns 10 and `turns` (Postgres), on one server."""
    out: dict[str, object] = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        thread_id = client.post("/v1/threads").json()["thread_id"]
        sizes = {}
        for turn in range(1, turns + 1):
            body = {
                "message": f"Turn {turn}: what is known about vitamin D?",
                "context": {"use_cache": False},
            }
            client.post(f"/v1/threads/{thread_id}/runs/wait", json=body).raise_for_status()
            if turn in (9, 10, turns - 1, turns):
                sizes[turn] = _thread_bytes(os.environ["KEEL_BENCH_PG"], thread_id)
        out["bytes_total"] = {"turn_10": sizes[10], f"turn_{turns}": sizes[turns]}
        out["bytes_per_turn"] = {
            "turn_10": sizes[10] - sizes[9],
            f"turn_{turns}": sizes[turns] - sizes[turns - 1],
        }
    return out


def _reconnect(url: str, runs: int = 20) -> dict[str, float]:
    """Time from a reconnecting GET (Last-Event-ID mid-run) to the first missed event."""
    samples = []
    with httpx.Client(base_url=url, timeout=60) as client:
        thread_id = client.post("/v1/threads").json()["thread_id"]
        for n in range(runs):
            run = client.post(
                f"/v1/threads/{thread_id}/runs/wait",
                json={"message": f"Reconnect {n}: vitamin D?", "context": {"use_cache": False}},
            ).json()
            started = time.perf_counter()
            with connect_sse(
                client,
                "GET",
                f"/v1/threads/{thread_id}/runs/{run['run_id']}/stream",
                headers={"Last-Event-ID": f"{run['run_id']}:3"},
            ) as source:
                next(iter(source.iter_sse()))
                samples.append((time.perf_counter() - started) * 1000)
    return {"p50": round(_pct(samples, 0.5), 1), "p95": round(_pct(samples, 0.95), 1)}


def run_durability(args: argparse.Namespace) -> int:
    """Event-log write cost, reconnect overhead and storage per turn with/without retention."""
    import asyncio

    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        report["event_log_sqlite"] = asyncio.run(_event_log_cost(f"sqlite:///{tmp}/e.sqlite"))
        if args.postgres_url:
            report["event_log_postgres"] = asyncio.run(_event_log_cost(args.postgres_url))
            os.environ["KEEL_BENCH_PG"] = args.postgres_url
            for name, extra in (
                ("without_retention", {}),
                (
                    "with_retention",
                    {"KEEL_RETENTION_CHECKPOINTS": "12", "KEEL_HISTORY_MAX_MESSAGES": "20"},
                ),
            ):
                env = {
                    "KEEL_DATA_DIR": str(args.data_dir),
                    "KEEL_DATABASE_URL": args.postgres_url,
                    **extra,
                }
                with _server(env, Path(tmp) / f"{name}.log") as server:
                    if name == "without_retention":
                        report["reconnect_ms"] = _reconnect(server.url)
                    report[f"storage_{name}"] = _storage(server.url, args.turns)
    print(json.dumps(report, indent=2))
    return 0


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
            with _server(env, Path(tmp) / f"{name}.log") as server:
                _turns(server.url, questions[:3])  # warm-up: model load, caches, connections
                report[name] = _turns(server.url, questions)
    print(json.dumps(report, indent=2))
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `keel bench`."""
    bench = subparsers.add_parser(
        "bench",
        help="latency and ingestion benchmark against real servers",
        description="By default: ingests --corpus once, then times --turns chat turns (no LLM: "
        "the extractive answerer) against a real `keel serve` with SQLite checkpoints, and with "
        "Postgres ones when --postgres-url is given; prints a JSON report. --durability and "
        "--cache run the other benchmarks instead.",
    )
    bench.add_argument(
        "--corpus",
        type=Path,
        default=SCIFACT / "corpus.jsonl",
        help="documents to ingest (default: %(default)s)",
    )
    bench.add_argument(
        "--queries",
        type=Path,
        default=SCIFACT / "queries.jsonl",
        help="JSONL rows with a `text` field, asked in order (default: %(default)s)",
    )
    bench.add_argument(
        "--data-dir",
        type=Path,
        default=Path("bench-out/data"),
        help="ingested once, reused while the corpus is unchanged (default: %(default)s)",
    )
    bench.add_argument(
        "--turns", type=int, default=100, help="chat turns timed per server (default: %(default)s)"
    )
    bench.add_argument(
        "--postgres-url",
        default=os.environ.get("KEEL_DATABASE_URL"),
        help="also time Postgres checkpoints on this database (default: KEEL_DATABASE_URL)",
    )
    bench.add_argument(
        "--durability",
        action="store_true",
        help="event-log cost, reconnect overhead, storage per turn (turns: --turns)",
    )
    bench.add_argument(
        "--cache",
        action="store_true",
        help="semantic cache: hit-turn latency (embedded stores) and lookup time at "
        "--cache-questions cached questions (SQLite, and Redis with --redis-url)",
    )
    bench.add_argument(
        "--pairs",
        type=Path,
        nargs="+",
        default=[Path(f"evals/data/cache_pairs_{name}.jsonl") for name in ("heldout", "tune")],
        help="question pairs whose hits are timed (latency: tuning pairs are fair game)",
    )
    bench.add_argument(
        "--cache-questions",
        type=int,
        default=100_000,
        help="cached questions the --cache lookup is timed against (default: %(default)s)",
    )
    bench.add_argument(
        "--redis-url",
        default=os.environ.get("KEEL_REDIS_URL"),
        help="also time the --cache lookup on this Redis (default: KEEL_REDIS_URL)",
    )
    bench.set_defaults(func=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    if args.cache:
        from cli.cache_bench import run_cache_bench  # it builds on this module's helpers

        return run_cache_bench(args)
    return (run_durability if args.durability else run)(args)
