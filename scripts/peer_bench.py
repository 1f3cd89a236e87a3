"""Peer benchmark: the same graph served by keel (Postgres durability) and by `langgraph dev`.

Both servers run the full graph with the extractive answerer (no LLM), the cache off and a small
corpus, on this machine. For each it prints: first SSE event and turn p50/p95 (sequential turns),
turns/s at a given concurrency, and CPU per turn (server process tree + this database's Postgres
backends, from /proc through psutil), and the load generator's own (`cli.wire`, this process).
Numbers on a shared machine are upper bounds.
`--telemetry` adds a row for keel with every span exported to a loopback OTLP/HTTP receiver.

    PYTHONPATH=. python scripts/peer_bench.py --postgres-url postgresql://postgres@127.0.0.1/db
"""

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil

from cli.process import ServerProcess, free_port
from cli.wire import Wire
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


async def _turn(wire: Wire, peer: Peer, question: str) -> tuple[float, float]:
    """(first SSE event ms, turn ms) of one turn on a new thread, timed from the stream request."""
    thread_id = peer.thread_id(await wire.post_json(peer.thread_path, {}))
    started = time.perf_counter()
    first = None
    async for event, data in wire.events(peer.stream_path(thread_id), peer.body(question)):
        first = first or time.perf_counter()
        if event in ("error", "run.error"):
            raise RuntimeError(f"{peer.name} turn failed: {data}")
    done = time.perf_counter()
    return ((first or done) - started) * 1000, (done - started) * 1000


class CpuMeter:
    """CPU seconds of a server's process tree, the Postgres backends of one database, and other
    services it uses (a Chroma server, Redis), by process id."""

    def __init__(self, pid: int, database: str | None, services: tuple[int, ...] = ()):
        self.root, self.database = psutil.Process(pid), database
        self.services = [psutil.Process(p) for p in services]

    def _processes(self) -> list[tuple[psutil.Process, str]]:
        procs = [(p, "server") for p in [self.root, *self.root.children(recursive=True)]]
        procs += [(p, "services") for p in self.services]
        if self.database:
            for proc in psutil.process_iter(["cmdline"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if cmd.startswith("postgres: ") and f" {self.database} " in cmd:
                    procs.append((proc, "postgres"))
        return procs

    def sample(self) -> dict[int, tuple[float, str]]:
        """pid -> (CPU seconds, "server" | "postgres" | "services")."""
        out = {}
        for proc, kind in self._processes():
            try:
                times = proc.cpu_times()
                out[proc.pid] = (times.user + times.system, kind)
            except psutil.Error:
                continue
        return out

    @staticmethod
    def delta(
        before: dict[int, tuple[float, str]], after: dict[int, tuple[float, str]]
    ) -> dict[str, float]:
        """CPU seconds spent between two samples, by kind."""
        spent = {"server": 0.0, "postgres": 0.0, "services": 0.0}
        for pid, (cpu, kind) in after.items():
            spent[kind] += cpu - before.get(pid, (0.0, kind))[0]
        return spent


async def _measure(
    url: str, peer: Peer, meter: CpuMeter, turns: int, concurrency: int, load_turns: int
) -> dict[str, Any]:
    wires = [Wire(url) for _ in range(concurrency)]
    # Warm-up: models, caches and every connection (each may land on another worker process).
    await asyncio.gather(
        *(_turn(wire, peer, QUESTIONS[i % len(QUESTIONS)]) for i, wire in enumerate(wires))
    )
    for question in QUESTIONS:
        await _turn(wires[0], peer, question)
    sequential = [await _turn(wires[0], peer, QUESTIONS[i % len(QUESTIONS)]) for i in range(turns)]
    queue = iter(range(load_turns))

    async def worker(wire: Wire) -> None:
        for i in queue:
            await _turn(wire, peer, QUESTIONS[i % len(QUESTIONS)])

    before, client_before = meter.sample(), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(wire) for wire in wires))
    wall = time.perf_counter() - started
    spent = CpuMeter.delta(before, meter.sample())
    client_cpu = time.process_time() - client_before
    for wire in wires:
        await wire.aclose()
    first, total = [f for f, _ in sequential], [t for _, t in sequential]
    return {
        "server": peer.name,
        "first_event_p50_ms": round(_pct(first, 0.5), 1),
        "first_event_p95_ms": round(_pct(first, 0.95), 1),
        "turn_p50_ms": round(_pct(total, 0.5), 1),
        "turn_p95_ms": round(_pct(total, 0.95), 1),
        "turn_mean_ms": round(statistics.fmean(total), 1),
        f"turns_per_s_c{concurrency}": round(load_turns / wall, 2),
        "server_cpu_ms_per_turn": round(spent["server"] * 1000 / load_turns, 1),
        "postgres_cpu_ms_per_turn": round(spent["postgres"] * 1000 / load_turns, 1),
        "chroma_redis_cpu_ms_per_turn": round(spent["services"] * 1000 / load_turns, 1),
        "client_cpu_ms_per_turn": round(client_cpu * 1000 / load_turns, 1),
    }


