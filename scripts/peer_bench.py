"""Peer benchmark: the same graph served by keel (Postgres durability) and by `langgraph dev`.

Both servers run the full graph with the extractive answerer (no LLM), the cache off and a small
corpus, on this machine. For each it prints: first SSE event and turn p50/p95 (sequential turns),
turns/s at a given concurrency, and CPU per turn (server process tree + this database's Postgres
backends, from /proc through psutil). Numbers on a shared machine are upper bounds.
`--telemetry` adds a row for keel with every span exported to a loopback OTLP/HTTP receiver.

    PYTHONPATH=. python scripts/peer_bench.py --postgres-url postgresql://postgres@127.0.0.1/db
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil
from httpx_sse import aconnect_sse

from cli.process import ServerProcess, free_port
from integrations import tracing
from tests.collectors import OtlpReceiver

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How do I resume a stream after a disconnect?",
    "What file types can be ingested?",
    "How are threads stored?",
    "What does the operations guide say about backups?",
]


@dataclass
class Peer:
    """How to open a thread and stream one turn on one server."""

    name: str
    thread_path: str
    stream_path: Callable[[str], str]
    body: Callable[[str], dict[str, Any]]
    thread_id: Callable[[dict[str, Any]], str]


KEEL = Peer(
    "keel (Postgres)",
    "/v1/threads",
    lambda t: f"/v1/threads/{t}/runs/stream",
    lambda q: {"message": q, "context": {"use_cache": False}},
    lambda body: body["thread_id"],
)
LANGGRAPH = Peer(
    "langgraph dev (in-memory)",
    "/threads",
    lambda t: f"/threads/{t}/runs/stream",
    lambda q: {
        "assistant_id": "keel",
        "input": {"messages": [{"role": "user", "content": q}]},
        "context": {"use_cache": False},
        "stream_mode": ["updates", "custom"],
    },
    lambda body: body["thread_id"],
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _turn(client: httpx.AsyncClient, peer: Peer, question: str) -> tuple[float, float]:
    """(first SSE event ms, turn ms) of one turn on a new thread, timed from the stream request."""
    created = await client.post(peer.thread_path, json={})
    created.raise_for_status()
    thread_id = peer.thread_id(created.json())
    started = time.perf_counter()
    first = None
    async with aconnect_sse(
        client, "POST", peer.stream_path(thread_id), json=peer.body(question)
    ) as source:
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            first = first or time.perf_counter()
            if sse.event in ("error", "run.error"):
                raise RuntimeError(f"{peer.name} turn failed: {sse.data}")
    done = time.perf_counter()
    return ((first or done) - started) * 1000, (done - started) * 1000


class CpuMeter:
    """CPU seconds of a server's process tree plus the Postgres backends of one database."""

    def __init__(self, pid: int, database: str | None):
        self.root, self.database = psutil.Process(pid), database

    def _processes(self) -> list[psutil.Process]:
        procs = [self.root, *self.root.children(recursive=True)]
        if self.database:
            for proc in psutil.process_iter(["cmdline"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if cmd.startswith("postgres: ") and f" {self.database} " in cmd:
                    procs.append(proc)
        return procs

    def sample(self) -> dict[int, tuple[float, bool]]:
        """pid -> (CPU seconds, is a Postgres backend)."""
        out = {}
        for proc in self._processes():
            try:
                times = proc.cpu_times()
                out[proc.pid] = (
                    times.user + times.system,
                    proc.pid != self.root.pid and proc.name().startswith("postgres"),
                )
            except psutil.Error:
                continue
        return out

    @staticmethod
    def delta(
        before: dict[int, tuple[float, bool]], after: dict[int, tuple[float, bool]]
    ) -> tuple[float, float]:
        """(server seconds, Postgres seconds) spent between two samples."""
        server = pg = 0.0
        for pid, (cpu, is_pg) in after.items():
            spent = cpu - before.get(pid, (0.0, is_pg))[0]
            if is_pg:
                pg += spent
            else:
                server += spent
        return server, pg


async def _measure(
    url: str, peer: Peer, meter: CpuMeter, turns: int, concurrency: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for question in QUESTIONS:  # warm-up: models, caches, connections
            await _turn(client, peer, question)
        sequential = [
            await _turn(client, peer, QUESTIONS[i % len(QUESTIONS)]) for i in range(turns)
        ]
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await _turn(client, peer, QUESTIONS[i % len(QUESTIONS)])

        load_turns = max(turns, 2 * concurrency)
        before = meter.sample()
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(load_turns)))
        wall = time.perf_counter() - started
        server_s, pg_s = CpuMeter.delta(before, meter.sample())
    first, total = [f for f, _ in sequential], [t for _, t in sequential]
    return {
        "server": peer.name,
        "first_event_p50_ms": round(_pct(first, 0.5), 1),
        "first_event_p95_ms": round(_pct(first, 0.95), 1),
        "turn_p50_ms": round(_pct(total, 0.5), 1),
        "turn_p95_ms": round(_pct(total, 0.95), 1),
        "turn_mean_ms": round(statistics.fmean(total), 1),
        f"turns_per_s_c{concurrency}": round(load_turns / wall, 2),
        "server_cpu_ms_per_turn": round(server_s * 1000 / load_turns, 1),
        "postgres_cpu_ms_per_turn": round(pg_s * 1000 / load_turns, 1),
    }


def _langgraph_config(workdir: Path) -> Path:
    """The repo's langgraph.json with absolute paths, so the dev server runs outside the repo."""
    config = json.loads((REPO / "langgraph.json").read_text())
    config["dependencies"] = [str(REPO)]
    config["graphs"] = {
        gid: f"{REPO / spec.rpartition(':')[0]}:{spec.rpartition(':')[2]}"
        for gid, spec in config["graphs"].items()
    }
    target = workdir / "langgraph.json"
    target.write_text(json.dumps(config))
    return target


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "LANGSMITH_", "OPENAI_"))
    }
    env.update(
        KEEL_DATA_DIR=str(data_dir),
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        **extra,
    )
    return env


