"""Two replicas on one box (uvicorn processes on two ports sharing one Postgres, one Redis and
one Chroma server, as production replicas do) behind no proxy: SIGTERM drain, SIGKILL resume and many concurrent SSE streams, with the fake LLM.
Run: `python -m scripts.replica_bench --database-url postgresql://... --redis-url redis://...
[--drain-streams 50] [--load-streams 400]`. Numbers on a shared machine are upper bounds.

Prints: drain time after SIGTERM and whether every stream finished on the other replica by
Last-Event-ID with no gap, duplicate or model call made twice; the time until SIGKILLed runs
resume on the other replica, and whether a live run slower than the lease ran once; the p99 gap
between events and the error count at `--load-streams` concurrent streams.
"""

import argparse
import asyncio
import os
import random
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from cli.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("run.finished", "run.error")


def run_tag() -> str:
    """Letters only: the guard redacts a long digit run (a time in ns) as a phone number, and the
    model calls are counted by the tag in their prompts."""
    return "".join(random.choices(string.ascii_lowercase, k=10))


def question(tag: str, part: object) -> str:
    """A question carrying the tag, worded as a user would: a bare "kill-xqzv 0" reads like an
    encoded payload to the injection guard's classifier (0 of 1,200 of these are flagged)."""
    return f"Tell me about the {tag} test, part {part}."


class Stream:
    """One run followed across replicas: its events, arrival times and retry hints."""

    def __init__(self, tid: str, rid: str):
        self.tid, self.rid = tid, rid
        self.events: list[tuple[int, str]] = []
        self.times: list[float] = []
        self.resumed_at: float | None = None
        self.error: str | None = None

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1][1] in TERMINAL

    async def follow(self, client: httpx.AsyncClient, bases: list[str]) -> None:
        try:
            for base in bases:
                headers = (
                    {"Last-Event-ID": f"{self.rid}:{self.events[-1][0]}"} if self.events else {}
                )
                url = f"{base}/v1/threads/{self.tid}/runs/{self.rid}/stream"
                try:
                    async with aconnect_sse(client, "GET", url, headers=headers) as source:
                        async for sse in source.aiter_sse():
                            if not sse.data:
                                continue
                            self.events.append((int(sse.id.split(":")[1]), sse.event))
                            if sse.event == "run.error":
                                self.error = sse.data
                            self.times.append(time.monotonic())
                            if sse.event == "run.resumed":
                                self.resumed_at = time.monotonic()
                except httpx.TransportError:
                    pass  # the replica went away: go on with the next one
                if self.done:
                    return
            self.error = "not finished"
        except Exception as exc:
            self.error = repr(exc)

    def clean(self) -> bool:
        seqs = [seq for seq, _ in self.events]
        return seqs == list(range(1, len(seqs) + 1)) and self.events[-1][1] == "run.finished"


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, chroma_url: str):
        self.args, self.work, self.chroma_url = args, work, chroma_url
        self.llm_port = free_port()
        self.llm = subprocess.Popen([sys.executable, "-m", "tests.fake_llm", str(self.llm_port)])
        self.llm_url = f"http://127.0.0.1:{self.llm_port}"
        self.servers: list[ServerProcess] = []

    def replica(self, name: str, model: str, **extra: str) -> ServerProcess:
        """A replica starting (`wait_ready` waits for it): a phase's two start side by side."""
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "KEEL_PORT": str(port),
            "KEEL_HOST": "127.0.0.1",
            "KEEL_DATABASE_URL": self.args.database_url,
            "KEEL_REDIS_URL": self.args.redis_url,
            "KEEL_CHROMA_URL": self.chroma_url,
            "KEEL_DATA_DIR": str(self.work / "data"),
            "KEEL_LLM_BASE_URL": f"{self.llm_url}/v1",
            "KEEL_LLM_API_KEY": "bench",
            "KEEL_LLM_MODEL": model,
            "KEEL_RUN_HEARTBEAT_S": "0.2",
            "KEEL_REPLICAS": "2",
            "KEEL_RATE_LIMIT_RPM": "0",
            # The fake model's words cite nothing: the grounding check would replace every
            # answer at its first sentence, and this bench is about a model's token stream.
            "KEEL_GROUNDING_CHECK": "false",
            **extra,
        }
        command = [sys.executable, "-m", "cli.main", "serve"]
        log = self.work / f"{name}.log"
        server = ServerProcess(command, port, env, log, "/readyz", cwd=ROOT, wait=False)
        self.servers.append(server)
        return server

    async def start(self, client: httpx.AsyncClient, base: str, text: str) -> Stream:
        attempts = 3
        while True:
            try:
                tid = (await client.post(f"{base}/v1/threads")).raise_for_status().json()
                run = await client.post(
                    f"{base}/v1/threads/{tid['thread_id']}/runs", json={"message": text}
                )
                return Stream(tid["thread_id"], run.raise_for_status().json()["run_id"])
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A pooled connection the server closed as it idled out (keep-alive race).
                attempts -= 1
                if not attempts:
                    raise

    async def calls(self, client: httpx.AsyncClient, tag: str) -> list[int]:
        return (await client.get(f"{self.llm_url}/calls", params={"contains": tag})).json()

    async def drain(self, client: httpx.AsyncClient) -> None:
        a = self.replica("drain-a", "slow-60-40", KEEL_DRAIN_TIMEOUT="20")
        b = self.replica("drain-b", "slow-60-40", KEEL_DRAIN_TIMEOUT="20")
        a.wait_ready()
        b.wait_ready()
        tag = f"drain-{run_tag()}"
        n = self.args.drain_streams
        streams = await asyncio.gather(
            *(self.start(client, a.url, question(tag, i)) for i in range(n))
        )
        tasks = [asyncio.create_task(s.follow(client, [a.url, b.url])) for s in streams]
        while sum(any(e == "token" for _, e in s.events) for s in streams) < n // 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        sent = time.monotonic()
        os.killpg(a.proc.pid, signal.SIGTERM)
        while a.proc.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        drained = time.monotonic() - sent
        await asyncio.gather(*tasks)
        calls = await self.calls(client, tag)
        clean = sum(s.clean() for s in streams)
        print(
            f"SIGTERM drain: {drained:.2f} s with {n} streams; {clean}/{n} finished clean "
            f"(no gap, no duplicate); model calls per call site: max {max(calls)}, "
            f"{len(calls)} sites; errors {sum(bool(s.error) for s in streams)}"
        )
        b.stop()

    async def kill(self, client: httpx.AsyncClient) -> None:
        lease = {"KEEL_RUN_LEASE_S": "2", "KEEL_RUN_MAX_ATTEMPTS": "3"}
        a = self.replica("kill-a", "slow-60-40", **lease)
        # B's model call (6 s) outlives the 2 s lease: it must renew, not be taken over.
        b = self.replica("kill-b", "slow-200-30", **lease)
        a.wait_ready()
        b.wait_ready()
        tag = f"kill-{run_tag()}"
        n = self.args.kill_streams
        slow = await self.start(client, b.url, question(tag, "slow"))
        slow_task = asyncio.create_task(slow.follow(client, [b.url]))
        streams = await asyncio.gather(
            *(self.start(client, a.url, question(tag, i)) for i in range(n))
        )
        tasks = [asyncio.create_task(s.follow(client, [a.url, b.url])) for s in streams]
        while sum(any(e == "token" for _, e in s.events) for s in streams) < n:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        killed = time.monotonic()
        os.killpg(a.proc.pid, signal.SIGKILL)
        await asyncio.gather(*tasks, slow_task)
        waits = [s.resumed_at - killed for s in streams if s.resumed_at is not None]
        slow_calls = await self.calls(client, question(tag, "slow"))
        print(
            f"SIGKILL: {len(waits)}/{n} runs resumed on the other replica, slowest after "
            f"{max(waits or [float('nan')]):.2f} s; {sum(s.clean() for s in streams)}/{n} clean; "
            f"slow live run (node > lease) model calls: {slow_calls}, finished "
            f"{slow.events[-1][1] if slow.events else None}"
        )
        b.stop()

    async def load(self, client: httpx.AsyncClient) -> None:
        a = self.replica("load-a", "slow-20-50")
        b = self.replica("load-b", "slow-20-50")
        a.wait_ready()
        b.wait_ready()
        n = self.args.load_streams
        tag = f"load-{run_tag()}"  # new questions: a cached answer streams no tokens
        bases = [a.url, b.url]
        streams = await asyncio.gather(
            *(self.start(client, bases[i % 2], question(tag, i)) for i in range(n))
        )
        await asyncio.gather(
            *(s.follow(client, [bases[i % 2], bases[1 - i % 2]]) for i, s in enumerate(streams))
        )
        gaps = sorted(
            later - earlier
            for s in streams
            for (earlier, later), (_, name) in zip(
                zip(s.times, s.times[1:], strict=False), s.events[1:], strict=True
            )
            if name == "token"
        )
        p99 = gaps[int(len(gaps) * 0.99)] * 1000 if gaps else float("nan")
        failed = [s for s in streams if s.error or not s.clean()]
        reasons = Counter(
            s.error or f"ended {s.events[-1][1] if s.events else 'empty'}" for s in failed
        )
        print(
            f"load: {n} streams over 2 replicas, p99 gap between tokens {p99:.0f} ms, "
            f"errors {len(failed)} {dict(reasons) if reasons else ''}".rstrip()
        )
        a.stop()
        b.stop()

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.llm.terminate()
        self.llm.wait(10)


