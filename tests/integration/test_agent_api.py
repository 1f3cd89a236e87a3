"""The LangGraph Agent Server API at the root paths, driven by the official Python client
(`langgraph-sdk`, async and sync) against a real `keel serve` on Postgres."""

import itertools
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError

from api.agent.schemas import RunKnobs
from api.auth import hash_key
from api.schemas import RunContext
from checkpoints import open_persistence
from checkpoints.thread_search import search_threads
from checkpoints.threads import create_thread, touch_thread
from tests.conftest import Server, llm_server

ASSISTANT_UUID = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "keel"))
QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
INPUT = {"messages": [{"role": "user", "content": QUESTION}]}
MODES = ["values", "updates", "messages-tuple", "custom", "debug"]
FRESH = {"use_cache": False}  # the same question again: generate, not a cache hit


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, postgres_url: str, fake_llm_url: str
) -> Iterator[Server]:
    """One `keel serve` on Postgres, answering through the fake LLM (25 words, 40 ms apart)."""
    tmp = tmp_path_factory.mktemp("agent")
    env = {"KEEL_LLM_MODEL": "slow-40-25", "KEEL_RUN_HEARTBEAT_S": "0.2"}
    with llm_server(tmp, corpus_dir, fake_llm_url, postgres_url, **env) as started:
        yield started


def _turn(server: Server, thread_id: str, message: str = QUESTION) -> dict:
    """A turn through keel's own /v1 dialect: the same thread serves both."""
    url = f"{server.url}/v1/threads/{thread_id}/runs/wait"
    return httpx.post(url, json={"message": message}, timeout=120).raise_for_status().json()