def _span_cost(receiver_url: str, turns: int = 2000) -> float:
    """CPU ms per turn of a turn's 10 spans (HTTP, run, 6 nodes, retrieval, rerank), created in
    this process and exported by the batch processor and OTLP/HTTP exporter keel uses, to a
    loopback receiver: the tracing overhead without a whole server's noise on a shared machine."""
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver_url
    tracing.configure()
    nodes = ("guard", "cache_lookup", "retrieve", "rerank", "generate", "fallback")
    started = time.process_time()
    for turn in range(turns):
        with tracing.span("POST /v1/threads/{thread_id}/runs/stream", {"http.route": "r"}):
            with tracing.span("invoke_agent keel", {"keel.run.id": f"{turn:032d}"}):
                for node in nodes:
                    with tracing.span(node, {"langgraph.node": node}):
                        if node in ("retrieve", "rerank"):
                            with tracing.span(f"{node} inner", {"keel.candidates": 20}):
                                pass
        if turn % 100 == 0:
            time.sleep(0.02)  # a server's pace, not a burst that overflows the export queue
    tracing.shutdown()
    return (time.process_time() - started) * 1000 / turns


def _print_table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


def main(argv: list[str] | None = None) -> int:
    """Runs keel, then `langgraph dev`, back to back; prints a Markdown table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url", default=os.environ.get("KEEL_DATABASE_URL"), required=False
    )
    parser.add_argument("--corpus", type=Path, default=REPO / "samples" / "corpus")
    parser.add_argument(
        "--turns", type=int, default=40, help="sequential turns (and at least that many under load)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-langgraph", action="store_true")
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="also run keel with OpenTelemetry tracing to a loopback receiver (its overhead)",
    )
    args = parser.parse_args(argv)
    if not args.postgres_url:
        parser.error("pass --postgres-url or set KEEL_DATABASE_URL")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        subprocess.run(
            [sys.executable, "-m", "cli.main", "ingest", str(args.corpus)],
            env=_env(data_dir),
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        variants: list[tuple[str, dict[str, str]]] = [(KEEL.name, {})]
        if args.telemetry:  # the same server exporting every span to a loopback OTLP receiver
            receiver = OtlpReceiver()
            otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
            variants.append(("keel (Postgres) + OTLP traces", otlp))
        for name, extra in variants:
            port = free_port()
            keel_env = _env(data_dir, KEEL_DATABASE_URL=args.postgres_url, **extra)
            command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
            with ServerProcess(command, port, keel_env, work / "keel.log", cwd=REPO) as server:
                meter = CpuMeter(server.proc.pid, urlparse(args.postgres_url).path.lstrip("/"))
                row = asyncio.run(_measure(server.url, KEEL, meter, args.turns, args.concurrency))
                rows.append(row | {"server": name})
        if args.telemetry:
            print(f"spans received: {len(receiver.spans())}")
            cost = _span_cost(receiver.url)
            print(f"tracing CPU per turn (10 spans, export included): {cost:.3f} ms")
            receiver.close()
        if not args.skip_langgraph:
            cli = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or "langgraph"
            port = free_port()
            command = [cli, "dev", "--config", str(_langgraph_config(work)), "--host", "127.0.0.1"]
            command += ["--port", str(port), "--no-browser", "--no-reload"]
            with ServerProcess(
                command, port, _env(data_dir), work / "lg.log", ready_path="/ok", cwd=work
            ) as server:
                meter = CpuMeter(server.proc.pid, None)
                rows.append(
                    asyncio.run(
                        _measure(server.url, LANGGRAPH, meter, args.turns, args.concurrency)
                    )
                )
    _print_table(rows)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
