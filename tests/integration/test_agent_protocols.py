"""The agent protocols against a real `keel serve`, on Postgres and on the embedded default
(SQLite), each driven by its official client.

MCP at `/mcp` (`mcp`'s `ClientSession` over its Streamable HTTP client): tools are the tenant's
assistants, a call answers with citations and reports progress as nodes start, a thread continues.
A2A at `/a2a/{assistant_id}` (`a2a-sdk`'s client from the agent card): send, stream, get, cancel,
and a breakpoint's `input-required` task resumed by a follow-up. In both, another tenant sees and
reaches nothing of the first's."""

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
from a2a.client import Client as A2AClient
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.helpers.proto_helpers import get_data_parts
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError, TaskNotCancelableError, TaskNotFoundError
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from api.auth import hash_key
from tests.conftest import ROOT, Server
from tests.fake_llm import STREAM_ONLY

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
FOLLOW_UP = "And what happens to the old chunks of a changed file?"
SAMPLES = {p.name for p in (ROOT / "samples" / "corpus").iterdir()}
SLOW_MODEL = "slow-40-60"  # the fake LLM: 60 words, 40 ms apart
NODES = ("guard", "cache_lookup", "retrieve", "rerank", "generate")  # in the order they start


def assert_node_progress(messages: list[str | None]) -> None:
    """Progress after the first notification names nodes as they start, in the graph's order
    (some skipped: at most one notification each 0.1 s)."""
    started = [m.removesuffix(" started") if m else m for m in messages]
    assert all(m and m.endswith(" started") for m in messages), messages
    assert started == sorted(started, key=NODES.index), messages


@dataclass
class Deployment:
    """A server, each tenant's API key, and the assistant ids of the variants they created."""

    server: Server
    keys: dict[str, str]
    variants: dict[str, str]  # by name


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    corpus_dir: Path,
    postgres_url: str,
    fake_llm_url: str,
) -> Iterator[Deployment]:
    """`keel serve` with two fresh tenants, `a` (the sample corpus, and a `Slow` assistant whose
    answers take seconds) and `b` (no documents), the fake LLM answering; on Postgres, or on the
    embedded SQLite default."""
    tmp = tmp_path_factory.mktemp(f"protocols-{request.param}")
    shutil.copytree(corpus_dir, tmp / "data")
    keys = {n: (f"key-{n}-{uuid.uuid4().hex}", f"{n}{uuid.uuid4().hex[:8]}") for n in "ab"}
    env = {
        "KEEL_DATA_DIR": str(tmp / "data"),
        "KEEL_API_KEYS": json.dumps({hash_key(k): t for k, t in keys.values()}),
        "KEEL_LLM_BASE_URL": fake_llm_url,
        "KEEL_LLM_API_KEY": "test",
        "KEEL_LLM_MODEL": "slow-0-12",
        "KEEL_LLM_ALLOWED_MODELS": SLOW_MODEL,
        **STREAM_ONLY,  # the fake model's words are not grounded in the passages
    }
    if request.param == "postgres":
        env["KEEL_DATABASE_URL"] = postgres_url
    with Server(env, tmp / "server.log") as server:
        a, b = ({"X-API-Key": keys[n][0]} for n in "ab")
        files = [("files", (p.name, p.read_bytes())) for p in (ROOT / "samples/corpus").iterdir()]
        with httpx.Client(base_url=server.url, timeout=120) as http:
            http.post("/v1/documents", files=files, headers=a).raise_for_status()
            created = [
                (a, {"name": "Short answers", "context": {"top_k": 2}}),
                (a, {"name": "Slow", "context": {"model": SLOW_MODEL, "use_cache": False}}),
                (b, {"name": "b only", "description": "B's own"}),
            ]
            variants = {
                body["name"]: http.post("/assistants", json={"graph_id": "keel", **body}, headers=h)
                .raise_for_status()
                .json()["assistant_id"]
                for h, body in created
            }
        yield Deployment(server, {n: key for n, (key, _) in keys.items()}, variants)
        assert "unhandled error" not in server.log.read_text()


