"""Thread copy, breakpoints and commands, and forks from an earlier checkpoint (time travel),
driven by the official Python client against a real `keel serve` on Postgres."""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError

from tests.conftest import Server, two_tenant_server

QUESTIONS = [
    "How does keel avoid duplicate chunks when the same file is ingested twice?",
    "Do chunks overlap?",
    "How are threads resumed?",
]
FRESH = {"use_cache": False}


def _input(n: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": QUESTIONS[n]}]}


@pytest.fixture(scope="module")
def tenants(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, postgres_url: str, fake_llm_url: str
) -> Iterator[tuple[Server, dict[str, str]]]:
    with two_tenant_server(
        tmp_path_factory.mktemp("branches"),
        corpus_dir,
        postgres_url,
        fake_llm_url,
        KEEL_LLM_MODEL="slow-0-9",
    ) as server:
        yield server


@pytest.fixture
def client(tenants: tuple[Server, dict[str, str]]) -> LangGraphClient:
    server, keys = tenants
    return get_client(url=server.url, api_key=keys["a"])


def _contents(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["type"], m["content"]) for m in state["values"]["messages"]]


def _ancestors(history: list[dict[str, Any]], head: str) -> list[str]:
    """`head` and the checkpoints it descends from: its branch of the history."""
    by_id = {h["checkpoint_id"]: h for h in history}
    found: list[str] = []
    current: str | None = head
    while current is not None:
        found.append(current)
        current = by_id[current]["parent_checkpoint_id"]
    return found


async def _nodes(client: LangGraphClient, thread_id: str, **run: Any) -> list[str]:
    """The nodes a run went through, from its `updates` frames."""
    parts = client.runs.stream(thread_id, "keel", stream_mode="updates", context=FRESH, **run)
    return [next(iter(p.data)) async for p in parts if p.event == "updates"]


async def test_copy_has_the_same_checkpoints_and_goes_its_own_way(
    client: LangGraphClient, tenants: tuple[Server, dict[str, str]]
) -> None:
    server, keys = tenants
    tag = uuid.uuid4().hex
    source = (await client.threads.create(metadata={"tag": tag}))["thread_id"]
    await client.runs.wait(source, "keel", input=_input(0), context=FRESH)
    copied = await client.threads.copy(source)
    copy_id = copied["thread_id"]
    assert copy_id != source and copied["metadata"] == {"tag": tag}
    assert copied["status"] == "idle"

    state, copy_state = (
        await client.threads.get_state(source),
        await client.threads.get_state(copy_id),
    )
    assert copy_state["values"] == state["values"]
    assert copy_state["checkpoint_id"] == state["checkpoint_id"]
    assert copy_state["checkpoint"]["thread_id"] == copy_id
    history = await client.threads.get_history(source, limit=100)
    copy_history = await client.threads.get_history(copy_id, limit=100)

    def shape(h: dict[str, Any]) -> tuple:
        return (h["checkpoint_id"], h["parent_checkpoint_id"], h["next"], h["metadata"]["writes"])

    assert [shape(h) for h in copy_history] == [shape(h) for h in history]
    assert await client.threads.count(metadata={"tag": tag}) == 2

    # A turn on the copy leaves the source as it was.
    await client.runs.wait(copy_id, "keel", input=_input(1), context=FRESH)
    assert len(_contents(await client.threads.get_state(copy_id))) == 4
    assert (await client.threads.get_state(source))["checkpoint_id"] == state["checkpoint_id"]
    assert len(await client.threads.get_history(source, limit=100)) == len(history)

    other = get_client(url=server.url, api_key=keys["b"])
    for thread_id in (source, str(uuid.uuid4())):
        with pytest.raises(NotFoundError):
            await other.threads.copy(thread_id)
    assert await other.threads.count() == 0


async def test_interrupt_before_then_resume_with_a_command(client: LangGraphClient) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    first = await client.runs.create(
        thread_id, "keel", input=_input(0), interrupt_before=["generate"], context=FRESH
    )
    values = await client.runs.join(thread_id, first["run_id"])
    assert values["passages"] and not values.get("answer")
    assert (await client.runs.get(thread_id, first["run_id"]))["status"] == "interrupted"
    thread = await client.threads.get(thread_id)
    assert thread["status"] == "interrupted"
    assert await client.threads.count(status="interrupted") >= 1
    state = await client.threads.get_state(thread_id)
    assert state["next"] == ["generate"] and len(_contents(state)) == 1

    assert await _nodes(client, thread_id, command={"resume": "go on"}) == ["generate"]
    state = await client.threads.get_state(thread_id)
    assert state["next"] == [] and state["values"]["answer"]
    assert [kind for kind, _ in _contents(state)] == ["human", "ai"]
    assert (await client.threads.get(thread_id))["status"] == "idle"


async def test_interrupt_after_then_continue_without_input(client: LangGraphClient) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    assert await _nodes(client, thread_id, input=_input(0), interrupt_after=["retrieve"]) == [
        "guard",
        "cache_lookup",
        "retrieve",
        "__interrupt__",
    ]
    assert (await client.threads.get_state(thread_id))["next"] == ["rerank"]
    # No input and no command: the thread goes on from where it stopped.
    # (rerank over its time budget on a loaded machine goes on to generate all the same)
    assert (await _nodes(client, thread_id, input=None))[0] == "rerank"
    assert [k for k, _ in _contents(await client.threads.get_state(thread_id))] == ["human", "ai"]


