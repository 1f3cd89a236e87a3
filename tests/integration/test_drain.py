"""SIGTERM drain on real replicas sharing Postgres: /readyz turns 503 at once, running runs
finish on the draining replica (no node runs twice), and past the drain timeout streams end
with a `retry:` hint and resume exactly, by Last-Event-ID, on the other replica."""

import concurrent.futures
import json
import os
import shutil
import signal
import time

import httpx
from httpx_sse import connect_sse

from tests.fake_llm import STREAM_ONLY

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"


def replicas(start_servers, postgres_url, data_dir, fake_llm_url, tmp_path, model, **extra):
    other = tmp_path / "replica-b"
    shutil.copytree(data_dir, other)
    env = {
        "KEEL_DATABASE_URL": postgres_url,
        "KEEL_LLM_BASE_URL": fake_llm_url,
        **STREAM_ONLY,
        "KEEL_LLM_API_KEY": "test",
        "KEEL_LLM_MODEL": model,
        "KEEL_RUN_HEARTBEAT_S": "0.2",
        **extra,
    }
    return start_servers(
        {**env, "KEEL_DATA_DIR": str(data_dir)}, {**env, "KEEL_DATA_DIR": str(other)}
    )


def stream(base: str, tid: str, started: concurrent.futures.Future | None = None) -> tuple:
    """A run's events as (id, event, data), and the raw SSE fields the server sent last."""
    body = {"message": QUESTION, "context": {"use_cache": False}}
    events, retry = [], None
    with httpx.Client(timeout=60) as client:
        with connect_sse(client, "POST", f"{base}/v1/threads/{tid}/runs/stream", json=body) as src:
            for sse in src.iter_sse():
                if sse.retry is not None:
                    retry = sse.retry
                if sse.data:
                    events.append((sse.id, sse.event, json.loads(sse.data)))
                if started is not None and sse.event == "token" and not started.done():
                    started.set_result(True)
    return events, retry


def calls(llm_url: str) -> dict[str, int]:
    return httpx.get(llm_url.removesuffix("/v1") + "/calls").json()


def test_sigterm_lets_running_runs_finish_and_refuses_traffic(
    start_servers, postgres_url, data_dir, fake_llm_url, tmp_path
):
    model = f"slow-60-40+drain{time.time_ns()}"  # ~2.4 s of tokens per run
    a, b = replicas(start_servers, postgres_url, data_dir, fake_llm_url, tmp_path, model)
    for probe in ("/livez", "/startupz", "/readyz"):
        assert httpx.get(f"{a.url}{probe}").status_code == 200, probe
    with httpx.Client(timeout=30) as client:
        tids = [client.post(f"{a.url}/v1/threads").json()["thread_id"] for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        firsts = [concurrent.futures.Future() for _ in tids]
        runs = [pool.submit(stream, a.url, t, f) for t, f in zip(tids, firsts, strict=True)]
        concurrent.futures.wait(firsts, timeout=30)
        sigterm = time.monotonic()
        os.kill(a.proc.pid, signal.SIGTERM)
        for _ in range(50):  # the signal is handled on the server's next loop turn
            ready = httpx.get(f"{a.url}/readyz", timeout=10)
            if ready.status_code == 503:
                break
            time.sleep(0.1)
        assert ready.status_code == 503 and ready.json()["checks"]["draining"] == "yes"
        assert httpx.get(f"{b.url}/readyz").status_code == 200
        results = [r.result(timeout=60) for r in runs]
    a.proc.wait(30)
    drained_s = time.monotonic() - sigterm
    for events, _ in results:
        assert events[-1][1] == "run.finished", events[-3:]
        seqs = [int(i.split(":")[1]) for i, _, _ in events]
        assert seqs == list(range(1, len(events) + 1))
    assert calls(fake_llm_url)[model] == 8  # no generate ran twice
    assert drained_s < 20, drained_s


def test_past_the_drain_timeout_streams_resume_on_another_replica(
    start_servers, postgres_url, data_dir, fake_llm_url, tmp_path
):
    model = f"slow-100-40+late{time.time_ns()}"  # ~4 s of tokens per run
    a, b = replicas(
        start_servers,
        postgres_url,
        data_dir,
        fake_llm_url,
        tmp_path,
        model,
        KEEL_DRAIN_TIMEOUT="0.5",
    )
    with httpx.Client(timeout=30) as client:
        tids = [client.post(f"{a.url}/v1/threads").json()["thread_id"] for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        firsts = [concurrent.futures.Future() for _ in tids]
        runs = [pool.submit(stream, a.url, t, f) for t, f in zip(tids, firsts, strict=True)]
        concurrent.futures.wait(firsts, timeout=30)
        os.kill(a.proc.pid, signal.SIGTERM)
        cut = [r.result(timeout=60) for r in runs]
    with httpx.Client(timeout=60) as client:
        for tid, (events, retry) in zip(tids, cut, strict=True):
            assert events[-1][1] not in ("run.finished", "run.error") and retry == 1000
            run_id, last = events[-1][0].split(":")
            url = f"{b.url}/v1/threads/{tid}/runs/{run_id}/stream"
            with connect_sse(client, "GET", url, headers={"Last-Event-ID": events[-1][0]}) as src:
                rest = [(e.id, e.event, json.loads(e.data)) for e in src.iter_sse()]
            whole = events + rest
            assert whole[-1][1] == "run.finished", whole[-3:]
            seqs = [int(i.split(":")[1]) for i, _, _ in whole]
            assert seqs == list(range(1, len(whole) + 1)), "a gap or a duplicate"
            assert int(last) < len(whole)