@asynccontextmanager
async def mcp_session(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with the server, authenticated by `key`."""
    headers = {"X-API-Key": key} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _messages(deployment: Deployment, tenant: str, thread_id: str) -> list[dict]:
    headers = {"X-API-Key": deployment.keys[tenant]}
    async with httpx.AsyncClient(base_url=deployment.server.url, headers=headers) as http:
        thread = (await http.get(f"/threads/{thread_id}")).raise_for_status().json()
    return thread["values"]["messages"]


async def test_each_tenant_lists_its_own_assistants_as_tools(deployment: Deployment) -> None:
    listed = {}
    for tenant in "ab":
        async with mcp_session(deployment.server.url, deployment.keys[tenant]) as session:
            listed[tenant] = {t.name: t for t in (await session.list_tools()).tools}
    assert list(listed["a"]) == ["keel", "Short_answers", "Slow"]
    assert list(listed["b"]) == ["keel", "b_only"]
    short, b_only = listed["a"]["Short_answers"], listed["b"]["b_only"]
    assert short.title == "Short answers" and b_only.description == "B's own"
    assert (short.meta or {})["keel/assistant_id"] == deployment.variants["Short answers"]
    schema = short.input_schema
    assert schema["required"] == ["question"] and set(schema["properties"]) == {
        "question",
        "thread_id",
    }
    assert schema["additionalProperties"] is False
    assert short.output_schema and "citations" in short.output_schema["required"]


async def test_a_call_answers_with_citations_progress_and_a_thread_to_continue(
    deployment: Deployment,
) -> None:
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async with mcp_session(deployment.server.url, deployment.keys["a"]) as session:
        first = await session.call_tool(
            "keel", {"question": QUESTION}, progress_callback=on_progress
        )
        assert not first.is_error, first.content
        answer = first.structured_content
        assert answer is not None
        assert "[1]" in answer["answer"] and answer["service_level"] == "full"
        assert answer["citations"] and {c["source"] for c in answer["citations"]} <= SAMPLES
        assert answer["degraded"] == [] and answer["found"] is True
        text = first.content[0].text  # type: ignore[union-attr]
        assert text.startswith(answer["answer"]) and "\nSources:\n[1] " in text
        # One notification once the run is recorded, then the nodes as they start, counting up.
        values = [v for v, _ in progress]
        assert values[0] == 1 and values == sorted(set(values)) and values[-1] <= 1 + len(NODES)
        messages = [m for _, m in progress]
        assert messages[0] == f"run {answer['run_id']} on thread {answer['thread_id']}"
        assert_node_progress(messages[1:])

        second = await session.call_tool(
            "Short_answers", {"question": FOLLOW_UP, "thread_id": answer["thread_id"]}
        )
        assert not second.is_error, second.content
        follow = second.structured_content
        assert follow is not None and follow["thread_id"] == answer["thread_id"]
        assert follow["run_id"] != answer["run_id"] and follow["citations"]
        assert follow["assistant_id"] == deployment.variants["Short answers"]
    # The runs are the Agent Server's runs: the same rows, on the same thread.
    headers = {"X-API-Key": deployment.keys["a"]}
    async with httpx.AsyncClient(base_url=deployment.server.url, headers=headers) as http:
        runs = (await http.get(f"/threads/{answer['thread_id']}/runs")).json()
    assert [(r["run_id"], r["status"], r["assistant_id"]) for r in runs] == [
        (follow["run_id"], "success", deployment.variants["Short answers"]),
        (answer["run_id"], "success", runs[1]["assistant_id"]),
    ]
    assert len(await _messages(deployment, "a", answer["thread_id"])) == 4


async def test_another_tenant_reaches_neither_the_tools_nor_the_threads(
    deployment: Deployment,
) -> None:
    async with mcp_session(deployment.server.url, deployment.keys["a"]) as session:
        mine = (await session.call_tool("keel", {"question": QUESTION})).structured_content
    assert mine is not None
    thread_id = mine["thread_id"]
    async with mcp_session(deployment.server.url, deployment.keys["b"]) as session:
        foreign = await session.call_tool("keel", {"question": "leak?", "thread_id": thread_id})
        assert foreign.is_error
        assert foreign.content[0].text == f"not_found: thread {thread_id} not found"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as unknown:
            await session.call_tool("Short_answers", {"question": QUESTION})
        assert unknown.value.code == -32602 and "unknown tool" in unknown.value.message
        # B's own documents hold nothing on it: nothing of A's corpus is cited.
        own = (await session.call_tool("keel", {"question": QUESTION})).structured_content
        assert own is not None and own["citations"] == [] and own["found"] is False
    assert len(await _messages(deployment, "a", thread_id)) == 2  # B's call added nothing


async def test_the_per_request_protocol_version_and_a_client_that_goes_away(
    deployment: Deployment,
) -> None:
    """The SDK's high-level `Client` negotiates 2026-07-28 (no handshake, a request each); a
    call whose client stops waiting takes its run with it."""
    url, key = deployment.server.url, deployment.keys["a"]
    progress: list[str | None] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async with (
        httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=60) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        assert client.session.protocol_version == "2026-07-28"
        assert next(t.name for t in (await client.list_tools()).tools) == "keel"
        result = await client.call_tool(
            "keel",
            {"question": "How is a document's text split into chunks?"},
            progress_callback=on_progress,
        )
        assert not result.is_error and result.structured_content
        assert progress[0] and progress[0].startswith("run ")
        assert_node_progress(progress[1:])
    progress.clear()
    async with mcp_session(url, key) as session:
        with contextlib.suppress(TimeoutError):  # the Slow assistant answers in about 2.4 s
            async with asyncio.timeout(1.0):
                await session.call_tool(
                    "Slow",
                    {"question": "What does the operations page say?"},
                    progress_callback=on_progress,
                )
    # While the model writes, the client has heard that it does.
    assert progress[-1] == "generate started"
    assert_node_progress(progress[1:])
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        slow = {"metadata": {"assistant_id": deployment.variants["Slow"]}, "limit": 1}
        (thread,) = (await http.post("/threads/search", json=slow)).json()
        for _ in range(50):
            runs = (await http.get(f"/threads/{thread['thread_id']}/runs")).json()
            if runs[0]["status"] != "running":
                break
            await asyncio.sleep(0.1)
    assert [r["status"] for r in runs] == ["interrupted"]  # the Agent API's word for cancelled


async def test_bad_arguments_are_tool_errors_and_bad_requests_are_4xx(
    deployment: Deployment,
) -> None:
    async with mcp_session(deployment.server.url, deployment.keys["a"]) as session:
        cases = {
            "question: Field required": {},
            "question: String should have at least 1 character": {"question": ""},
            "thread_id: String should match pattern": {"question": "x", "thread_id": "../x"},
            "extra: Extra inputs are not permitted": {"question": "x", "extra": 1},
            "not_found: thread": {"question": "x", "thread_id": "no-such-thread"},
            "invalid_input: message longer than 8000": {"question": "x" * 8001},
        }
        for expected, arguments in cases.items():
            result = await session.call_tool("keel", arguments)
            assert result.is_error, arguments
            assert expected in result.content[0].text, result.content  # type: ignore[union-attr]
    url = f"{deployment.server.url}/mcp"
    good = {"X-API-Key": deployment.keys["a"], "Accept": "application/json, text/event-stream"}
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx.AsyncClient(timeout=30) as http:
        anonymous = await http.post(url, json=listing, headers={"Accept": good["Accept"]})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"
        wrong_key = await http.post(url, json=listing, headers={**good, "X-API-Key": "nobody"})
        assert wrong_key.status_code == 401
        not_json = await http.post(
            url, content=b"{nope", headers={**good, "Content-Type": "application/json"}
        )
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == -32700
        not_rpc = await http.post(url, json={"hello": "world"}, headers=good)
        assert not_rpc.status_code == 400
        assert (await http.get(url, headers=good)).status_code == 405
        assert (await http.post(f"{url}?x=1", json=listing, headers=good)).status_code == 422


@asynccontextmanager
async def a2a_client(
    url: str, key: str, assistant: str = "keel", streaming: bool = False
) -> AsyncIterator[A2AClient]:
    """The official client, from the assistant's agent card, authenticated by `key`."""
    async with httpx.AsyncClient(headers={"X-API-Key": key}, timeout=60) as http:
        path = f"/.well-known/agent-card.json?assistant_id={assistant}"
        card = await A2ACardResolver(http, url, path).get_agent_card()
        config = ClientConfig(httpx_client=http, streaming=streaming)
        yield ClientFactory(config).create(card)


def _message(text: str, **fields: object) -> Message:
    return Message(
        role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)], **fields
    )