async def test_ok_info_and_the_keel_assistant(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/ok")).json() == {"ok": True}
        info = (await http.get("/info")).json()
    assert info["flags"]["assistants"] is True and info["langgraph_py_version"]
    client = get_client(url=server.url)
    found = await client.assistants.search(graph_id="keel")
    assert [a["assistant_id"] for a in found] == [ASSISTANT_UUID]
    assert await client.assistants.count() == 1
    assert await client.assistants.search(graph_id="other") == []
    assert (await client.assistants.get("keel")) == (await client.assistants.get(ASSISTANT_UUID))
    with pytest.raises(NotFoundError):
        await client.assistants.get(str(uuid.uuid4()))

    drawn = await client.assistants.get_graph("keel", xray=True)
    nodes = {n["id"] for n in drawn["nodes"]}
    assert {"guard", "cache_lookup", "retrieve", "rerank", "generate", "fallback"} <= nodes
    assert {(e["source"], e["target"]) for e in drawn["edges"]} >= {("__start__", "guard")}

    schemas = await client.assistants.get_schemas(ASSISTANT_UUID)
    assert "messages" in schemas["input_schema"]["properties"]
    assert {"answer", "citations", "cached"} <= set(schemas["output_schema"]["properties"])
    assert {"messages", "answer", "passages"} <= set(schemas["state_schema"]["properties"])
    knobs = schemas["context_schema"]["properties"]
    # Knobs a client may set, never the ones the server fills in (tenant, the raw message).
    # Exactly the knobs a run honours, never the fields the server sets (tenant, deadline...).
    assert set(knobs) == set(RunKnobs.model_fields) == set(RunContext.model_fields)
    assert set(knobs) == {"top_k", "candidates", "retrieval", "use_cache", "rerank", "model"} | {
        "history_turns"
    }
    assert knobs["top_k"] == {"default": 5, "title": "Top K", "type": "integer"}


async def test_threads_create_search_count_patch(server: Server) -> None:
    client = get_client(url=server.url)
    tag = uuid.uuid4().hex
    made = [
        await client.threads.create(metadata={"suite": tag, "user": user})
        for user in ("ann", "bob", "ann")
    ]
    assert all(t["status"] == "idle" and t["metadata"]["suite"] == tag for t in made)

    ann = await client.threads.search(metadata={"suite": tag, "user": "ann"})
    assert {t["thread_id"] for t in ann} == {made[0]["thread_id"], made[2]["thread_id"]}
    assert await client.threads.count(metadata={"suite": tag}) == 3
    assert await client.threads.count(metadata={"suite": tag}, status="busy") == 0
    newest_first = await client.threads.search(metadata={"suite": tag}, limit=2)
    rest = await client.threads.search(metadata={"suite": tag}, limit=2, offset=2)
    assert [t["thread_id"] for t in newest_first + rest] == [t["thread_id"] for t in reversed(made)]
    oldest = await client.threads.search(metadata={"suite": tag}, sort_order="asc", limit=1)
    assert oldest[0]["thread_id"] == made[0]["thread_id"]
    ids = [made[0]["thread_id"], made[2]["thread_id"], uuid.uuid4().hex]  # the last: no thread
    picked = await client.threads.search(ids=ids, sort_by="created_at", sort_order="asc")
    assert [t["thread_id"] for t in picked] == ids[:2]
    by_id = await client.threads.search(metadata={"suite": tag}, sort_by="thread_id")
    assert [t["thread_id"] for t in by_id] == sorted((t["thread_id"] for t in made), reverse=True)
    async with httpx.AsyncClient(base_url=server.url) as http:
        for unserved in ({"values": {"answer": "x"}}, {"extract": {"a": "values.answer"}}):
            refused = await http.post("/threads/search", json=unserved)
            assert refused.status_code == 422 and next(iter(unserved)) in refused.text

    patched = await client.threads.update(made[1]["thread_id"], metadata={"user": "carl"})
    assert patched["metadata"] == {"suite": tag, "user": "carl"}
    assert (await client.threads.get(made[1]["thread_id"]))["metadata"]["user"] == "carl"

    chosen = str(uuid.uuid4())
    created = await client.threads.create(thread_id=chosen, metadata={"suite": tag})
    assert created["thread_id"] == chosen
    again = await client.threads.create(thread_id=chosen, if_exists="do_nothing")
    assert again["thread_id"] == chosen and again["metadata"] == {"suite": tag}
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=chosen)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_thread_search_orders_and_filters_alike_on_both_databases(
    backend: str, postgres_url: str, tmp_path: Path
) -> None:
    url = postgres_url if backend == "postgres" else f"sqlite:///{tmp_path}/keel.sqlite"
    tenant = f"t{uuid.uuid4().hex[:8]}"
    async with open_persistence(url) as p:
        names = ["c", "a", "b"]  # created in this order; "a" then becomes the most recent
        for name in names:
            await create_thread(p, tenant, {"name": name}, f"{tenant}-{name}")
        await touch_thread(p, tenant, f"{tenant}-a", 2, "the latest question")

        async def order(**query: object) -> list[str]:
            found = await search_threads(p, tenant, {}, None, 10, 0, **query)  # type: ignore[arg-type]
            return [record["metadata"]["name"] for record, _ in found]

        assert await order() == ["a", "b", "c"]  # the most recently active first
        assert await order(sort_by="created_at") == ["b", "a", "c"]
        assert await order(sort_by="created_at", ascending=True) == ["c", "a", "b"]
        assert await order(sort_by="thread_id", ascending=True) == ["a", "b", "c"]
        assert await order(sort_by="status", ascending=True) == ["a", "b", "c"]  # ties: by id
        assert await order(ids=[f"{tenant}-b", f"{tenant}-c", "missing"]) == ["b", "c"]
        assert await order(ids=[]) == []


