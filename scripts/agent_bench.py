"""Time to first event and turn latency through the official Python SDK: keel's Agent Server API
vs the same script against `langgraph dev` serving keel's graph, vs keel's own /v1 on the same
server. Prints p50 and p95 per path, and what the Agent API adds over /v1 on the same client
(numbers are upper bounds on a shared machine).

    PYTHONPATH=$PWD python scripts/agent_bench.py --turns 50 \\
        --database-url postgresql://postgres@127.0.0.1:5432/keel_bench

Each server answers with the extractive answerer (no LLM) from the same ingested sample corpus
(its own copy), the cache off, so every turn runs the whole graph. The paths take turns, so drift
on the machine spreads over all of them.
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from langgraph_sdk import get_client

from cli.process import ServerProcess, free_port
from evals.metrics import percentile

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
CONTEXT = {"use_cache": False}
Turn = Callable[[], Awaitable[tuple[float, float]]]
V1, AGENT, SDK = "keel /v1 (httpx SSE)", "keel Agent API (httpx SSE)", "keel Agent API (SDK)"


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "LANGSMITH_"))}
    return {**env, "KEEL_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra}


def _ingest(data_dir: Path) -> None:
    command = [sys.executable, "-m", "cli.main", "ingest", "--quiet", str(ROOT / "samples")]
    subprocess.run(command, env=_env(data_dir), cwd=ROOT, check=True, capture_output=True)


def _keel(work: Path, corpus: Path, database_url: str | None) -> ServerProcess:
    data = work / "keel-data"
    shutil.copytree(corpus, data)
    port = free_port()
    extra = {"KEEL_PORT": str(port), "KEEL_HOST": "127.0.0.1"}
    if database_url:
        extra["KEEL_DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "cli.main", "serve"]
    return ServerProcess(command, port, _env(data, **extra), work / "keel.log", cwd=ROOT)


def _langgraph_dev(work: Path, corpus: Path) -> ServerProcess:
    data = work / "dev-data"
    shutil.copytree(corpus, data)
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT)]
    config["graphs"] = {"keel": f"{ROOT / 'graph' / 'studio.py'}:graph"}
    (work / "langgraph.json").write_text(json.dumps(config))
    port = free_port()
    cli = Path(sys.executable).with_name("langgraph")
    command = [str(cli), "dev", "--config", str(work / "langgraph.json"), "--port", str(port)]
    command += ["--host", "127.0.0.1", "--no-browser", "--no-reload"]
    env = _env(data, LANGGRAPH_CLI_NO_ANALYTICS="1", LANGSMITH_TRACING="false")
    return ServerProcess(command, port, env, work / "dev.log", ready_path="/ok", cwd=work)


def sdk_turn(url: str) -> Turn:
    """One turn through `client.runs.stream` on a fresh thread (stream mode `updates`)."""
    client = get_client(url=url)

    async def turn() -> tuple[float, float]:
        thread_id = (await client.threads.create())["thread_id"]
        inputs = {"messages": [{"role": "user", "content": QUESTION}]}
        t0 = time.perf_counter()
        first = None
        async for _ in client.runs.stream(
            thread_id, "keel", input=inputs, stream_mode="updates", context=CONTEXT
        ):
            first = first or time.perf_counter() - t0
        return first or 0.0, time.perf_counter() - t0

    return turn


def http_turn(url: str, dialect: str) -> Turn:
    """One turn through a raw SSE stream on a fresh thread: keel's own `/v1`, or the Agent
    Server API without the SDK (`agent`), to tell the SDK's share from the server's."""
    http = httpx.AsyncClient(base_url=url, timeout=120)
    inputs = {"messages": [{"role": "user", "content": QUESTION}]}
    prefix, body = (
        ("/v1", {"message": QUESTION, "context": CONTEXT})
        if dialect == "v1"
        else (
            "",
            {"assistant_id": "keel", "input": inputs, "stream_mode": "updates", "context": CONTEXT},
        )
    )

    async def turn() -> tuple[float, float]:
        thread_id = (await http.post(f"{prefix}/threads", json={})).json()["thread_id"]
        t0 = time.perf_counter()
        first = None
        path = f"{prefix}/threads/{thread_id}/runs/stream"
        async with http.stream("POST", path, json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    first = first or time.perf_counter() - t0
        return first or 0.0, time.perf_counter() - t0

    return turn


def _summary(values: list[float]) -> str:
    p50, p95 = statistics.median(values), percentile(values, 95)
    return f"p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms"


def _added(ours: list[float], base: list[float]) -> str:
    p50 = statistics.median(ours) / statistics.median(base) - 1
    p95 = percentile(ours, 95) / percentile(base, 95) - 1
    return f"p50 {p50 * 100:+6.1f} %    p95 {p95 * 100:+6.1f} %"


async def bench(paths: dict[str, Turn], turns: int) -> None:
    """Warms each path up, then runs them in turn and prints the numbers."""
    for turn in paths.values():
        for _ in range(2):
            await turn()
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(turns):
        for name, turn in paths.items():
            timings[name].append(await turn())
    for name, values in timings.items():
        print(f"{name:28s} first event: {_summary([v[0] for v in values])}")
        print(f"{'':28s} turn:        {_summary([v[1] for v in values])}")
    # The server's share (same client on both), then what a Python SDK user sees: the SDK also
    # parses, and asks for the run once its stream has closed without an `end` event.
    for label, name in (("Agent API (httpx SSE)", AGENT), ("Agent API (SDK)", SDK)):
        for what, index in (("first event", 0), ("turn", 1)):
            added = _added([v[index] for v in timings[name]], [v[index] for v in timings[V1]])
            print(f"{label} over /v1 (httpx SSE), {what:11s}: {added}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--database-url", help="keel's Postgres (default: embedded SQLite)")
    parser.add_argument("--no-dev", action="store_true", help="skip langgraph dev")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-agent-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        _ingest(corpus)
        servers = [_keel(work, corpus, args.database_url)]
        try:
            paths = {
                V1: http_turn(servers[0].url, "v1"),
                AGENT: http_turn(servers[0].url, "agent"),
                SDK: sdk_turn(servers[0].url),
            }
            if not args.no_dev:
                servers.append(_langgraph_dev(work, corpus))
                paths["langgraph dev (SDK)"] = sdk_turn(servers[1].url)
            asyncio.run(bench(paths, args.turns))
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