async def run(args: argparse.Namespace, work: Path, chroma_url: str) -> None:
    bench = Bench(args, work, chroma_url)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    try:
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            for phase in args.phases.split(","):
                await getattr(bench, phase)(client)
    finally:
        bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--drain-streams", type=int, default=50)
    parser.add_argument("--kill-streams", type=int, default=20)
    parser.add_argument("--load-streams", type=int, default=400)
    parser.add_argument("--phases", default="drain,kill,load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, chroma_server(Path(tmp)) as chroma:
        work = Path(tmp)
        # Replicas share a Chroma server: an embedded data dir has one owner (cli.datadir).
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "KEEL_DATA_DIR": str(work / "data"),
            "KEEL_CHROMA_URL": chroma.url,
            "KEEL_REDIS_URL": args.redis_url,
        }
        corpus = str(ROOT / "samples" / "corpus")
        ingest = [sys.executable, "-m", "cli.main", "ingest", "--quiet", corpus]
        subprocess.run(ingest, check=True, env=env, cwd=ROOT)
        asyncio.run(run(args, work, chroma.url))


def chroma_server(work: Path) -> ServerProcess:
    """A Chroma server on loopback, the vector store both replicas read."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "chroma"), "run", "--path", str(work / "chroma")]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    return ServerProcess(
        command, port, dict(os.environ), work / "chroma.log", ready_path="/api/v2/heartbeat"
    )


if __name__ == "__main__":
    main()