def test_thread_search_returns_values_and_keeps_the_selected_fields(server: Server) -> None:
    client = get_sync_client(url=server.url)
    tag = uuid.uuid4().hex
    fresh = client.threads.create(metadata={"suite": tag})["thread_id"]
    answered = client.threads.create(metadata={"suite": tag})["thread_id"]
    result = _turn(server, answered)

    found = {t["thread_id"]: t for t in client.threads.search(metadata={"suite": tag})}
    assert found[answered]["values"]["answer"] == result["answer"]
    assert [m["type"] for m in found[answered]["values"]["messages"]] == ["human", "ai"]
    assert found[fresh]["values"] == {} and set(found[fresh]) == set(found[answered])
    assert set(found[fresh]) >= {"thread_id", "created_at", "metadata", "status", "values"}

    picked = client.threads.search(metadata={"suite": tag}, select=["thread_id", "values"])
    assert {t["thread_id"]: t["values"] for t in picked} == {t: found[t]["values"] for t in found}
    assert all(set(t) == {"thread_id", "values"} for t in picked)
    slim = client.threads.search(metadata={"suite": tag}, select=["thread_id", "status"])
    assert sorted(slim, key=lambda t: t["thread_id"]) == sorted(
        ({"thread_id": t, "status": "idle"} for t in found), key=lambda t: t["thread_id"]
    )
    refused = httpx.post(f"{server.url}/threads/search", json={"select": ["secret"]})
    assert refused.status_code == 422


def test_state_history_update_and_delete_with_the_sync_client(
    server: Server, postgres_url: str
) -> None:
    client = get_sync_client(url=server.url)
    thread_id = client.threads.create()["thread_id"]
    result = _turn(server, thread_id)

    state = client.threads.get_state(thread_id)
    assert state["values"]["answer"] == result["answer"]
    assert [m["type"] for m in state["values"]["messages"]] == ["human", "ai"]
    assert state["next"] == [] and state["checkpoint"]["thread_id"] == thread_id
    assert client.threads.get(thread_id)["values"]["answer"] == result["answer"]

    history = client.threads.get_history(thread_id, limit=100)
    assert history[0]["checkpoint"] == state["checkpoint"]
    assert [h["metadata"]["step"] for h in history] == sorted(
        (h["metadata"]["step"] for h in history), reverse=True
    )
    # Each checkpoint names the node that wrote it; the first ones come from the input.
    writers = [next(iter(h["metadata"]["writes"] or {None: 0})) for h in reversed(history)]
    assert writers[:3] == [None, "__start__", "guard"]
    assert "cache_lookup" in writers
    page = client.threads.get_history(thread_id, limit=2, before=history[1]["checkpoint"])
    assert [h["checkpoint"] for h in page] == [h["checkpoint"] for h in history[2:4]]
    inputs = client.threads.get_history(thread_id, limit=10, metadata={"source": "input"})
    assert [h["metadata"]["source"] for h in inputs] == ["input"]

    past = client.threads.get_state(thread_id, checkpoint_id=history[2]["checkpoint_id"])
    assert past["checkpoint"] == history[2]["checkpoint"] and past["next"] == history[2]["next"]
    with pytest.raises(NotFoundError):
        client.threads.get_state(thread_id, checkpoint_id=str(uuid.uuid4()))

    written = client.threads.update_state(thread_id, {"answer": "edited"}, as_node="generate")
    assert written["checkpoint"]["checkpoint_id"] != state["checkpoint"]["checkpoint_id"]
    now = client.threads.get_state(thread_id)
    assert now["values"]["answer"] == "edited"
    assert now["metadata"]["source"] == "update"
    assert now["parent_checkpoint"] == state["checkpoint"]

    client.threads.delete(thread_id)
    with pytest.raises(NotFoundError):
        client.threads.get(thread_id)
    with psycopg.connect(postgres_url) as conn:
        for table in ("checkpoints", "checkpoint_writes", "keel_runs"):
            count = conn.execute(
                f"SELECT count(*) FROM {table} WHERE thread_id = %s", (thread_id,)
            ).fetchone()
            assert count == (0,), table


