"""MCP at `/mcp`, driven by the official `mcp` client (`ClientSession` over its Streamable HTTP
client) against a real `keel serve`, on Postgres and on the embedded default (SQLite): tools are
the tenant's assistants, a call answers with citations and reports progress node by node, a
thread continues, and another tenant sees and reaches nothing of the first's."""

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
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from api.auth import hash_key
from tests.conftest import ROOT, Server

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
FOLLOW_UP = "And what happens to the old chunks of a changed file?"
SAMPLES = {p.name for p in (ROOT / "samples" / "corpus").iterdir()}


@dataclass
class Deployment:
    """A server, each tenant's API key, and the variant assistant each tenant created."""

    server: Server
    keys: dict[str, str]
    variants: dict[str, str]


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    corpus_dir: Path,
    postgres_url: str,
) -> Iterator[Deployment]:
    """`keel serve` with two fresh tenants, `a` (the sample corpus) and `b` (no documents),
    answering extractively; on Postgres, or on the embedded SQLite default."""
    tmp = tmp_path_factory.mktemp(f"mcp-{request.param}")
    shutil.copytree(corpus_dir, tmp / "data")
    keys = {n: (f"key-{n}-{uuid.uuid4().hex}", f"{n}{uuid.uuid4().hex[:8]}") for n in "ab"}
    env = {
        "KEEL_DATA_DIR": str(tmp / "data"),
        "KEEL_API_KEYS": json.dumps({hash_key(k): t for k, t in keys.values()}),
    }
    if request.param == "postgres":
        env["KEEL_DATABASE_URL"] = postgres_url
    with Server(env, tmp / "server.log") as server:
        a, b = ({"X-API-Key": keys[n][0]} for n in "ab")
        files = [("files", (p.name, p.read_bytes())) for p in (ROOT / "samples/corpus").iterdir()]
        with httpx.Client(base_url=server.url, timeout=120) as http:
            http.post("/v1/documents", files=files, headers=a).raise_for_status()
            variants = {
                n: http.post("/assistants", json=body, headers=h).raise_for_status().json()
                for n, h, body in (
                    (
                        "a",
                        a,
                        {"graph_id": "keel", "name": "Short answers", "context": {"top_k": 2}},
                    ),
                    ("b", b, {"graph_id": "keel", "name": "b only", "description": "B's own"}),
                )
            }
        yield Deployment(
            server,
            {n: key for n, (key, _) in keys.items()},
            {n: v["assistant_id"] for n, v in variants.items()},
        )
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
    assert list(listed["a"]) == ["keel", "Short_answers"]
    assert list(listed["b"]) == ["keel", "b_only"]
    short, b_only = listed["a"]["Short_answers"], listed["b"]["b_only"]
    assert short.title == "Short answers" and b_only.description == "B's own"
    assert (short.meta or {})["keel/assistant_id"] == deployment.variants["a"]
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
        assert "skipped" in answer["answer"] and answer["service_level"] == "full"
        assert answer["citations"] and {c["source"] for c in answer["citations"]} <= SAMPLES
        assert answer["degraded"] == [] and answer["found"] is True
        text = first.content[0].text  # type: ignore[union-attr]
        assert text.startswith(answer["answer"]) and "\nSources:\n[1] " in text
        # One notification per run start and node start and end, in order, counting up.
        assert [v for v, _ in progress] == list(range(1, len(progress) + 1))
        messages = [m for _, m in progress]
        assert messages[0] == f"run {answer['run_id']} started on thread {answer['thread_id']}"
        assert messages[1:4] == ["guard started", messages[2], "cache_lookup started"]
        assert messages[2] is not None and messages[2].startswith("guard finished in ")
        assert messages[-1] is not None and messages[-1].startswith("generate finished in ")

        second = await session.call_tool(
            "Short_answers", {"question": FOLLOW_UP, "thread_id": answer["thread_id"]}
        )
        assert not second.is_error, second.content
        follow = second.structured_content
        assert follow is not None and follow["thread_id"] == answer["thread_id"]
        assert follow["run_id"] != answer["run_id"] and follow["citations"]
        assert follow["assistant_id"] == deployment.variants["a"]
    # The runs are the Agent Server's runs: the same rows, on the same thread.
    headers = {"X-API-Key": deployment.keys["a"]}
    async with httpx.AsyncClient(base_url=deployment.server.url, headers=headers) as http:
        runs = (await http.get(f"/threads/{answer['thread_id']}/runs")).json()
    assert [(r["run_id"], r["status"], r["assistant_id"]) for r in runs] == [
        (follow["run_id"], "success", deployment.variants["a"]),
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
