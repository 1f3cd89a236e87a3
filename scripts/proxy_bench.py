"""The shipped nginx configuration for real: Debian's nginx runs deploy/nginx/nginx.conf (ports
rewritten to loopback) in front of two `keel serve` replicas sharing Postgres, Redis and a
Chroma server, with the fake LLM.
Run: `python -m scripts.proxy_bench --database-url postgresql://... --redis-url redis://...
[--runs 50] [--drain-streams 20]`. Numbers on a shared machine are upper bounds.

Prints: the p50 time to a streamed answer's first token through nginx and direct to a replica
(runs alternate between the two); then a replica SIGTERMed mid-stream (drain timeout 1 s, so
runs are handed over) and the streams that completed through nginx by Last-Event-ID, with no
gap or duplicate, of those started.
"""

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from cli.process import ServerProcess, free_port
from scripts.replica_bench import Stream, chroma_server, question, run_tag

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MODEL = "slow-50-40"  # 40 words, 50 ms apart: 2 s of tokens


def nginx_conf(work: Path, listen: int, replicas: list[int]) -> str:
    """deploy/nginx/nginx.conf with its upstreams and port on loopback, run in the foreground
    with its files under `work`."""
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    upstreams = re.findall(r"server (api-\d):8000", conf)
    for name, port in zip(upstreams, replicas, strict=True):
        conf = conf.replace(f"server {name}:8000", f"server 127.0.0.1:{port}")
    conf = conf.replace("listen 8000;", f"listen 127.0.0.1:{listen};")
    # Workers as this user (root in CI), so that they reach `work`; temp files there too.
    user = "user root;\n" if os.geteuid() == 0 else ""
    head = f"{user}daemon off;\npid {work}/nginx.pid;\nerror_log {work}/error.log warn;\n"
    temp = "".join(
        f"    {kind}_temp_path {work}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return head + conf.replace("http {\n", f"http {{\n    access_log off;\n{temp}", 1)


class Stack:
    """nginx, two keel replicas, a Chroma server and the fake LLM; the sample corpus ingested."""

    def __init__(self, work: Path, database_url: str, redis_url: str, **env: str):
        self.work = work
        self.exit = contextlib.ExitStack()
        self.llm_port = free_port()
        self.llm = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_llm", str(self.llm_port)], cwd=ROOT
        )
        self.exit.callback(self._stop_llm)
        try:
            chroma = self.exit.enter_context(chroma_server(work))
            self.env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
                "PYTHONPATH": str(ROOT),
                "KEEL_DATA_DIR": str(work / "data"),
                "KEEL_DATABASE_URL": database_url,
                "KEEL_REDIS_URL": redis_url,
                "KEEL_CHROMA_URL": chroma.url,
                "KEEL_LLM_BASE_URL": f"http://127.0.0.1:{self.llm_port}/v1",
                "KEEL_LLM_API_KEY": "bench",
                "KEEL_LLM_MODEL": MODEL,
                "KEEL_REPLICAS": "2",
                "KEEL_RUN_HEARTBEAT_S": "0.2",
                # The fake model's words cite nothing: the grounding check would hold and replace
                # them, and this bench is about how a model's tokens cross the proxy.
                "KEEL_GROUNDING_CHECK": "false",
                **env,
            }
            corpus = str(ROOT / "samples" / "corpus")
            ingest = [sys.executable, "-m", "cli.main", "ingest", "--quiet", corpus]
            subprocess.run(ingest, check=True, env=self.env, cwd=ROOT, capture_output=True)
            self.replicas = [self._replica(name) for name in ("a", "b")]
            for replica in self.replicas:  # started side by side
                replica.wait_ready()
            port = free_port()
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (work / kind).mkdir(exist_ok=True)
            conf = work / "nginx.conf"
            conf.write_text(nginx_conf(work, port, [r.port for r in self.replicas]))
            command = [NGINX, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")]
            self.nginx = self.exit.enter_context(
                ServerProcess(command, port, dict(os.environ), work / "nginx.log", "/readyz")
            )
        except BaseException:
            self.exit.close()
            raise

    def _replica(self, name: str) -> ServerProcess:
        port = free_port()
        env = {**self.env, "KEEL_PORT": str(port), "KEEL_HOST": "127.0.0.1"}
        command = [sys.executable, "-m", "cli.main", "serve"]
        log = self.work / f"keel-{name}.log"
        server = ServerProcess(command, port, env, log, "/readyz", cwd=ROOT, wait=False)
        return self.exit.enter_context(server)

    def _stop_llm(self) -> None:
        self.llm.terminate()
        self.llm.wait(10)

    def close(self) -> None:
        self.exit.close()


@contextlib.contextmanager
def stack(database_url: str, redis_url: str, **env: str) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory() as tmp:
        started = Stack(Path(tmp), database_url, redis_url, **env)
        try:
            yield started
        finally:
            started.close()


async def first_token_s(client: httpx.AsyncClient, base: str, question: str) -> float:
    """Seconds from sending a streamed run to its first token event."""
    tid = (await client.post(f"{base}/v1/threads")).raise_for_status().json()["thread_id"]
    body = {"message": question, "context": {"use_cache": False}}
    started = time.perf_counter()
    async with aconnect_sse(
        client, "POST", f"{base}/v1/threads/{tid}/runs/stream", json=body
    ) as source:
        async for sse in source.aiter_sse():
            if sse.event == "token":
                return time.perf_counter() - started
    raise AssertionError("the run streamed no token")


async def first_tokens(
    client: httpx.AsyncClient, proxy: str, direct: str, runs: int
) -> tuple[float, float]:
    """p50 first-token seconds through the proxy and direct, runs alternating between them."""
    tag = run_tag()
    via: dict[str, list[float]] = {proxy: [], direct: []}
    for i in range(runs):
        for base in (proxy, direct) if i % 2 else (direct, proxy):
            via[base].append(
                await first_token_s(client, base, question(tag, f"{i}.{len(via[base])}"))
            )
    return statistics.median(via[proxy]), statistics.median(via[direct])


async def drain_through_proxy(client: httpx.AsyncClient, stack: Stack, n: int) -> list[Stream]:
    """`n` runs followed through nginx; one replica SIGTERMed once half stream tokens. Returns
    the streams (each followed through nginx again, by Last-Event-ID, after a cut)."""
    proxy, tag = stack.nginx.url, run_tag()
    streams = []
    for i in range(n):
        tid = (await client.post(f"{proxy}/v1/threads")).raise_for_status().json()["thread_id"]
        body = {"message": question(tag, i), "context": {"use_cache": False}}
        run = await client.post(f"{proxy}/v1/threads/{tid}/runs", json=body)
        streams.append(Stream(tid, run.raise_for_status().json()["run_id"]))
    tasks = [asyncio.create_task(s.follow(client, [proxy] * 5)) for s in streams]
    deadline = time.monotonic() + 60
    while sum(any(e == "token" for _, e in s.events) for s in streams) < n // 2:
        if time.monotonic() > deadline:
            raise AssertionError("the runs never streamed")
        await asyncio.sleep(0.02)
    victim = stack.replicas[0]
    os.killpg(victim.proc.pid, signal.SIGTERM)
    await asyncio.gather(*tasks)
    return streams


async def bench(args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    with stack(args.database_url, args.redis_url, KEEL_DRAIN_TIMEOUT="1") as s:
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            proxy, direct = await first_tokens(client, s.nginx.url, s.replicas[1].url, args.runs)
            print(
                f"first token p50 over {args.runs} runs: through nginx {proxy * 1000:.0f} ms, "
                f"direct {direct * 1000:.0f} ms"
            )
            streams = await drain_through_proxy(client, s, args.drain_streams)
            clean = sum(stream.clean() for stream in streams)
            print(
                f"drain through nginx: {clean}/{len(streams)} streams completed by Last-Event-ID "
                "with no gap or duplicate"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--drain-streams", type=int, default=20)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