def test_state_update_redacts_messages(server: Server) -> None:
    client = get_sync_client(url=server.url)
    thread_id = client.threads.create()["thread_id"]
    _turn(server, thread_id)
    message = {"type": "ai", "content": "mail me at jane.doe@example.com"}
    client.threads.update_state(thread_id, {"messages": [message]}, as_node="generate")
    stored = client.threads.get_state(thread_id)["values"]["messages"]
    assert len(stored) == 3 and stored[-1]["content"].startswith("mail me at ")
    assert "jane.doe@example.com" not in stored[-1]["content"]


def _seq(part_id: str) -> int:
    return int(part_id.rsplit(":", 1)[1])


async def test_stream_modes_through_the_async_client(server: Server, postgres_url: str) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    parts = [
        p
        async for p in client.runs.stream(
            thread_id, "keel", input=INPUT, stream_mode=MODES, metadata={"k": "v"}, context=FRESH
        )
    ]
    assert parts[0].event == "metadata"
    run_id = parts[0].data["run_id"]
    seqs = [_seq(p.id) for p in parts]
    assert seqs == sorted(set(seqs)) and all(p.id.startswith(run_id + ":") for p in parts)
    assert {p.event for p in parts} == {"metadata", *MODES} - {"messages-tuple"} | {"messages"}

    updates = [next(iter(p.data)) for p in parts if p.event == "updates"]
    assert updates == ["guard", "cache_lookup", "retrieve", "rerank", "generate"]
    tokens = [p.data for p in parts if p.event == "messages"]
    assert all(meta["langgraph_node"] == "generate" for _, meta in tokens)
    assert len(tokens) == 25 and all(chunk["type"] == "AIMessageChunk" for chunk, _ in tokens)
    answer = "".join(chunk["content"] for chunk, _ in tokens)
    # retrieve and rerank report their progress first (tests/integration/test_agent_streams_batch.py)
    custom = [p.data for p in parts if p.event == "custom"]
    assert [c["node"] for c in custom[:2]] == ["retrieve", "rerank"]
    assert [c["token"] for c in custom[2:]] == [chunk["content"] for chunk, _ in tokens]
    final = [p.data for p in parts if p.event == "values"][-1]
    assert final["answer"] == answer and final["messages"][-1]["content"] == answer
    debug_kinds = {p.data["type"] for p in parts if p.event == "debug"}
    assert debug_kinds == {"checkpoint", "task", "task_result"}

    run = await client.runs.get(thread_id, run_id)
    assert run["status"] == "success" and run["metadata"] == {"k": "v"}
    assert [r["run_id"] for r in await client.runs.list(thread_id)] == [run_id]
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT request::json->'stream_modes', status FROM keel_runs WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert row == (MODES, "succeeded")


