"""`keel serve` with `KEEL_WORKERS=2`: worker processes share one port and the production
stores, a SIGTERM to the server (as an orchestrator sends it) drains every worker, and without
the shared stores the command refuses to start."""

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import ROOT
from tests.fake_llm import STREAM_ONLY
from tests.integration.test_drain import stream


def test_workers_need_the_shared_stores(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env |= {"KEEL_DATA_DIR": str(tmp_path / "data"), "KEEL_WORKERS": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--port", "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    message = done.stderr.strip()
    assert message.startswith("keel: KEEL_WORKERS=2 needs the shared stores"), message
    for name in ("KEEL_DATABASE_URL", "KEEL_CHROMA_URL", "KEEL_REDIS_URL"):
        assert name in message


def test_two_workers_serve_one_port_and_drain_on_sigterm(
    start_server, postgres_url, redis_url, chroma_url, fake_llm_url, tmp_path
):
    env = {
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_DATABASE_URL": postgres_url,
        "KEEL_REDIS_URL": redis_url,
        "KEEL_CHROMA_URL": chroma_url,
        "KEEL_LLM_BASE_URL": fake_llm_url,
        **STREAM_ONLY,
        "KEEL_LLM_API_KEY": "test",
        "KEEL_LLM_MODEL": f"slow-40-40+workers{time.time_ns()}",  # ~1.6 s of tokens per run
        "KEEL_WORKERS": "2",
    }
    ingest = [sys.executable, "-m", "cli.main", "ingest", str(ROOT / "samples" / "corpus")]
    done = subprocess.run(ingest, env={**os.environ, **env}, cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr
    server = start_server(**env)
    children = psutil.Process(server.proc.pid).children()
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == 2, [c.cmdline() for c in children]
    # The server answers once one worker listens; a worker listens after its startup, and the
    # kernel gives a connection only to sockets that listen: wait for both (CI once saw 16 / 0).
    deadline = time.monotonic() + 60
    while not all(listening(w, server.port) for w in workers):
        assert time.monotonic() < deadline, "the second worker never listened"
        time.sleep(0.1)
    with httpx.Client(timeout=30) as client:
        tids = [client.post(f"{server.url}/v1/threads").json()["thread_id"] for _ in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        firsts = [concurrent.futures.Future() for _ in tids]
        runs = [pool.submit(stream, server.url, t, f) for t, f in zip(tids, firsts, strict=True)]
        concurrent.futures.wait(firsts, timeout=30)
        # Each stream has its own connection, and the kernel spread them over the workers (each
        # listens on its own socket of the port): 16 on one worker has odds of 1 in 2^15.
        held = [
            sum(
                c.laddr.port == server.port and c.status == psutil.CONN_ESTABLISHED
                for c in w.net_connections("tcp")
            )
            for w in workers
        ]
        os.kill(server.proc.pid, signal.SIGTERM)  # the supervisor only, as Kubernetes does
        results = [r.result(timeout=60)[0] for r in runs]
    assert server.proc.wait(30) == 0
    for events in results:  # every run finished on its worker, every event once, in order
        assert events[-1][1] == "run.finished", events[-3:]
        assert [int(i.split(":")[1]) for i, _, _ in events] == list(range(1, len(events) + 1))
    assert not any(w.is_running() for w in workers)
    assert sum(held) == 16 and min(held) > 0, held
    log = server.log.read_text()
    assert log.count("Application startup complete") == 2
    assert log.count("SIGTERM: draining") == 2


def listening(process: psutil.Process, port: int) -> bool:
    return any(
        c.laddr.port == port and c.status == psutil.CONN_LISTEN
        for c in process.net_connections("tcp")
    )