async def _send(
    client: A2AClient, message: Message, wait: bool = True
) -> tuple[Task, list[StreamResponse]]:
    """Sends `message`; the task as the last event leaves it, and every event."""
    config = SendMessageConfiguration(return_immediately=not wait)
    request = SendMessageRequest(message=message, configuration=config)
    events = [event async for event in client.send_message(request)]
    task = await client.get_task(GetTaskRequest(id=_task_id(events[0])))
    return task, events


def _task_id(event: StreamResponse) -> str:
    return event.task.id if event.HasField("task") else event.status_update.task_id


def _answer(task: Task) -> dict:
    """The answer's structured part."""
    (artifact,) = task.artifacts
    (fields,) = get_data_parts(artifact.parts)
    assert artifact.parts[0].text.startswith(fields["answer"])
    return fields


async def test_a2a_card_send_and_get(deployment: Deployment) -> None:
    url, key = deployment.server.url, deployment.keys["a"]
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as http:
        card = (await http.get("/.well-known/agent-card.json?assistant_id=Short-x")).json()
        assert card["error"]["code"] == "not_found"
        variant = deployment.variants["Short answers"]
        card = (await http.get(f"/.well-known/agent-card.json?assistant_id={variant}")).json()
    assert card["name"] == "Short answers" and card["url"] == f"{url}/a2a/{variant}"
    assert card["protocolVersion"] == "0.3.0" and card["capabilities"]["streaming"] is True
    async with a2a_client(url, key, variant) as client:
        task, events = await _send(client, _message(QUESTION))
        assert len(events) == 1 and events[0].task.id == task.id
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        answer = _answer(task)
        assert "[1]" in answer["answer"] and {c["source"] for c in answer["citations"]} <= SAMPLES
        assert answer["run_id"] == task.id and answer["thread_id"] == task.context_id
        assert answer["assistant_id"] == variant and answer["service_level"] == "full"
        # A message in the same context continues the thread, as a new task.
        follow, _ = await _send(client, _message(FOLLOW_UP, context_id=task.context_id))
        assert follow.id != task.id and follow.context_id == task.context_id
        assert follow.status.state == TaskState.TASK_STATE_COMPLETED
    assert len(await _messages(deployment, "a", task.context_id)) == 4


