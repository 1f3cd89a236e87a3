"""The shipped nginx configuration for real (scripts/proxy_bench.py's stack): Debian's nginx runs
deploy/nginx/nginx.conf, ports rewritten to loopback, in front of two `keel serve` replicas on
shared Postgres, Redis and a Chroma server. A streamed answer arrives token by token, a 60 MB
upload reaches keel and a 70 MB one gets keel's JSON 413, a replica SIGTERMed mid-stream is
drained and its streams resume through nginx without a gap, a stopped replica is out of
rotation, and the benchmark's smoke prints sane numbers."""

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import connect_sse

from graph.settings import Settings
from scripts.proxy_bench import Stack, drain_through_proxy, stack
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

MB = 1_000_000


@pytest.fixture(scope="module")
def proxied(postgres_url: str, redis_url: str) -> Iterator[Stack]:
    with stack(postgres_url, redis_url, KEEL_DRAIN_TIMEOUT="1") as started:
        yield started


def token_arrivals(base: str) -> list[float]:
    """When each token of a streamed answer (scripts.proxy_bench.MODEL) reached the client."""
    body = {"message": "How does keel avoid duplicate chunks?", "context": {"use_cache": False}}
    with httpx.Client(base_url=base, timeout=60) as http:
        tid = http.post("/v1/threads").raise_for_status().json()["thread_id"]
        with connect_sse(http, "POST", f"/v1/threads/{tid}/runs/stream", json=body) as source:
            return [time.monotonic() for sse in source.iter_sse() if sse.event == "token"]


def test_a_streamed_answer_arrives_through_nginx_token_by_token(proxied: Stack):
    through = token_arrivals(proxied.nginx.url)
    direct = token_arrivals(proxied.replicas[1].url)
    # Buffered (nginx's default), a short answer lands in one piece at its end; unbuffered, it
    # lands as the model writes it (2 s; the output guard holds back its last 48 characters).
    assert len(through) == len(direct) >= 10
    spread = through[-1] - through[0]
    assert spread >= 0.5 and spread >= 0.7 * (direct[-1] - direct[0]), (through, direct)


def test_uploads_up_to_keels_limit_reach_keel_and_larger_get_its_json_413(proxied: Stack):
    limit = Settings().max_body_bytes
    assert 60 * MB < limit < 70 * MB
    with httpx.Client(timeout=120) as http:
        # An unsupported file type: nginx passes the 60 MB, keel answers (not nginx's 413).
        files = {"files": ("big.bin", b"\0" * (60 * MB))}
        passed = http.post(f"{proxied.nginx.url}/v1/documents", files=files)
        assert passed.status_code == 415, passed.text[:300]
        assert passed.json()["error"]["code"] == "unsupported_file_type"
        files = {"files": ("big.txt", b"x" * (70 * MB))}
        through = http.post(f"{proxied.nginx.url}/v1/documents", files=files)
        direct = http.post(f"{proxied.replicas[1].url}/v1/documents", files=files)
    assert through.status_code == direct.status_code == 413
    assert through.headers["content-type"] == direct.headers["content-type"] == "application/json"
    assert through.json() == direct.json()
    assert through.json()["error"]["code"] == "payload_too_large"


def test_a_drained_replicas_streams_resume_through_nginx_and_it_leaves_rotation(proxied: Stack):
    async def drain():
        async with httpx.AsyncClient(timeout=120) as client:
            return await drain_through_proxy(client, proxied, 8)

    streams = asyncio.run(drain())
    for stream in streams:  # every event once, in order, through run.finished
        assert stream.clean(), (stream.error, stream.events[-3:])
    stopped = proxied.replicas[0]
    assert stopped.proc.wait(30) == 0
    with httpx.Client(base_url=proxied.nginx.url, timeout=30) as http:
        for _ in range(10):  # every request lands on the replica left, none fails
            assert http.get("/readyz").status_code == 200
            assert http.post("/v1/threads").status_code in (200, 201)


def test_the_proxy_bench_prints_first_token_and_drain_numbers(postgres_url: str, redis_url: str):
    command = [sys.executable, "-m", "scripts.proxy_bench", "--database-url", postgres_url]
    command += ["--redis-url", redis_url, "--runs", "4", "--drain-streams", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    latency, drained = done.stdout.strip().splitlines()[-2:]
    numbers = re.fullmatch(
        r"first token p50 over 4 runs: through nginx (\d+) ms, direct (\d+) ms", latency
    )
    assert numbers and all(0 < int(n) < 30_000 for n in numbers.groups()), latency
    assert drained == (
        "drain through nginx: 4/4 streams completed by Last-Event-ID with no gap or duplicate"
    )