async def test_messages_and_events_modes_with_subgraphs(server: Server) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    parts = [
        p
        async for p in client.runs.stream(
            thread_id,
            "keel",
            input=INPUT,
            stream_mode=["messages", "events"],
            stream_subgraphs=True,  # keel's graph has none: the same frames, no namespaces
            context=FRESH,
        )
    ]
    assert parts[0].event == "metadata"
    assert {p.event for p in parts} == {
        "metadata",
        "events",
        "messages/metadata",
        "messages/partial",
        "messages/complete",
    }
    messages = [(p.event, p.data) for p in parts if p.event.startswith("messages/")]
    streamed_id = f"run-{parts[0].data['run_id']}-generate"
    assert messages[0] == (
        "messages/metadata",
        {
            streamed_id: {
                "metadata": {"run_id": parts[0].data["run_id"], "langgraph_node": "generate"}
            }
        },
    )
    partials = [data[0] for event, data in messages if event == "messages/partial"]
    assert len(partials) == 25 and {m["id"] for m in partials} == {streamed_id}
    texts = [m["content"] for m in partials]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    # The answer as the thread stores it, under its own id, named by a metadata frame first.
    (kind, meta), (last, [complete]) = messages[-2:]
    assert (kind, last) == ("messages/metadata", "messages/complete")
    assert complete["type"] == "ai" and complete["content"] == texts[-1]
    assert list(meta) == [complete["id"]] and meta[complete["id"]]["metadata"][
        "langgraph_node"
    ] == ("generate")

    events = [p.data for p in parts if p.event == "events"]
    assert (events[0]["event"], events[0]["name"]) == ("on_chain_start", "keel")
    assert (events[-1]["event"], events[-1]["name"]) == ("on_chain_end", "keel")
    assert events[-1]["data"]["output"]["answer"] == texts[-1]
    chains = [(e["event"], e["name"]) for e in events[1:-1] if e["event"].startswith("on_chain")]
    nodes = ["guard", "cache_lookup", "retrieve", "rerank", "generate"]
    assert chains == [
        (kind, node)
        for node in nodes
        for kind in ("on_chain_start", "on_chain_stream", "on_chain_end")
    ]
    node_runs = {e["name"]: e["run_id"] for e in events if e["event"] == "on_chain_start"}
    model = [e for e in events if e["event"].startswith("on_chat_model")]
    assert [e["event"] for e in model] == [
        "on_chat_model_start",
        *["on_chat_model_stream"] * 25,
        "on_chat_model_end",
    ]
    assert all(e["parent_ids"] == [node_runs["keel"], node_runs["generate"]] for e in model)
    assert "".join(e["data"]["chunk"]["content"] for e in model[1:-1]) == texts[-1]
    generate_end = next(
        e for e in events if e["event"] == "on_chain_end" and e["name"] == "generate"
    )
    assert generate_end["data"]["output"]["answer"] == texts[-1]
    assert generate_end["metadata"]["langgraph_step"] == 5 and generate_end["tags"] == [
        "graph:step:5"
    ]


async def test_join_stream_resumes_exactly_after_a_last_event_id(server: Server) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    modes = ["updates", "messages-tuple"]
    run = await client.runs.create(thread_id, "keel", input=INPUT, stream_mode=modes, context=FRESH)
    assert run["status"] in ("pending", "running")
    whole = [p async for p in client.runs.join_stream(thread_id, run["run_id"])]
    assert [p.event for p in whole][:2] == ["metadata", "updates"]
    assert len(whole) == 1 + 5 + 25
    for k in (1, 3, 17, len(whole) - 2):
        rest = [
            (p.id, p.event, p.data)
            async for p in client.runs.join_stream(
                thread_id, run["run_id"], last_event_id=whole[k].id
            )
        ]
        assert rest == [(p.id, p.event, p.data) for p in whole[k + 1 :]]
    for start in ("0", "-1"):  # a Redis stream's first id and the JS SDK's: the whole run
        replayed = client.runs.join_stream(thread_id, run["run_id"], last_event_id=start)
        assert [(p.id, p.event) async for p in replayed] == [(p.id, p.event) for p in whole]
    joined = await client.runs.join(thread_id, run["run_id"])
    assert joined["answer"] and joined["messages"][-1]["content"] == joined["answer"]


async def test_a_cached_answer_streams_its_message_in_messages_tuple(server: Server) -> None:
    """A message no token carried (a cache hit) is sent whole, as LangGraph sends a message a
    node returns; a streamed answer is not sent again."""
    client = get_client(url=server.url)
    question = "Which formats does keel ingest, and how are they chunked?"
    turn = {"messages": [{"role": "user", "content": question}]}
    for cached in (False, True):  # the first run fills the cache, the second is served by it
        thread_id = (await client.threads.create())["thread_id"]
        parts = [
            p
            async for p in client.runs.stream(
                thread_id, "keel", input=turn, stream_mode=["messages-tuple"]
            )
        ]
        state = await client.threads.get_state(thread_id)
        assert state["values"]["cached"] is cached
        messages = [p.data for p in parts if p.event == "messages"]
        answer = state["values"]["messages"][-1]
        if not cached:
            assert len(messages) == 25  # the fake LLM's tokens, and no repeat of the whole
            continue
        assert [p.event for p in parts] == ["metadata", "messages"]
        [(message, metadata)] = messages
        assert message["type"] == "ai" and message["id"] == answer["id"]
        assert message["content"] == answer["content"] == state["values"]["answer"]
        assert metadata["langgraph_node"] == "cache_lookup"