async def test_a_new_message_after_a_breakpoint_starts_a_new_turn(client: LangGraphClient) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "keel", input=_input(0), interrupt_before="*", context=FRESH)
    # "*" is every node the run may stop before: all but the guard, which reads the message.
    assert (await client.threads.get_state(thread_id))["next"] == ["cache_lookup"]
    nodes = await _nodes(client, thread_id, input=_input(1))
    assert nodes[:3] == ["guard", "cache_lookup", "retrieve"]
    contents = _contents(await client.threads.get_state(thread_id))
    assert [c for _, c in contents[:2]] == [QUESTIONS[0], QUESTIONS[1]]
    assert [k for k, _ in contents] == ["human", "human", "ai"]
    assert (await client.threads.get(thread_id))["status"] == "idle"


async def test_command_update_and_goto(client: LangGraphClient) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "keel", input=_input(0), context=FRESH)
    before = await client.threads.get_state(thread_id)
    # Written to the state (messages redacted, as every input is), then straight to generate.
    note = {"type": "human", "content": "mail me at jane.doe@example.com"}
    nodes = await _nodes(
        client, thread_id, command={"update": {"messages": [note]}, "goto": "generate"}
    )
    assert nodes == ["generate"]
    after = await client.threads.get_state(thread_id)
    contents = _contents(after)
    assert len(contents) == 4 and contents[:2] == _contents(before)
    assert contents[2][0] == "human" and "jane.doe@example.com" not in contents[2][1]
    assert contents[3] == ("ai", after["values"]["answer"])


async def test_bad_commands_and_breakpoints_are_refused(
    client: LangGraphClient, tenants: tuple[Server, dict[str, str]]
) -> None:
    server, keys = tenants
    thread_id = (await client.threads.create())["thread_id"]
    body = {"assistant_id": "keel"}
    refused = [
        {**body, "input": _input(0), "command": {"resume": 1}},  # one or the other
        {**body, "command": {"goto": "nowhere"}},
        {**body, "input": _input(0), "interrupt_before": ["nowhere"]},
        {**body, "input": _input(0), "interrupt_after": "also-nowhere"},
        {**body, "input": _input(0), "interrupt_before": ["guard"]},
        {**body, "command": {"update": ["not", "an", "object"]}},
        {**body, "input": _input(0), "webhook": "http://127.0.0.1:9/hook"},
        {**body, "command": {"resume": None}},  # a command that says nothing
        {**body, "command": {"update": {}, "goto": []}},  # nor does this one
        body,  # no input on a thread with nothing to continue
    ]
    headers = {"X-API-Key": keys["a"]}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        for request in refused:
            response = await http.post(f"/threads/{thread_id}/runs/wait", json=request)
            assert response.status_code == 422, (request, response.text)
        unknown = {**body, "input": _input(0), "checkpoint_id": str(uuid.uuid4())}
        missing = await http.post(f"/threads/{thread_id}/runs/wait", json=unknown)
        assert missing.status_code == 404
    assert await client.runs.list(thread_id) == []


async def test_a_run_from_an_earlier_checkpoint_forks_the_thread(
    client: LangGraphClient,
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "keel", input=_input(0), context=FRESH)
    first = await client.threads.get_state(thread_id)
    await client.runs.wait(thread_id, "keel", input=_input(1), context=FRESH)
    second = await client.threads.get_state(thread_id)
    assert len(_contents(second)) == 4

    # A new message from the end of the first turn: a branch beside the second turn.
    await client.runs.wait(
        thread_id, "keel", input=_input(2), checkpoint_id=first["checkpoint_id"], context=FRESH
    )
    fork = await client.threads.get_state(thread_id)
    contents = _contents(fork)
    assert contents[:2] == _contents(first) and contents[2] == ("human", QUESTIONS[2])
    assert len(contents) == 4 and QUESTIONS[1] not in [c for _, c in contents]
    history = await client.threads.get_history(thread_id, limit=200)
    ancestors = _ancestors(history, fork["checkpoint_id"])
    assert first["checkpoint_id"] in ancestors and second["checkpoint_id"] not in ancestors
    # The other branch is still there, whole.
    kept = await client.threads.get_state(thread_id, checkpoint_id=second["checkpoint_id"])
    assert _contents(kept) == _contents(second)

    # Time travel: replay the first turn from its checkpoint before `generate` (`checkpoint`).
    before_generate = next(
        h
        for h in reversed(history)
        if h["next"] == ["generate"] and len(h["values"]["messages"]) == 1
    )
    nodes = await _nodes(client, thread_id, input=None, checkpoint=before_generate["checkpoint"])
    assert nodes == ["generate"]
    replay = await client.threads.get_state(thread_id)
    history = await client.threads.get_history(thread_id, limit=200)
    ancestors = _ancestors(history, replay["checkpoint_id"])
    assert before_generate["checkpoint_id"] in ancestors
    assert first["checkpoint_id"] not in ancestors and fork["checkpoint_id"] not in ancestors
    assert [k for k, _ in _contents(replay)] == ["human", "ai"]
    assert _contents(replay)[0] == ("human", QUESTIONS[0])
