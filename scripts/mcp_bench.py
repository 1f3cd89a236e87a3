"""MCP tool calls vs `/runs/wait` on the same `keel serve`: the time from a tool call to its first
progress notification, and what a call through MCP adds over the same run through `/runs/wait`,
in both protocol eras. Prints p50 and p95 of each and the goals (first progress <= 50 ms,
overhead <= 10%).

    PYTHONPATH=$PWD python scripts/mcp_bench.py --calls 50 \\
        --database-url postgresql://postgres@127.0.0.1:5432/keel_bench

The server answers with the extractive answerer (no LLM) from the ingested sample corpus, through
an assistant whose knobs turn the cache off, so every call runs the whole graph; every path asks
the same question of the same assistant on a new thread each time, and their runs log the same
events (`/runs/wait` without a stream mode, as an MCP call's run), so the difference is the MCP
layer: the SDK's per-request handling, JSON-RPC, the SSE answer and its progress notification.
The MCP clients are the official ones, asking for progress: a `ClientSession` after the
initialize handshake (2025-11-25) and the high-level `Client`, which negotiates the per-request
envelope (2026-07-28); the `/runs/wait` client is plain httpx. The three paths take turns, so
drift on the machine spreads over all of them.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import httpx2
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

from cli.process import ServerProcess, free_port
from evals.metrics import percentile

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
TOOL = "bench"  # the assistant (and tool) the calls go to
FIRST_PROGRESS_GOAL_MS, OVERHEAD_GOAL = 50.0, 0.10
# The protocol's two eras, both served at `/mcp`: the initialize handshake (`ClientSession`, the
# newest handshake revision) and the per-request envelope the official `Client` chooses first.
ERAS = ("2025-11-25", "2026-07-28")


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "LANGSMITH_"))}
    return {**env, "KEEL_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra}


def _keel(work: Path, database_url: str | None) -> ServerProcess:
    data = work / "data"
    command = [sys.executable, "-m", "cli.main", "ingest", "--quiet", str(ROOT / "samples")]
    subprocess.run(command, env=_env(data), cwd=ROOT, check=True, capture_output=True)
    port = free_port()
    extra = {"KEEL_PORT": str(port), "KEEL_HOST": "127.0.0.1"}
    if database_url:
        extra["KEEL_DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "cli.main", "serve"]
    return ServerProcess(command, port, _env(data, **extra), work / "keel.log", cwd=ROOT)


def _summary(values: list[float]) -> str:
    p50, p95 = statistics.median(values), percentile(values, 95)
    return f"p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms"


async def bench(url: str, calls: int) -> None:
    """Warms every path up, runs `calls` of each in turn and prints the numbers."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        assistant = await http.post(
            "/assistants",
            json={"graph_id": "keel", "name": TOOL, "context": {"use_cache": False}},
        )
        assistant_id = assistant.raise_for_status().json()["assistant_id"]
        try:
            body = {
                "assistant_id": assistant_id,
                "input": {"messages": [{"role": "user", "content": QUESTION}]},
                "if_not_exists": "create",
                # as the MCP call's run: no stream mode logged, so both runs do the same work
                "stream_mode": [],
            }

            async def wait() -> float:
                t0 = time.perf_counter()
                response = await http.post(f"/threads/{uuid.uuid4().hex}/runs/wait", json=body)
                assert response.status_code == 200 and response.json()["answer"], response.text
                return time.perf_counter() - t0

            async with (
                httpx2.AsyncClient(timeout=120) as mcp_http,
                Client(streamable_http_client(f"{url}/mcp", http_client=mcp_http)) as modern,
                streamable_http_client(f"{url}/mcp", http_client=mcp_http) as (read, write),
                ClientSession(read, write) as legacy,
            ):
                await legacy.initialize()
                eras = {ERAS[0]: legacy, ERAS[1]: modern.session}
                assert modern.session.protocol_version == ERAS[1]

                async def call(session: ClientSession) -> tuple[float, float]:
                    first: list[float] = []

                    async def progress(value: float, total: float | None, message: str | None):
                        first.append(first[0] if first else time.perf_counter() - t0)

                    t0 = time.perf_counter()
                    result = await session.call_tool(
                        TOOL, {"question": QUESTION}, progress_callback=progress
                    )
                    elapsed = time.perf_counter() - t0
                    assert not result.is_error and result.structured_content, result.content
                    assert first, "no progress notification"
                    return first[0], elapsed

                for _ in range(3):
                    await wait()
                    for session in eras.values():
                        await call(session)
                waits: list[float] = []
                firsts: dict[str, list[float]] = {era: [] for era in eras}
                mcps: dict[str, list[float]] = {era: [] for era in eras}
                for _ in range(calls):
                    waits.append(await wait())
                    for era, session in eras.items():
                        first, elapsed = await call(session)
                        firsts[era].append(first)
                        mcps[era].append(elapsed)
        finally:  # the server's database keeps no trace of the benchmark's assistant
            await http.delete(f"/assistants/{assistant_id}", params={"delete_threads": True})
    print(f"{calls} calls each, taking turns")
    print(f"/runs/wait:                        {_summary(waits)}")
    for era in eras:
        overhead_p50 = statistics.median(mcps[era]) / statistics.median(waits) - 1
        overhead_p95 = percentile(mcps[era], 95) / percentile(waits, 95) - 1
        first_p50 = statistics.median(firsts[era]) * 1000
        print(f"MCP {era} first progress:      {_summary(firsts[era])}")
        print(f"MCP {era} tool call:           {_summary(mcps[era])}")
        print(f"MCP {era} over /runs/wait:     p50 {overhead_p50:+.1%}  p95 {overhead_p95:+.1%}")
        print(
            f"goals {era}: first progress p50 <= {FIRST_PROGRESS_GOAL_MS:.0f} ms: "
            f"{'met' if first_p50 <= FIRST_PROGRESS_GOAL_MS else 'missed'}; overhead p50 <= "
            f"{OVERHEAD_GOAL:.0%}: {'met' if overhead_p50 <= OVERHEAD_GOAL else 'missed'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--database-url", help="keel's Postgres (default: embedded SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-mcp-bench-") as tmp:
        server = _keel(Path(tmp), args.database_url)
        try:
            asyncio.run(bench(server.url, args.calls))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