async def test_a2a_stream_reports_each_node_then_the_answer(deployment: Deployment) -> None:
    async with a2a_client(deployment.server.url, deployment.keys["a"], streaming=True) as client:
        task, events = await _send(
            client, _message("Which events does keel stream to a client during a run?")
        )
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task" and kinds[-2:] == ["artifact_update", "status_update"]
    working = [e.status_update for e in events[1:-2]]
    assert {u.status.state for u in working} == {TaskState.TASK_STATE_WORKING}
    nodes = [u.status.message.parts[0].text for u in working]
    assert nodes[:3] == ["guard started", "cache_lookup started", "retrieve started"]
    assert nodes[-1] == "generate started"
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert events[-2].artifact_update.artifact == task.artifacts[0]


async def test_a2a_resubscribe_follows_a_running_task_to_its_answer(
    deployment: Deployment,
) -> None:
    url, key, slow = deployment.server.url, deployment.keys["a"], deployment.variants["Slow"]
    async with a2a_client(url, key, slow) as sender:
        task, _ = await _send(sender, _message(QUESTION), wait=False)
    assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)
    async with a2a_client(url, key, slow, streaming=True) as client:
        events = [e async for e in client.subscribe(SubscribeToTaskRequest(id=task.id))]
        done = await client.get_task(GetTaskRequest(id=task.id))
        # Again once it has ended: the same answer, replayed from the run's log.
        again = [e async for e in client.subscribe(SubscribeToTaskRequest(id=task.id))]
    for replayed in (events, again):
        assert replayed[0].task.id == task.id
        assert [e.WhichOneof("payload") for e in replayed[-2:]] == [
            "artifact_update",
            "status_update",
        ]
        assert replayed[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        assert replayed[-2].artifact_update.artifact == done.artifacts[0]
    assert done.status.state == TaskState.TASK_STATE_COMPLETED and "[1]" in _answer(done)["answer"]
    async with a2a_client(url, deployment.keys["b"], streaming=True) as other:
        with pytest.raises(TaskNotFoundError):  # another tenant's task is no task at all
            [e async for e in other.subscribe(SubscribeToTaskRequest(id=task.id))]


async def test_a2a_cancel_a_running_task(deployment: Deployment) -> None:
    slow = deployment.variants["Slow"]
    async with a2a_client(deployment.server.url, deployment.keys["a"], slow) as client:
        task, _ = await _send(client, _message(QUESTION), wait=False)
        assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)
        cancelled = await client.cancel_task(CancelTaskRequest(id=task.id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        got = await client.get_task(GetTaskRequest(id=task.id))
        assert got.status.state == TaskState.TASK_STATE_CANCELED and not got.artifacts
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(CancelTaskRequest(id=task.id))


async def test_a2a_breakpoint_is_input_required_and_a_follow_up_resumes(
    deployment: Deployment,
) -> None:
    stop = {"interrupt_before": ["generate"]}
    async with a2a_client(deployment.server.url, deployment.keys["a"]) as client:
        task, _ = await _send(client, _message("How are threads stored?", metadata=stop))
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED and not task.artifacts
        assert "send a message with this taskId" in task.status.message.parts[0].text
        assert len(await _messages(deployment, "a", task.context_id)) == 1  # no answer yet
        resumed, _ = await _send(
            client, _message("go on", task_id=task.id, context_id=task.context_id)
        )
        assert resumed.id == task.id and resumed.status.state == TaskState.TASK_STATE_COMPLETED
        answer = _answer(resumed)
        assert answer["run_id"] != task.id and "[1]" in answer["answer"]
        with pytest.raises(InvalidParamsError, match="is completed"):
            await _send(client, _message("again", task_id=task.id))
    assert len(await _messages(deployment, "a", task.context_id)) == 2


async def test_a2a_another_tenant_reaches_nothing(deployment: Deployment) -> None:
    url = deployment.server.url
    async with a2a_client(url, deployment.keys["a"]) as client:
        mine, _ = await _send(client, _message(QUESTION))
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": deployment.keys["b"]}) as b:
        variant = deployment.variants["Short answers"]
        card = await b.get(f"/.well-known/agent-card.json?assistant_id={variant}")
        assert card.status_code == 404
        call = {"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": mine.id}}
        assert (await b.post(f"/a2a/{variant}", json=call)).status_code == 404
    async with a2a_client(url, deployment.keys["b"]) as client:
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id=mine.id))
        with pytest.raises(TaskNotFoundError):
            await client.cancel_task(CancelTaskRequest(id=mine.id))
        with pytest.raises(TaskNotFoundError):
            await _send(client, _message("leak?", task_id=mine.id))
        with pytest.raises(InvalidParamsError, match="not found"):
            await _send(client, _message("leak?", context_id=mine.context_id))
    async with a2a_client(url, deployment.keys["b"], streaming=True) as client:
        with pytest.raises(TaskNotFoundError):
            await _send(client, _message("leak?", task_id=mine.id))
        with pytest.raises(InvalidParamsError, match="not found"):
            await _send(client, _message("leak?", context_id=mine.context_id))
    assert len(await _messages(deployment, "a", mine.context_id)) == 2