def _await_workers(log: Path, workers: int, timeout_s: float = 120) -> None:
    """Waits until every worker process of a server has started. The server answers as soon as
    one has; a client's keep-alive connections opened before the others listen all stay on it."""
    deadline = time.monotonic() + timeout_s
    while log.read_text().count("Application startup complete") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all {workers} workers started in {timeout_s:.0f} s")
        time.sleep(0.2)


def _measured(server: ServerProcess, load: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Runs `load` against `server`; a failed turn's error carries the server's log tail."""
    try:
        return asyncio.run(load)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n--- {server.log.name}:\n{server.tail()}") from exc


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


def _chroma_server(work: Path) -> ServerProcess:
    """A Chroma server on loopback (the store several workers or replicas share)."""
    port = free_port()
    chroma = str(Path(sys.executable).parent / "chroma")
    command = [chroma, "run", "--path", str(work / "chroma"), "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    log = work / "chroma.log"
    return ServerProcess(command, port, dict(os.environ), log, ready_path="/api/v2/heartbeat")


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
        "--turns",
        type=int,
        default=100,
        help="sequential turns, timed one by one",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--load-turns",
        type=int,
        help="turns under load, timed together (default: 30 x concurrency, a steady state of "
        "some seconds rather than the first waves)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="keel worker processes, one row each; more than one serves from a Chroma server "
        "and Redis, as replicas do",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("KEEL_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    parser.add_argument("--skip-langgraph", action="store_true")
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="also run keel with OpenTelemetry tracing to a loopback receiver (its overhead)",
    )
    args = parser.parse_args(argv)
    if not args.postgres_url:
        parser.error("pass --postgres-url or set KEEL_DATABASE_URL")
    load_turns = args.load_turns or 30 * args.concurrency
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        data_dir = work / "data"
        ingest = [sys.executable, "-m", "cli.main", "ingest", str(args.corpus)]
        subprocess.run(ingest, env=_env(data_dir), cwd=REPO, check=True, capture_output=True)
        shared: dict[str, str] = {}
        services: tuple[int, ...] = ()
        if max(args.workers) > 1:  # workers share stores as replicas do
            chroma = stack.enter_context(_chroma_server(work))
            shared = {"KEEL_CHROMA_URL": chroma.url, "KEEL_REDIS_URL": args.redis_url}
            env = _env(work / "shared", **shared)
            subprocess.run(ingest, env=env, cwd=REPO, check=True, capture_output=True)
            redis = [
                p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "redis-server"
            ]
            services = (chroma.proc.pid, *redis)
        variants: list[tuple[str, int, dict[str, str]]] = [
            (KEEL.name if n == 1 else f"keel (Postgres, {n} workers)", n, {}) for n in args.workers
        ]
        if args.telemetry:  # the same server exporting every span to a loopback OTLP receiver
            receiver = OtlpReceiver()
            otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
            variants.append(("keel (Postgres) + OTLP traces", 1, otlp))
        for index, (name, workers, extra) in enumerate(variants):
            port = free_port()
            stores = shared if workers > 1 else {}
            keel_env = _env(
                work / "shared" if workers > 1 else data_dir,
                KEEL_DATABASE_URL=args.postgres_url,
                KEEL_WORKERS=str(workers),
                **stores,
                **extra,
            )
            command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
            log = work / f"keel-{index}.log"
            with ServerProcess(command, port, keel_env, log, cwd=REPO) as server:
                _await_workers(log, workers)
                database = urlparse(args.postgres_url).path.lstrip("/")
                meter = CpuMeter(server.proc.pid, database, services if workers > 1 else ())
                row = _measured(
                    server,
                    _measure(server.url, KEEL, meter, args.turns, args.concurrency, load_turns),
                )
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
                load = _measure(
                    server.url, LANGGRAPH, meter, args.turns, args.concurrency, load_turns
                )
                rows.append(_measured(server, load))
    _print_table(rows)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