async def test_the_server_honours_the_retrieval_knob(server: Server) -> None:
    """A knob the context schema publishes reaches the run (`retrieval` was once dropped)."""
    client = get_client(url=server.url)
    retrieved = {}
    for mode in ("dense", "lexical"):
        thread_id = (await client.threads.create())["thread_id"]
        context = {**FRESH, "retrieval": mode, "rerank": False}
        parts = client.runs.stream(
            thread_id, "keel", input=INPUT, stream_mode="updates", context=context
        )
        updates = [p.data async for p in parts if p.event == "updates"]
        [passages] = [u["retrieve"]["passages"] for u in updates if "retrieve" in u]
        retrieved[mode] = [(p["id"], p["score"]) for p in passages]
    assert retrieved["dense"] and retrieved["lexical"]
    assert retrieved["dense"] != retrieved["lexical"]


async def test_cancel_with_rollback_restores_the_thread(server: Server) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "keel", input=INPUT)
    before = await client.threads.get_state(thread_id)
    run = await client.runs.create(
        thread_id, "keel", input=INPUT, stream_mode="messages-tuple", context=FRESH
    )
    async for part in client.runs.join_stream(thread_id, run["run_id"]):
        if part.event == "messages":
            break  # the run is generating: its first checkpoints are written
    await client.runs.cancel(thread_id, run["run_id"], wait=True, action="rollback")
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"
    after = await client.threads.get_state(thread_id)
    assert after["checkpoint"] == before["checkpoint"]
    assert len(after["values"]["messages"]) == 2
    frames = [p async for p in client.runs.join_stream(thread_id, run["run_id"])]
    assert frames[-1].event == "error" and frames[-1].data["error"] == "cancelled"