async def test_a2a_bad_requests_get_clear_errors(deployment: Deployment) -> None:
    headers = {"X-API-Key": deployment.keys["a"]}
    message = {"role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": "hi"}]}
    cases = [
        (b"{nope", 400, -32700),
        (json.dumps({"id": 1, "method": "tasks/get"}).encode(), 400, -32600),
        (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tasks/list"}).encode(), 200, -32601),
        (json.dumps({"jsonrpc": "2.0", "id": 2, "method": "message/send"}).encode(), 200, -32602),
    ]
    bad_params = [
        ("message/send", {"message": {**message, "parts": [{"kind": "data", "data": {}}]}}),
        ("message/send", {"message": {**message, "role": "agent"}}),
        ("message/send", {"message": {**message, "contextId": "../etc"}}),
        ("message/send", {"message": {**message, "metadata": {"interrupt_before": ["nope"]}}}),
        ("message/send", {"message": {**message, "parts": [{"kind": "text", "text": "x" * 9000}]}}),
        ("tasks/get", {"id": "no such task!"}),
        ("tasks/cancel", {}),
    ]
    for method, params in bad_params:
        body = {"jsonrpc": "2.0", "id": method, "method": method, "params": params}
        cases.append((json.dumps(body).encode(), 200, -32602))
    async with httpx.AsyncClient(base_url=deployment.server.url, headers=headers) as http:
        for body, status, code in cases:
            response = await http.post("/a2a/keel", content=body)
            assert response.status_code == status, (body, response.text)
            assert response.json()["error"]["code"] == code, (body, response.text)
        unknown = await http.post("/a2a/keel", json={"jsonrpc": "2.0", "id": 1, "method": "x"})
        assert unknown.json() == {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": -32601, "message": "method 'x' not found"},
        }
        anonymous = await http.post("/a2a/keel", content=cases[2][0], headers={"X-API-Key": ""})
        assert anonymous.status_code == 401
        card = await http.get("/.well-known/agent-card.json")
        assert card.status_code == 422 and "assistant_id" in card.json()["error"]["message"]
