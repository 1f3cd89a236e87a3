"""Runs that survive anything, against real servers on one Postgres and real SSE clients:
reconnects on another replica, background runs, cancel, multitask strategies, kill -9, retention."""

import concurrent.futures
import json
import os
import random
import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse

from tests.fake_llm import STREAM_ONLY

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"


def llm_env(
    postgres_url: str, data_dir: Path, fake_llm_url: str, model: str, **extra: str
) -> dict[str, str]:
    return {
        "KEEL_DATABASE_URL": postgres_url,
        "KEEL_DATA_DIR": str(data_dir),
        "KEEL_LLM_BASE_URL": fake_llm_url,
        **STREAM_ONLY,
        "KEEL_LLM_API_KEY": "test",
        "KEEL_LLM_MODEL": model,
        "KEEL_RUN_HEARTBEAT_S": "0.2",
        **extra,
    }


def new_thread(client: httpx.Client, base: str) -> str:
    return client.post(f"{base}/v1/threads").raise_for_status().json()["thread_id"]


def events_of(source) -> list[tuple[str, str, dict]]:
    return [(e.id, e.event, json.loads(e.data)) for e in source.iter_sse()]


def replay(client: httpx.Client, base: str, tid: str, rid: str, last_id: str | None = None) -> list:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with connect_sse(
        client, "GET", f"{base}/v1/threads/{tid}/runs/{rid}/stream", headers=headers
    ) as source:
        assert source.response.status_code == 200
        return events_of(source)


def user_messages(client: httpx.Client, base: str, tid: str) -> list[str]:
    state = client.get(f"{base}/v1/threads/{tid}").json()
    return [m["content"] for m in state["messages"] if m["role"] == "user"]


@pytest.fixture
def replicas(start_servers, postgres_url, data_dir, fake_llm_url, tmp_path):
    """Two replicas on one Postgres, each with its own embedded copy of the corpus."""
    import shutil

    other = tmp_path / "replica-b"
    shutil.copytree(data_dir, other)
    return start_servers(
        llm_env(postgres_url, data_dir, fake_llm_url, "slow-30-40"),
        llm_env(postgres_url, other, fake_llm_url, "slow-30-40"),
    )


def test_reconnect_at_random_positions_on_either_replica(replicas):
    a, b = replicas
    rng = random.Random(7)
    with httpx.Client(timeout=60) as client:
        tid = new_thread(client, a.url)
        for attempt in range(20):
            body = {"message": f"{QUESTION} ({attempt})", "context": {"use_cache": False}}
            seen: list = []
            cut = rng.randint(1, 45)
            with connect_sse(
                client, "POST", f"{a.url}/v1/threads/{tid}/runs/stream", json=body
            ) as source:
                for event in source.iter_sse():
                    seen.append((event.id, event.event, json.loads(event.data)))
                    if len(seen) == cut or event.event in ("run.finished", "run.error"):
                        break  # drop the connection mid-run
            rid = seen[0][2]["run_id"]
            other = b if attempt % 2 == 0 else a
            rest = replay(client, other.url, tid, rid, last_id=seen[-1][0])
            whole = replay(client, a.url, tid, rid)
            assert seen + rest == whole, f"attempt {attempt}: cut at {cut}"
            assert whole[-1][1] == "run.finished"
            assert [int(i.split(":")[1]) for i, _, _ in whole] == list(range(1, len(whole) + 1))
            assert sum(1 for _, e, _ in whole if e == "token") == 40