async def test_delete_a_run_and_its_event_log(server: Server, postgres_url: str) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    run = await client.runs.create(
        thread_id, "keel", input=INPUT, stream_mode="messages-tuple", context=FRESH
    )
    async for part in client.runs.join_stream(thread_id, run["run_id"]):
        if part.event == "messages":
            break  # generating
    with pytest.raises(ConflictError):  # a running run is not deleted: cancel it first
        await client.runs.delete(thread_id, run["run_id"])
    await client.runs.join(thread_id, run["run_id"])
    kept = await client.runs.create(thread_id, "keel", input=INPUT, context=FRESH)
    await client.runs.join(thread_id, kept["run_id"])

    await client.runs.delete(thread_id, run["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.get(thread_id, run["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.delete(thread_id, run["run_id"])
    assert [r["run_id"] for r in await client.runs.list(thread_id)] == [kept["run_id"]]
    with psycopg.connect(postgres_url) as conn:
        for table in ("keel_runs", "keel_run_events"):
            rows = conn.execute(
                f"SELECT run_id, count(*) FROM {table} WHERE run_id IN (%s, %s) GROUP BY run_id",
                (run["run_id"], kept["run_id"]),
            ).fetchall()
            assert [r[0] for r in rows] == [kept["run_id"]], table
    # The thread keeps its state: deleting a run's record is not a rollback.
    assert len((await client.threads.get_state(thread_id))["values"]["messages"]) == 4


async def test_join_with_cancel_on_disconnect_takes_the_run_along(server: Server) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    run = await client.runs.create(thread_id, "keel", input=INPUT, context=FRESH)
    url = f"{server.url}/threads/{thread_id}/runs/{run['run_id']}/join"
    async with httpx.AsyncClient(timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):  # the client goes away mid-run
            await http.get(url, params={"cancel_on_disconnect": "1"})
    await client.runs.join(thread_id, run["run_id"])
    assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"


def test_stateless_runs_and_refusals_through_the_sync_client(server: Server) -> None:
    client = get_sync_client(url=server.url)
    values = client.runs.wait(None, "keel", input=INPUT)
    assert values["answer"] and values["messages"][0]["content"] == QUESTION
    parts = list(client.runs.stream(None, "keel", input=INPUT, stream_mode="updates"))
    assert parts[0].event == "metadata" and next(iter(parts[-1].data)) == "cache_lookup"
    assert client.threads.count(metadata={"stateless": True}) == 0

    thread_id = client.threads.create()["thread_id"]
    refusals = [
        (lambda: client.runs.wait(thread_id, "keel", input=INPUT, webhook="ftp://x"), "webhook"),
        (lambda: client.runs.create(thread_id, "keel", input=INPUT, stream_mode="tools"), "mode"),
        (lambda: client.runs.wait(thread_id, "keel", input={"messages": []}), "user message"),
    ]
    for call, reason in refusals:
        # runs.wait raises httpx's error, runs.create the SDK's subclass of it.
        with pytest.raises(httpx.HTTPStatusError, match=reason) as refused:
            call()
        assert refused.value.response.status_code == 422
    for call in (
        lambda: client.runs.wait(thread_id, "other-graph", input=INPUT),
        lambda: client.runs.wait(str(uuid.uuid4()), "keel", input=INPUT),
    ):
        with pytest.raises(httpx.HTTPStatusError) as missing:
            call()
        assert missing.value.response.status_code == 404
    created = client.runs.wait(str(uuid.uuid4()), "keel", input=INPUT, if_not_exists="create")
    assert created["answer"]


def _foreign_calls(tid: str, rid: str) -> list[tuple[str, str, dict, int]]:
    """(path, JSON-RPC method, params, A2A error code) reaching for A's thread and run."""
    message = {"role": "user", "messageId": "m", "parts": [{"kind": "text", "text": "hi"}]}
    call = {"name": "keel", "arguments": {"question": "hi", "thread_id": tid}}
    return [
        ("/mcp", "tools/call", call, 0),
        ("/a2a/keel", "tasks/get", {"id": rid}, -32001),
        ("/a2a/keel", "tasks/cancel", {"id": rid}, -32001),
        ("/a2a/keel", "message/send", {"message": {**message, "taskId": rid}}, -32001),
        ("/a2a/keel", "message/stream", {"message": {**message, "taskId": rid}}, -32001),
        ("/a2a/keel", "message/send", {"message": {**message, "contextId": tid}}, -32602),
    ]


def test_tenants_see_only_their_own_threads_and_runs(
    tmp_path: Path, corpus_dir: Path, postgres_url: str
) -> None:
    keys = {n: (f"key-{n}-{uuid.uuid4().hex}", f"{n}{uuid.uuid4().hex[:8]}") for n in "ab"}
    env = {
        "KEEL_DATABASE_URL": postgres_url,
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_API_KEYS": json.dumps({hash_key(k): t for k, t in keys.values()}),
    }
    shutil.copytree(corpus_dir, tmp_path / "data")
    with Server(env, tmp_path / "server.log") as auth_server:
        base = auth_server.url
        # The SDK's api_key and its plain headers both carry the key.
        a = get_sync_client(url=base, api_key=keys["a"][0])
        b = get_sync_client(url=base, headers={"X-API-Key": keys["b"][0]})
        with pytest.raises(httpx.HTTPStatusError) as anonymous:
            get_sync_client(url=base, api_key=None, headers={}).threads.search()
        assert anonymous.value.response.status_code == 401
        tag = uuid.uuid4().hex
        tid = a.threads.create(metadata={"tag": tag})["thread_id"]
        run = a.runs.create(tid, "keel", input=INPUT)
        a.runs.join(tid, run["run_id"])
        checkpoint = a.threads.get_state(tid)["checkpoint_id"]
        assert b.threads.search(metadata={"tag": tag}) == [] and b.threads.count() == 0
        with pytest.raises(ConflictError):  # A's id is taken, even for B
            b.threads.create(thread_id=tid)

        rid = run["run_id"]
        body = {"assistant_id": "keel", "input": INPUT}
        foreign = [
            ("GET", f"/threads/{tid}", None, {}),
            ("PATCH", f"/threads/{tid}", {"metadata": {"x": 1}}, {}),
            ("GET", f"/threads/{tid}/state", None, {}),
            ("GET", f"/threads/{tid}/state/{checkpoint}", None, {}),
            ("POST", f"/threads/{tid}/state/checkpoint", {"checkpoint": {}}, {}),
            ("POST", f"/threads/{tid}/state", {"values": {"answer": "x"}}, {}),
            ("GET", f"/threads/{tid}/history", None, {}),
            ("POST", f"/threads/{tid}/history", {}, {}),
            ("POST", f"/threads/{tid}/copy", None, {}),
            ("GET", f"/threads/{tid}/runs", None, {}),
            ("GET", f"/threads/{tid}/runs/{rid}", None, {}),
            ("GET", f"/threads/{tid}/runs/{rid}/join", None, {}),
            ("GET", f"/threads/{tid}/runs/{rid}/stream", None, {}),
            ("GET", f"/threads/{tid}/runs/{rid}/stream", None, {"Last-Event-ID": f"{rid}:2"}),
            ("POST", f"/threads/{tid}/runs/{rid}/cancel", None, {}),
            ("DELETE", f"/threads/{tid}/runs/{rid}", None, {}),
            ("POST", f"/threads/{tid}/runs/stream", body, {}),
            ("POST", f"/threads/{tid}/runs/wait", body, {}),
            ("POST", f"/threads/{tid}/runs", body, {}),
            ("POST", f"/threads/{tid}/runs", {**body, "checkpoint_id": checkpoint}, {}),
            ("GET", f"/threads/{tid}/stream", None, {}),
            ("GET", f"/threads/{tid}/stream", None, {"Last-Event-ID": f"{rid}:2"}),
            ("DELETE", f"/threads/{tid}", None, {}),
        ]
        with httpx.Client(base_url=base, timeout=30) as http:
            for method, path, json_body, extra in foreign:
                headers = {"X-API-Key": keys["b"][0], **extra}
                response = http.request(method, path, json=json_body, headers=headers)
                assert response.status_code == 404, (method, path, response.text)
            # The agent protocols answer in JSON-RPC: an error, and nothing of A's.
            for path, method, params, code in _foreign_calls(tid, rid):
                call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
                headers = {
                    "X-API-Key": keys["b"][0],
                    "Accept": "application/json, text/event-stream",
                }
                response = http.post(path, json=call, headers=headers)
                assert response.status_code == 200, (path, method, response.text)
                (reply,) = [
                    json.loads(line.removeprefix("data:"))
                    for line in response.text.splitlines()
                    if line.startswith("data:")
                ] or [response.json()]
                if path == "/mcp":
                    assert reply["result"]["isError"] is True, reply
                    text = reply["result"]["content"][0]["text"]
                    assert text == f"not_found: thread {tid} not found"
                else:
                    assert reply["error"]["code"] == code, reply
                assert QUESTION not in response.text and "answer" not in response.text
            # Pruning names threads by id: another tenant's are skipped, never touched.
            for strategy in ("delete", "keep_latest"):
                body = {"thread_ids": [tid], "strategy": strategy}
                pruned = http.post("/threads/prune", json=body, headers={"X-API-Key": keys["b"][0]})
                assert pruned.json() == {"pruned_count": 0}
        assert a.threads.get(tid)["metadata"] == {"tag": tag}
        assert a.runs.get(tid, rid)["status"] == "success"
        assert len(a.threads.get_history(tid, limit=100)) > 1
