"""The Agent Server API's streaming surface beyond one run, through the official Python client
against a real `keel serve`, on Postgres and on the embedded default (SQLite): the `custom`
events keel's nodes emit, `durability` (checkpoint rows per mode), the thread-level stream
(every run of a thread, resumable by `Last-Event-ID`), `POST /runs` and `POST /runs/batch`,
and another tenant's view of all of them."""

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError

from api.auth import hash_key
from tests.conftest import Server, llm_server

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
INPUT = {"messages": [{"role": "user", "content": QUESTION}]}
SECOND = {"messages": [{"role": "user", "content": "And what happens to a deleted file?"}]}
FRESH = {"use_cache": False}
NODES = ["guard", "cache_lookup", "retrieve", "rerank", "generate"]


@dataclass
class Backend:
    """A `keel serve` on one database kind, with the API keys of tenants A (`default`, the
    ingested corpus) and B."""

    kind: str  # postgres or sqlite
    server: Server
    keys: dict[str, str]
    database: str  # the Postgres URL, or the SQLite file's path

    def client(self, tenant: str = "a") -> LangGraphClient:
        return get_client(url=self.server.url, api_key=self.keys[tenant])

    def http(self, tenant: str = "a") -> httpx.Client:
        headers = {"X-API-Key": self.keys[tenant]}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=60)

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of `query` (`%s` placeholders) straight from the server's database (none for a
        statement that returns none, committed)."""
        if self.kind == "postgres":
            with psycopg.connect(self.database) as conn:
                cursor = conn.execute(query, params)  # type: ignore[arg-type]
                return list(cursor.fetchall()) if cursor.description else []
        with sqlite3.connect(self.database) as conn:
            return list(conn.execute(query.replace("%s", "?"), params).fetchall())


@contextlib.contextmanager
def backend_server(
    tmp: Path, corpus_dir: Path, kind: str, postgres_url: str, fake_llm_url: str, **env: str
) -> Iterator[Backend]:
    """A `keel serve` on Postgres or on the embedded SQLite default, answering through the fake
    LLM (25 words, 40 ms apart), with tenants A and B; `env` adds settings."""
    tenants = {"a": "default", "b": f"b{uuid.uuid4().hex[:8]}"}
    keys = {n: f"key-{n}-{uuid.uuid4().hex}" for n in tenants}
    settings = {
        "KEEL_API_KEYS": json.dumps({hash_key(keys[n]): t for n, t in tenants.items()}),
        "KEEL_LLM_MODEL": "slow-40-25",
        "KEEL_RUN_HEARTBEAT_S": "0.2",
        **env,
    }
    database = postgres_url if kind == "postgres" else None
    with llm_server(tmp, corpus_dir, fake_llm_url, database, **settings) as server:
        yield Backend(kind, server, keys, database or str(tmp / "data" / "checkpoints.sqlite"))


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def backend(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    corpus_dir: Path,
    postgres_url: str,
    fake_llm_url: str,
) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"agent-{request.param}")
    with backend_server(tmp, corpus_dir, request.param, postgres_url, fake_llm_url) as started:
        yield started


def _run_done(part: Any) -> bool:
    return part.event == "metadata" and part.data.get("status") == "run_done"


async def _until_done(joined: Awaitable[AsyncIterator[Any]], runs: int) -> list[Any]:
    """The parts of a thread stream (the SDK's `join_stream(...)`) up to its `runs`-th
    `run_done`."""
    parts = []
    async for part in await joined:
        parts.append(part)
        if sum(map(_run_done, parts)) == runs:
            return parts
    raise AssertionError(f"the stream ended after {parts}")


async def test_custom_mode_carries_retrieve_and_rerank_progress_then_tokens(
    backend: Backend,
) -> None:
    client = backend.client()
    thread_id = (await client.threads.create())["thread_id"]
    parts = [
        p
        async for p in client.runs.stream(
            thread_id, "keel", input=INPUT, stream_mode="custom", context={**FRESH, "top_k": 3}
        )
    ]
    custom = [p.data for p in parts if p.event == "custom"]
    retrieved, reranked, *tokens = custom
    assert retrieved["node"] == "retrieve" and retrieved["candidates"] > 3
    assert retrieved["dense"] + retrieved["lexical"] >= retrieved["candidates"]
    assert reranked["node"] == "rerank" and len(reranked["top_ids"]) == 3
    assert len(tokens) == 25 and all(t["node"] == "generate" for t in tokens)
    state = await client.threads.get_state(thread_id)
    assert [c["id"] for c in state["values"]["passages"][:3]] == reranked["top_ids"]
    assert "".join(t["token"] for t in tokens) == state["values"]["answer"]


async def test_durability_decides_which_checkpoints_are_written(backend: Backend) -> None:
    client = backend.client()
    counts = {}
    for mode in ("sync", "async", "exit"):
        thread_id = (await client.threads.create())["thread_id"]
        values = await client.runs.wait(
            thread_id, "keel", input=INPUT, durability=mode, context=FRESH
        )
        assert values["answer"]
        query = "SELECT count(*) FROM checkpoints WHERE thread_id = %s"
        counts[mode] = backend.rows(query, thread_id)[0][0]
        history = await client.threads.get_history(thread_id, limit=100)
        assert len(history) == counts[mode]
        # Whatever was written, the thread ends in the same state.
        assert history[0]["values"]["answer"] == values["answer"] and history[0]["next"] == []
    # sync and async both write every step (the input, then each node); exit only the last.
    assert counts["sync"] == counts["async"] == len(NODES) + 2
    assert counts["exit"] == 1


async def test_thread_stream_joins_each_run_and_resumes_exactly(backend: Backend) -> None:
    client = backend.client()
    thread_id = (await client.threads.create())["thread_id"]
    joined = asyncio.ensure_future(_until_done(client.threads.join_stream(thread_id), 2))
    await asyncio.sleep(0.5)  # the stream is open before the thread has any run
    first = await client.runs.create(
        thread_id, "keel", input=INPUT, stream_mode=["updates", "custom"], context=FRESH
    )
    await client.runs.join(thread_id, first["run_id"])
    second = await client.runs.create(thread_id, "keel", input=SECOND, stream_mode="values")
    parts = await asyncio.wait_for(joined, 60)

    ids = [first["run_id"], second["run_id"]]
    done = [i for i, p in enumerate(parts) if _run_done(p)]
    runs = [parts[: done[0] + 1], parts[done[0] + 1 :]]
    for run_id, run_parts in zip(ids, runs, strict=True):
        assert run_parts[0].event == "metadata" and run_parts[0].data == {
            "run_id": run_id,
            "attempt": 1,
        }
        assert run_parts[-1].data == {"status": "run_done", "run_id": run_id}
        seqs = [int(p.id.removeprefix(f"{run_id}:")) for p in run_parts]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [next(iter(p.data)) for p in runs[0] if p.event == "updates"] == NODES
    assert [p.data["node"] for p in runs[0] if p.event == "custom"][:2] == ["retrieve", "rerank"]
    assert {p.event for p in runs[1]} == {"metadata", "values"}
    messages = runs[1][-2].data["messages"]  # the second turn's final values
    assert [m["type"] for m in messages] == ["human", "ai", "human", "ai"]
    assert messages[0]["content"] == QUESTION

    # From an event in the middle of the first run: exactly what followed it.
    middle = next(i for i, p in enumerate(parts) if p.event == "custom")
    resumed = await asyncio.wait_for(
        _until_done(client.threads.join_stream(thread_id, last_event_id=parts[middle].id), 2),
        60,
    )
    assert [(p.id, p.event, p.data) for p in resumed] == [
        (p.id, p.event, p.data) for p in parts[middle + 1 :]
    ]
    # lifecycle: only the runs' starts and ends.
    lifecycle = await asyncio.wait_for(
        _until_done(
            client.threads.join_stream(
                thread_id, stream_mode="lifecycle", last_event_id=f"{ids[0]}:0"
            ),
            2,
        ),
        60,
    )
    assert [(p.event, p.data.get("status"), p.data["run_id"]) for p in lifecycle] == [
        ("metadata", None, ids[0]),
        ("metadata", "run_done", ids[0]),
        ("metadata", None, ids[1]),
        ("metadata", "run_done", ids[1]),
    ]
    # Joined later with no Last-Event-ID: ended runs are not replayed, the next run is.
    later = asyncio.ensure_future(_until_done(client.threads.join_stream(thread_id), 1))
    await asyncio.sleep(0.5)
    third = await client.runs.create(thread_id, "keel", input=INPUT, context=FRESH)
    parts = await asyncio.wait_for(later, 60)
    assert {p.id.split(":")[0] for p in parts} == {third["run_id"]}


def test_thread_stream_refusals(backend: Backend) -> None:
    with backend.http() as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]
        url = f"/threads/{thread_id}/stream"
        for params, headers in (
            ({"stream_mode": "state_update"}, {}),
            ({"stream_modes": "run_modes,nope"}, {}),
            ({}, {"Last-Event-ID": f"{uuid.uuid4().hex}:3"}),
        ):
            response = http.get(url, params=params, headers=headers)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["error"]["code"] == "invalid_input"
        assert http.get(f"/threads/{uuid.uuid4().hex}/stream").status_code == 404


async def _gone(client: LangGraphClient, thread_id: str, within_s: float = 30) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            await client.threads.get(thread_id)
        except NotFoundError:
            return True
        await asyncio.sleep(0.2)
    return False


async def test_runs_batch_starts_stateless_runs_checked_first(backend: Backend) -> None:
    client = backend.client()
    before = await client.threads.count()
    bad = [
        {"assistant_id": "keel", "input": INPUT},
        {"assistant_id": "keel", "input": INPUT, "stream_mode": "nope"},
    ]
    with backend.http() as http:
        refused = http.post("/runs/batch", json=bad)
        assert refused.status_code == 422, refused.text
        assert http.post("/runs/batch", json=[]).status_code == 422
    assert await client.threads.count() == before  # nothing was started

    runs = await client.runs.create_batch(
        [
            {"assistant_id": "keel", "input": INPUT, "metadata": {"n": 1}, "context": FRESH},
            {"assistant_id": "keel", "input": SECOND, "on_completion": "keep"},
        ]
    )
    assert [r["metadata"] for r in runs] == [{"n": 1}, {}]
    assert len({r["thread_id"] for r in runs}) == 2
    assert all(r["status"] in ("pending", "running") for r in runs)
    kept = runs[1]
    values = await client.runs.join(kept["thread_id"], kept["run_id"])
    assert values["answer"]
    assert (await client.runs.get(kept["thread_id"], kept["run_id"]))["status"] == "success"
    # The default stateless run's thread goes once it has ended; the kept one stays.
    assert await _gone(client, runs[0]["thread_id"])
    assert (await client.threads.get(kept["thread_id"]))["metadata"] == {"stateless": True}
    rows = backend.rows("SELECT count(*) FROM keel_runs WHERE thread_id = %s", runs[0]["thread_id"])
    assert rows == [(0,)]

    single = await client.runs.create(None, "keel", input=INPUT, on_completion="keep")
    assert (await client.runs.join(single["thread_id"], single["run_id"]))["answer"]
    for thread_id in (kept["thread_id"], single["thread_id"]):  # kept: the test removes them
        await client.threads.delete(thread_id)


async def test_another_tenant_sees_none_of_it(backend: Backend) -> None:
    a, b = backend.client("a"), backend.client("b")
    thread_id = (await a.threads.create())["thread_id"]
    run = await a.runs.create(thread_id, "keel", input=INPUT)
    await a.runs.join(thread_id, run["run_id"])
    [batch_run] = await a.runs.create_batch(
        [{"assistant_id": "keel", "input": INPUT, "on_completion": "keep"}]
    )
    with backend.http("b") as http:
        for path, headers in (
            (f"/threads/{thread_id}/stream", {}),
            (f"/threads/{thread_id}/stream", {"Last-Event-ID": f"{run['run_id']}:1"}),
            (f"/threads/{batch_run['thread_id']}/runs/{batch_run['run_id']}", {}),
        ):
            assert http.get(path, headers=headers).status_code == 404, path
        pruned = http.post("/threads/prune", json={"thread_ids": [thread_id]})
        assert pruned.json() == {"pruned_count": 0}
    assert await b.threads.search() == []
    assert (await a.threads.get(thread_id))["thread_id"] == thread_id
    await a.runs.join(batch_run["thread_id"], batch_run["run_id"])
    await a.threads.delete(batch_run["thread_id"])
