"""Probes and drain on two real replicas sharing Postgres: SIGTERM drains (readiness fails at
once, no new claims, runs finish or are handed back, streams end with a retry hint), clients
finish on the other replica by Last-Event-ID with no gap or duplicate."""

import concurrent.futures
import json
import os
import shutil
import signal
import time

import httpx
import pytest
from httpx_sse import connect_sse

from tests.integration.test_runs import llm_env, new_thread

STREAMS = 8


def follow(client: httpx.Client, bases: list[str], tid: str, rid: str) -> tuple[list, list[int]]:
    """Follows a run to its terminal event, moving to the next replica whenever a stream ends
    early; returns the events and the retry hints seen."""
    events: list[tuple[int, str, dict]] = []
    hints: list[int] = []
    for base in bases:
        last = f"{rid}:{events[-1][0]}" if events else None
        headers = {"Last-Event-ID": last} if last else {}
        url = f"{base}/v1/threads/{tid}/runs/{rid}/stream"
        with connect_sse(client, "GET", url, headers=headers) as source:
            for sse in source.iter_sse():
                if sse.retry is not None:
                    hints.append(sse.retry)
                if sse.event in ("message", "") and not sse.data:
                    continue
                events.append((int(sse.id.split(":")[1]), sse.event, json.loads(sse.data)))
        if events and events[-1][1] in ("run.finished", "run.error"):
            break
    return events, hints


def start_runs(client: httpx.Client, base: str, tag: str) -> list[tuple[str, str]]:
    runs = []
    for n in range(STREAMS):
        tid = new_thread(client, base)
        body = {"message": f"{tag} run {n}: how are duplicates avoided?"}
        rid = client.post(f"{base}/v1/threads/{tid}/runs", json=body).json()["run_id"]
        runs.append((tid, rid))
    return runs


def wait_first_token(client: httpx.Client, base: str, tid: str, rid: str) -> None:
    with connect_sse(client, "GET", f"{base}/v1/threads/{tid}/runs/{rid}/stream") as source:
        for sse in source.iter_sse():
            if sse.event == "token":
                return


@pytest.fixture
def pair(start_server, postgres_url, data_dir, fake_llm_url, tmp_path):
    def make(drain_s: str, model: str):  # type: ignore[no-untyped-def]
        other = tmp_path / "replica-b"
        shutil.copytree(data_dir, other)
        extra = {"KEEL_DRAIN_TIMEOUT": drain_s, "KEEL_RUN_LEASE_S": "2"}
        a = start_server(**llm_env(postgres_url, data_dir, fake_llm_url, model, **extra))
        b = start_server(**llm_env(postgres_url, other, fake_llm_url, model, **extra))
        return a, b

    return make


def test_probes(pair):
    a, _ = pair("5", "slow-1-3")
    for path in ("/livez", "/startupz", "/readyz", "/health", "/ready"):
        response = httpx.get(a.url + path)
        assert response.status_code == 200, (path, response.text)
    assert httpx.get(a.url + "/readyz").json()["checks"] == {"database": "ok", "cache": "ok"}


@pytest.mark.parametrize("drain_s", ["20", "0.5"], ids=["finish", "hand-back"])
def test_sigterm_drains_and_streams_finish_on_the_other_replica(pair, fake_llm_url, drain_s):
    a, b = pair(drain_s, "slow-60-40")
    tag = f"drain-{drain_s}-{time.time_ns()}"
    with httpx.Client(timeout=60) as client:
        runs = start_runs(client, a.url, tag)
        wait_first_token(client, a.url, *runs[0])
        with concurrent.futures.ThreadPoolExecutor(STREAMS + 1) as pool:
            futures = [pool.submit(follow, client, [a.url, b.url], t, r) for t, r in runs]
            time.sleep(0.3)
            sent = time.monotonic()
            os.killpg(a.proc.pid, signal.SIGTERM)
            ready = client.get(a.url + "/readyz")
            assert ready.status_code == 503 and ready.json()["checks"] == {"drain": "draining"}
            # A run submitted while draining is claimed by the other replica.
            late = start_runs(client, a.url, tag + "-late")[:1]
            results = [f.result() for f in futures]
            a.proc.wait(30)
            drained_s = time.monotonic() - sent
        late_events, _ = follow(client, [b.url], *late[0])
    assert late_events[-1][1] == "run.finished"
    assert drained_s < float(drain_s) + 10
    resumed = 0
    for events, hints in results:
        seqs = [seq for seq, _, _ in events]
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
        names = [name for _, name, _ in events]
        assert names[-1] == "run.finished" and "run.error" not in names
        resumed += "run.resumed" in names
        if "run.resumed" in names:
            assert hints == [1000]
    calls = httpx.get(fake_llm_url.removesuffix("/v1") + "/calls", params={"contains": tag}).json()
    if drain_s == "20":
        # Each model-calling node asked once per run: no node ran twice.
        assert resumed == 0 and set(calls) == {1} and len(calls) >= STREAMS + 1
    else:
        assert resumed > 0