def test_background_run_status_wait_and_bad_last_event_id(replicas):
    a, b = replicas
    with httpx.Client(timeout=60) as client:
        tid = new_thread(client, a.url)
        created = client.post(f"{a.url}/v1/threads/{tid}/runs", json={"message": QUESTION})
        assert created.status_code == 202
        run = created.json()
        assert run["status"] in ("pending", "running")
        result = client.get(f"{b.url}/v1/threads/{tid}/runs/{run['run_id']}/wait").json()
        assert result["answer"].startswith("word0") and result["citations"][0]["n"] == 1
        assert (
            client.get(f"{b.url}/v1/threads/{tid}/runs/{run['run_id']}").json()["status"]
            == "succeeded"
        )
        url = f"{b.url}/v1/threads/{tid}/runs/{run['run_id']}/stream"
        for bad in ("nonsense", f"{run['run_id']}:x", "otherrun:3", f"{run['run_id']}:-1"):
            response = client.get(url, headers={"Last-Event-ID": bad})
            assert (
                response.status_code == 400
                and response.json()["error"]["code"] == "invalid_last_event_id"
            )
        assert client.get(f"{b.url}/v1/threads/{tid}/runs/nope/stream").status_code == 404
        runs = client.get(f"{a.url}/v1/threads/{tid}/runs").json()
        assert [r["run_id"] for r in runs] == [run["run_id"]]


