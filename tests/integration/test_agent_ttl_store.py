"""Thread TTL, `POST /threads/prune`, the store's `refresh_ttl` and semantic store search,
through the official Python client against a real `keel serve` on Postgres and on the embedded
default (SQLite), per tenant; rows read straight from the database."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError

from tests.integration.test_agent_streams_batch import Backend, backend_server

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
INPUT = {"messages": [{"role": "user", "content": QUESTION}]}
SWEEP_S = 0.3


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def backend(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    corpus_dir: Path,
    postgres_url: str,
    fake_llm_url: str,
) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"ttl-store-{request.param}")
    with backend_server(
        tmp,
        corpus_dir,
        request.param,
        postgres_url,
        fake_llm_url,
        KEEL_THREAD_TTL_SWEEP_S=str(SWEEP_S),
        KEEL_STORE_INDEX_FIELDS="text",
        KEEL_LLM_MODEL="slow-0-5",
    ) as started:
        yield started


async def _exists(client: LangGraphClient, thread_id: str) -> bool:
    try:
        await client.threads.get(thread_id)
        return True
    except NotFoundError:
        return False


async def _eventually(check: Any, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.1)


async def test_thread_ttl_deletes_an_idle_thread_and_all_it_holds(backend: Backend) -> None:
    client = backend.client()
    kept = (await client.threads.create())["thread_id"]
    thread = await client.threads.create(ttl={"strategy": "delete", "ttl": 10 * SWEEP_S / 60})
    thread_id = thread["thread_id"]
    await client.runs.wait(thread_id, "keel", input=INPUT)
    assert backend.rows("SELECT count(*) FROM checkpoints WHERE thread_id = %s", thread_id)[0][0]

    async def gone() -> bool:
        return not await _exists(client, thread_id)

    await _eventually(gone)
    for table in ("checkpoints", "checkpoint_writes" if backend.kind == "postgres" else "writes"):
        query = f"SELECT count(*) FROM {table} WHERE thread_id = %s"
        assert backend.rows(query, thread_id) == [(0,)], table
    assert backend.rows("SELECT count(*) FROM keel_runs WHERE thread_id = %s", thread_id) == [(0,)]
    assert await _exists(client, kept)  # no TTL: kept
    assert (await client.threads.get(kept, include=["ttl"]))["ttl"] is None


async def test_activity_restarts_a_thread_ttl(backend: Backend) -> None:
    client = backend.client()
    thread_id = (await client.threads.create(ttl=60))["thread_id"]  # minutes, strategy delete
    first = (await client.threads.get(thread_id, include=["ttl"]))["ttl"]
    assert first["strategy"] == "delete" and first["ttl"] == 60
    await asyncio.sleep(0.05)
    await client.threads.update(thread_id, metadata={"touched": True})
    second = (await client.threads.get(thread_id, include=["ttl"]))["ttl"]
    assert second["expires_at"] > first["expires_at"]
    await client.runs.wait(thread_id, "keel", input=INPUT)
    third = (await client.threads.get(thread_id, include=["ttl"]))["ttl"]
    assert third["expires_at"] > second["expires_at"]
    # A new TTL replaces the old one.
    await client.threads.update(thread_id, metadata={}, ttl={"strategy": "keep_latest", "ttl": 5})
    assert (await client.threads.get(thread_id, include=["ttl"]))["ttl"]["ttl"] == 5


async def test_keep_latest_ttl_trims_the_thread_to_its_last_checkpoint(backend: Backend) -> None:
    client = backend.client()
    ttl = {"strategy": "keep_latest", "ttl": 20 * SWEEP_S / 60}
    thread_id = (await client.threads.create(ttl=ttl))["thread_id"]
    await client.runs.wait(thread_id, "keel", input=INPUT)
    answer = (await client.runs.wait(thread_id, "keel", input=INPUT, context={"use_cache": False}))[
        "answer"
    ]
    assert len(await client.threads.get_history(thread_id, limit=100)) > 2

    async def trimmed() -> bool:
        return len(await client.threads.get_history(thread_id, limit=100)) == 1

    await _eventually(trimmed)
    state = await client.threads.get_state(thread_id)
    assert state["values"]["answer"] == answer and len(state["values"]["messages"]) == 4


async def test_prune_deletes_or_trims_the_tenants_idle_threads(backend: Backend) -> None:
    a, b = backend.client("a"), backend.client("b")
    threads = [(await a.threads.create())["thread_id"] for _ in range(4)]
    for thread_id in threads[2:]:
        await a.runs.wait(thread_id, "keel", input=INPUT)
        await a.runs.wait(thread_id, "keel", input=INPUT, context={"use_cache": False})
    b_thread = (await b.threads.create())["thread_id"]

    # Another tenant's ids and unknown ones are skipped, not an error.
    pruned = await a.threads.prune([threads[0], threads[1], b_thread, uuid.uuid4().hex])
    assert pruned == {"pruned_count": 2}
    assert not await _exists(a, threads[0]) and not await _exists(a, threads[1])
    assert await _exists(b, b_thread)
    assert await b.threads.prune([threads[2]]) == {"pruned_count": 0}

    assert await a.threads.prune([threads[2]], strategy="keep_latest") == {"pruned_count": 1}
    assert len(await a.threads.get_history(threads[2], limit=100)) == 1
    assert len((await a.threads.get_state(threads[2]))["values"]["messages"]) == 4

    # A busy thread is left alone.
    run = await a.runs.create(threads[3], "keel", input=INPUT, context={"use_cache": False})
    assert await a.threads.prune([threads[3]]) == {"pruned_count": 0}
    await a.runs.join(threads[3], run["run_id"])
    assert await a.threads.prune([threads[3]]) == {"pruned_count": 1}

    with backend.http() as http:
        for body in ({"thread_ids": [threads[2]], "strategy": "nope"}, {}, {"thread_ids": "x"}):
            assert http.post("/threads/prune", json=body).status_code == 422, body


def _expires_at(backend: Backend, namespace: str, key: str) -> float:
    """The item's expiry in the store's table, as epoch seconds (SQLite's store writes a
    refreshed one to the second, as text)."""
    query = "SELECT expires_at FROM store WHERE prefix = %s AND key = %s"
    value = backend.rows(query, f"keel.store.default.{namespace}", key)[0][0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


async def test_refresh_ttl_on_get_and_search(backend: Backend) -> None:
    store = backend.client().store
    namespace = f"ttl{uuid.uuid4().hex[:8]}"
    await store.put_item([namespace], "k", {"text": "a note"}, ttl=10)
    written = _expires_at(backend, namespace, "k")
    await asyncio.sleep(1.1)  # past the second SQLite's store keeps
    item = await store.get_item([namespace], "k", refresh_ttl=False)
    assert item is not None and item["value"] == {"text": "a note"}
    found = await store.search_items([namespace], refresh_ttl=False)
    assert [i["key"] for i in found["items"]] == ["k"]
    found = await store.search_items([namespace], query="note", refresh_ttl=False)
    assert [i["key"] for i in found["items"]] == ["k"]
    assert _expires_at(backend, namespace, "k") == written
    await store.get_item([namespace], "k", refresh_ttl=True)
    after_get = _expires_at(backend, namespace, "k")
    assert after_get > written
    await asyncio.sleep(1.1)
    await store.search_items([namespace], query="note", refresh_ttl=True)
    assert _expires_at(backend, namespace, "k") > after_get


DOCS = {
    "checkpoints": "Postgres keeps the checkpoints of every conversation thread.",
    "vectors": "Chroma holds the dense vectors that retrieval searches.",
    "cache": "Redis caches answers so replicas reuse them.",
}


async def test_semantic_search_ranks_indexed_items_by_similarity(backend: Backend) -> None:
    a, b = backend.client("a").store, backend.client("b").store
    docs = f"docs{uuid.uuid4().hex[:8]}"
    for n, (key, text) in enumerate(DOCS.items()):  # indexed by the server's default: text
        await a.put_item([docs, "kb"], key, {"text": text, "n": n})
    await a.put_item([docs, "kb"], "unindexed", {"text": "Redis answers cache"}, index=False)
    await a.put_item(
        [docs, "notes"], "titled", {"title": "answer caching", "text": "x"}, index=["title"]
    )

    async def ranked(query: str, **kw: Any) -> list[tuple[str, float]]:
        items = (await a.search_items([docs], query=query, limit=10, **kw))["items"]
        return [(i["key"], i["score"]) for i in items]

    found = await ranked("Which database stores the conversation threads' checkpoints?")
    assert found[0][0] == "checkpoints"
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert "unindexed" not in dict(found) and -1 <= found[-1][1] <= found[0][1] <= 1
    # Each item by its own index: `titled` by its title alone.
    assert {k for k, _ in (await ranked("caching answers"))[:2]} == {"cache", "titled"}
    kb = [i["key"] for i in (await a.search_items([docs, "kb"], query="caching answers"))["items"]]
    assert kb[0] == "cache" and "titled" not in kb
    # Filter and paging apply to the ranking.
    filtered = await ranked("checkpoints of threads", filter={"n": {"$gte": 1}})
    assert "checkpoints" not in dict(filtered) and filtered
    full = await ranked("dense vectors")
    page = (await a.search_items([docs], query="dense vectors", limit=2, offset=1))["items"]
    assert [i["key"] for i in page] == [k for k, _ in full[1:3]]
    # Deleting an item deletes its vectors; another tenant ranks only its own items.
    await a.delete_item([docs, "kb"], "vectors")
    prefix = f"keel.store.default.{docs}.kb"
    query = "SELECT count(*) FROM keel_store_vectors WHERE prefix = %s AND key = %s"
    assert backend.rows(query, prefix, "vectors") == [(0,)]
    assert backend.rows(query, prefix, "cache") == [(1,)]
    assert "vectors" not in dict(await ranked("dense vectors"))
    # An item the store's TTL sweep deletes loses its vectors at the next maintenance sweep.
    backend.rows("DELETE FROM store WHERE prefix = %s AND key = %s", prefix, "cache")

    async def orphan_dropped() -> bool:
        return backend.rows(query, prefix, "cache") == [(0,)]

    await _eventually(orphan_dropped)
    assert (await b.search_items([docs], query="checkpoints"))["items"] == []
    await b.put_item([docs], "mine", {"text": "checkpoints in Postgres"})
    assert [i["key"] for i in (await b.search_items([docs], query="checkpoints"))["items"]] == [
        "mine"
    ]
