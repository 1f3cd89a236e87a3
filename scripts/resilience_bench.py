"""LLM resilience numbers against the fault-injecting fake OpenAI-compatible server
(`tests/fake_llm.py`) and a real `keel serve` on the sample corpus:

1. upstream calls per run under each fault (primary faulty, a healthy fallback model);
2. time to the first answer byte when the LLM stalls before its first token;
3. documents-only latency at a fixed request rate while the primary's breaker is open.

Run from the repository root: `python scripts/resilience_bench.py [--database-url URL]`.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
FAULTS = [
    "fail500",
    "ratelimit-30",
    "reset",
    "stallfirst",
    "keepalive",
    "stallmid-15",
    "cut-15",
    "malformed-15",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def keel(data_dir: Path, llm_url: str, log: Path, **env: str) -> ServerProcess:
    port = free_port()
    full = {
        **os.environ,
        "KEEL_DATA_DIR": str(data_dir),
        "KEEL_LLM_BASE_URL": llm_url,
        "KEEL_LLM_API_KEY": "bench",
        "KEEL_LLM_ALLOWED_MODELS": ",".join(FAULTS),
        **env,
    }
    command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    return ServerProcess(command, port, full, log, cwd=ROOT)


def calls(llm_url: str) -> dict[str, int]:
    return httpx.get(llm_url.removesuffix("/v1") + "/calls").json()


def ask(model: str | None) -> dict:
    return {"message": QUESTION, "context": {"model": model, "use_cache": False}}


def faults(server: ServerProcess, llm_url: str, runs: int) -> None:
    print(f"\n## upstream calls per run ({runs} runs per fault, healthy fallback model)")
    print(
        "| fault | calls to the faulty model per run | calls to the fallback per run | turn p50 ms |"
    )
    print("| --- | --- | --- | --- |")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for fault in FAULTS:
            httpx.delete(llm_url.removesuffix("/v1") + "/calls")
            took = []
            for _ in range(runs):
                tid = client.post("/v1/threads").json()["thread_id"]
                started = time.perf_counter()
                client.post(f"/v1/threads/{tid}/runs/wait", json=ask(fault)).raise_for_status()
                took.append((time.perf_counter() - started) * 1000)
            counted = calls(llm_url)
            fallback = sum(v for k, v in counted.items() if k.startswith("slow-2"))
            print(
                f"| {fault} | {counted.get(fault, 0) / runs:.2f} | {fallback / runs:.2f} "
                f"| {pct(took, 0.5):.0f} |"
            )


def stall(server: ServerProcess, timeout_s: float, runs: int) -> None:
    firsts = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(runs):
            tid = client.post("/v1/threads").json()["thread_id"]
            started = time.perf_counter()
            url = f"/v1/threads/{tid}/runs/stream"
            with connect_sse(client, "POST", url, json=ask("stallfirst")) as source:
                for event in source.iter_sse():
                    if event.event == "token":
                        firsts.append((time.perf_counter() - started) * 1000)
                        break
    print(f"\n## first answer byte with the primary stalled (first-token timeout {timeout_s} s)")
    print(
        f"p50 {pct(firsts, 0.5):.0f} ms, p95 {pct(firsts, 0.95):.0f} ms; over the timeout: "
        f"p50 {pct(firsts, 0.5) - timeout_s * 1000:.0f} ms, "
        f"p95 {pct(firsts, 0.95) - timeout_s * 1000:.0f} ms"
    )


async def documents_only(server: ServerProcess, rate: float, seconds: float) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        threads = [
            (await client.post("/v1/threads")).json()["thread_id"]
            for _ in range(int(rate * seconds))
        ]
        # The first run's 429 opens the primary's breaker for an hour.
        await client.post(f"/v1/threads/{threads[0]}/runs/wait", json=ask(None))
        took: list[float] = []
        levels: dict[str, int] = {}

        async def one(tid: str) -> None:
            started = time.perf_counter()
            try:
                reply = await client.post(f"/v1/threads/{tid}/runs/wait", json=ask(None))
            except httpx.HTTPError as exc:  # an overloaded server: counted, not fatal
                level = f"error {type(exc).__name__}"
            else:
                level = reply.headers.get("X-Keel-Degraded", f"status {reply.status_code}")
            took.append((time.perf_counter() - started) * 1000)
            levels[level] = levels.get(level, 0) + 1

        tasks = []
        cpu_before = cpu_seconds(server.proc.pid)
        start = time.perf_counter()
        for n, tid in enumerate(threads[1:]):  # an open-loop arrival at a fixed rate
            tasks.append(asyncio.create_task(one(tid)))
            await asyncio.sleep(max(0.0, start + (n + 1) / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        cpu_after = cpu_seconds(server.proc.pid)
    print(f"\n## documents only at {rate:.0f} requests/s for {seconds:.0f} s, breaker open")
    print(
        f"{len(took)} runs: p50 {pct(took, 0.5):.0f} ms, p95 {pct(took, 0.95):.0f} ms, "
        f"p99 {pct(took, 0.99):.0f} ms; answered as {json.dumps(levels)}"
    )
    if cpu_before is not None and cpu_after is not None:
        print(f"server CPU per run: {(cpu_after - cpu_before) * 1000 / len(took):.1f} ms")


def cpu_seconds(pid: int) -> float | None:
    """A process's user + system CPU time, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="Postgres for checkpoints")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="keel-resilience-"))
    data = work / "data"
    env = {**os.environ, "KEEL_DATA_DIR": str(data)}
    subprocess.run(
        [sys.executable, "-m", "cli.main", "ingest", "samples/corpus"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    llm_port = free_port()
    llm = subprocess.Popen([sys.executable, "-m", "tests.fake_llm", str(llm_port)], cwd=ROOT)
    llm_url = f"http://127.0.0.1:{llm_port}/v1"
    extra = {"KEEL_DATABASE_URL": args.database_url} if args.database_url else {}
    try:
        time.sleep(2)
        with keel(
            data,
            llm_url,
            work / "faults.log",
            KEEL_LLM_MODEL="slow-5-30",
            KEEL_LLM_FALLBACK_MODEL="slow-2-30",
            KEEL_LLM_FIRST_TOKEN_TIMEOUT_S="2",
            KEEL_LLM_IDLE_TIMEOUT_S="2",
            **extra,
        ) as server:
            faults(server, llm_url, args.runs)
            stall(server, 2.0, args.runs)
        with keel(
            data, llm_url, work / "open.log", KEEL_LLM_MODEL="ratelimit-3600", **extra
        ) as server:
            asyncio.run(documents_only(server, args.rate, args.seconds))
    finally:
        llm.terminate()
        llm.wait(10)


if __name__ == "__main__":
    main()