def test_background_runs_spend_the_daily_token_quota(
    start_server, postgres_url, data_dir, fake_llm_url
):
    """Usage is counted when a run ends, not when a client reads it: a background run that
    nobody waits for still spends the tenant's quota (a fake answer costs 100 + 5 tokens)."""
    env = llm_env(postgres_url, data_dir, fake_llm_url, "slow-1-5", KEEL_TOKENS_PER_DAY="100")
    server = start_server(**env)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        tid = new_thread(client, server.url)
        run = client.post(f"/v1/threads/{tid}/runs", json={"message": QUESTION}).json()
        deadline = time.monotonic() + 30
        while client.get(f"/v1/threads/{tid}/runs/{run['run_id']}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        refused = client.post(f"/v1/threads/{tid}/runs", json={"message": QUESTION})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert int(refused.headers["retry-after"]) > 0


def test_cancel_during_token_streaming_from_the_other_replica(replicas):
    a, b = replicas
    with httpx.Client(timeout=60) as client:
        tid = new_thread(client, a.url)
        events = []
        with connect_sse(
            client,
            "POST",
            f"{a.url}/v1/threads/{tid}/runs/stream",
            json={"message": "How large are chunks?"},
        ) as source:
            for event in source.iter_sse():
                events.append((event.event, json.loads(event.data)))
                if sum(1 for e, _ in events if e == "token") == 5:
                    rid = events[0][1]["run_id"]
                    cancelled = client.post(f"{b.url}/v1/threads/{tid}/runs/{rid}/cancel")
                    assert cancelled.status_code == 202
                    started = time.monotonic()
        assert events[-1] == (
            "run.error",
            {"code": "cancelled", "retryable": False, "message": "cancelled"},
        )
        assert time.monotonic() - started < 3
        assert sum(1 for e, _ in events if e == "token") < 40
        assert client.get(f"{a.url}/v1/threads/{tid}/runs/{rid}").json()["status"] == "cancelled"
        state = client.get(f"{a.url}/v1/threads/{tid}").json()
        assert [m["role"] for m in state["messages"]] == ["user"]  # no half-written answer
        follow = client.post(
            f"{b.url}/v1/threads/{tid}/runs/wait", json={"message": "Do chunks overlap?"}
        )
        assert follow.status_code == 200
        state = client.get(f"{a.url}/v1/threads/{tid}").json()
        assert [m["role"] for m in state["messages"]] == ["user", "user", "assistant"]


def _race(a, b, tid: str, strategy: str) -> tuple[httpx.Response, httpx.Response]:
    """Run 1 on replica A; once it streams tokens, run 2 on replica B with `strategy`."""
    with httpx.Client(timeout=60) as client:
        first = client.post(
            f"{a.url}/v1/threads/{tid}/runs", json={"message": "first question"}
        ).json()
        rid = first["run_id"]
        # Wait for run 1's first token: it then has ~39 more to stream (1.2 s at least).
        with connect_sse(client, "GET", f"{a.url}/v1/threads/{tid}/runs/{rid}/stream") as source:
            next(e for e in source.iter_sse() if e.event == "token")
        second = client.post(
            f"{b.url}/v1/threads/{tid}/runs",
            json={"message": "second question", "multitask_strategy": strategy},
        )
        first_result = client.get(f"{a.url}/v1/threads/{tid}/runs/{rid}/wait")
        return first_result, second


@pytest.mark.parametrize("strategy", ["reject", "enqueue", "interrupt", "rollback"])
def test_multitask_strategies_across_replicas(replicas, strategy):
    a, b = replicas
    with httpx.Client(timeout=60) as client:
        tid = new_thread(client, a.url)
        first, second = _race(a, b, tid, strategy)
        if strategy == "reject":
            assert second.status_code == 409 and second.json()["error"]["code"] == "thread_busy"
            assert first.status_code == 200
            assert user_messages(client, a.url, tid) == ["first question"]
            return
        assert second.status_code == 202
        rid2 = second.json()["run_id"]
        result2 = client.get(f"{a.url}/v1/threads/{tid}/runs/{rid2}/wait")
        assert result2.status_code == 200
        messages = client.get(f"{a.url}/v1/threads/{tid}").json()["messages"]
        roles = [(m["role"], m["content"][:15]) for m in messages]
    if strategy == "enqueue":
        assert first.status_code == 200
        assert [r for r, _ in roles] == ["user", "assistant", "user", "assistant"]
    elif strategy == "interrupt":  # partial progress kept: the first question, no answer to it
        assert first.status_code == 409 and first.json()["error"]["code"] == "cancelled"
        assert roles[0] == ("user", "first question") and [r for r, _ in roles] == [
            "user",
            "user",
            "assistant",
        ]
    else:  # rollback: the first run's checkpoints are gone
        assert first.status_code == 409 and first.json()["error"]["code"] == "cancelled"
        assert [r for r, _ in roles] == ["user", "assistant"] and roles[0][1] == "second question"


def test_concurrent_submissions_on_two_replicas_admit_exactly_one(replicas):
    a, b = replicas
    with httpx.Client(timeout=60) as client:
        tid = new_thread(client, a.url)

        def post(base: str) -> int:
            return client.post(
                f"{base}/v1/threads/{tid}/runs", json={"message": "race"}
            ).status_code

        for _ in range(5):
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                codes = sorted(pool.map(post, [a.url, b.url]))
            assert codes == [202, 409]
            for run in client.get(f"{a.url}/v1/threads/{tid}/runs").json():
                client.get(f"{a.url}/v1/threads/{tid}/runs/{run['run_id']}/wait")


@pytest.mark.parametrize("auto", [True, False])
def test_kill_9_mid_run_then_resume(start_server, postgres_url, data_dir, fake_llm_url, auto):
    extra = {
        "KEEL_RUN_LEASE_S": "2",
        "KEEL_RUN_MAX_ATTEMPTS": "3" if auto else "1",
        "KEEL_DURABILITY": "sync",
    }
    env = llm_env(postgres_url, data_dir, fake_llm_url, "slow-50-60", **extra)
    first = start_server(**env)
    with httpx.Client(timeout=60) as client:
        tid = new_thread(client, first.url)
        rid = client.post(
            f"{first.url}/v1/threads/{tid}/runs", json={"message": "crash me"}
        ).json()["run_id"]
        tokens = 0
        with connect_sse(
            client, "GET", f"{first.url}/v1/threads/{tid}/runs/{rid}/stream"
        ) as source:
            for event in source.iter_sse():
                tokens += event.event == "token"
                if tokens == 5:
                    break
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        second = start_server(**env)
        if not auto:
            deadline = time.monotonic() + 30
            while (
                client.get(f"{second.url}/v1/threads/{tid}/runs/{rid}").json()["status"]
                != "interrupted"
            ):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert (
                client.post(f"{second.url}/v1/threads/{tid}/runs/{rid}/resume").status_code == 202
            )
        result = client.get(f"{second.url}/v1/threads/{tid}/runs/{rid}/wait")
        assert result.status_code == 200, result.text
        assert result.json()["answer"].endswith("[1].")
        events = replay(client, second.url, tid, rid)
        names = [e for _, e, _ in events]
        assert "run.resumed" in names and names[-1] == "run.finished"
        assert user_messages(client, second.url, tid) == ["crash me"]
        roles = [m["role"] for m in client.get(f"{second.url}/v1/threads/{tid}").json()["messages"]]
        assert roles == ["user", "assistant"]


def _thread_bytes(url: str, tid: str) -> int:
    with psycopg.connect(url) as conn:
        total = 0
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            row = conn.execute(
                f"SELECT COALESCE(SUM(pg_column_size(t.*)), 0) FROM {table} t WHERE thread_id = %s",
                (tid,),
            ).fetchone()
            total += int(row[0])
        return total


def test_retention_bounds_storage_and_delete_removes_everything(
    start_server, postgres_url, data_dir
):
    server = start_server(
        KEEL_DATABASE_URL=postgres_url,
        KEEL_DATA_DIR=str(data_dir),
        KEEL_RETENTION_CHECKPOINTS="12",
        KEEL_HISTORY_MAX_MESSAGES="20",
        KEEL_RETENTION_EVENTS_S="1",
        KEEL_RUN_HEARTBEAT_S="0.2",
    )
    sizes = {}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        tid = client.post("/v1/threads").json()["thread_id"]
        run_ids = []
        for turn in range(1, 201):
            body = {
                "message": f"Turn {turn}: how large are chunks?",
                "context": {"use_cache": False},
            }
            result = client.post(f"/v1/threads/{tid}/runs/wait", json=body)
            assert result.status_code == 200
            run_ids.append(result.json()["run_id"])
            if turn in (10, 200):
                sizes[turn] = _thread_bytes(postgres_url, tid)
        assert sizes[200] <= 2 * sizes[10], sizes
        state = client.get(f"/v1/threads/{tid}").json()
        assert len(state["messages"]) == 20 and state["messages"][-2]["content"].startswith(
            "Turn 200"
        )
        assert len(client.get(f"/v1/threads/{tid}/history?limit=1000").json()) <= 12
        # event logs older than 1 s are pruned, and a reconnect says so instead of ending silently
        time.sleep(2.5)
        pruned = replay(client, server.url, tid, run_ids[0], f"{run_ids[0]}:3")
        assert [(e, d["code"]) for _, e, d in pruned] == [("run.error", "events_pruned")]
        assert client.delete(f"/v1/threads/{tid}").status_code == 204
    with psycopg.connect(postgres_url) as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "keel_runs"):
            assert (
                conn.execute(
                    f"SELECT count(*) FROM {table} WHERE thread_id = %s", (tid,)
                ).fetchone()[0]
                == 0
            )
        left = conn.execute(
            "SELECT count(*) FROM keel_run_events WHERE run_id = ANY(%s)", (run_ids,)
        ).fetchone()
        assert left[0] == 0


def test_next_turn_right_after_run_finished_is_not_busy(replicas):
    """The outcome event and the run's terminal row land together: a client that starts its
    next turn the moment it reads `run.finished` never gets 409 thread_busy."""
    a, _ = replicas
    with httpx.Client(timeout=60) as client:
        tid = new_thread(client, a.url)
        for turn in range(5):
            body = {"message": f"{QUESTION} ({turn})", "context": {"use_cache": False}}
            with connect_sse(
                client, "POST", f"{a.url}/v1/threads/{tid}/runs/stream", json=body
            ) as source:
                assert source.response.status_code == 200, source.response.read()
                assert events_of(source)[-1][1] == "run.finished"
