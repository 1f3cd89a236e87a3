"""Assistants as configured variants of `keel` (create, patch, versions, set latest, delete),
in Postgres and per tenant, driven by the official Python client against a real `keel serve`;
an assistant's knobs become its runs' knobs."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import ConflictError, NotFoundError

from tests.conftest import Server, two_tenant_server

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
INPUT = {"messages": [{"role": "user", "content": QUESTION}]}
DEFAULT_UUID = str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), "keel"))
DEFAULT_KNOBS = {
    "top_k": 5,
    "candidates": 40,
    "use_cache": True,
    "rerank": True,
    "model": None,
    "retrieval": "hybrid",
    "history_turns": 4,
}


@pytest.fixture(scope="module")
def tenants(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, postgres_url: str, fake_llm_url: str
) -> Iterator[tuple[Server, dict[str, str]]]:
    """Two fresh tenants (no assistants yet); the fake LLM streams as many words as the model
    name says."""
    with two_tenant_server(
        tmp_path_factory.mktemp("assistants"),
        corpus_dir,
        postgres_url,
        fake_llm_url,
        KEEL_LLM_MODEL="slow-0-25",
        KEEL_LLM_ALLOWED_MODELS="slow-0-7,slow-0-11",
    ) as server:
        yield server


def _knobs(postgres_url: str, run_id: str) -> dict:
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT request::json->'context', request::json->>'assistant_id' FROM keel_runs "
            "WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    assert row is not None
    return {"knobs": row[0], "assistant_id": row[1]}


async def test_variants_versions_and_latest(tenants: tuple[Server, dict[str, str]]) -> None:
    server, keys = tenants
    client = get_client(url=server.url, api_key=keys["a"])
    tag = uuid.uuid4().hex
    short = await client.assistants.create(
        "keel",
        context={"model": "slow-0-7", "use_cache": False},
        metadata={"team": tag},
        name="Short answers",
        description="seven words",
    )
    assert (
        short["version"] == 1 and short["graph_id"] == "keel" and short["name"] == "Short answers"
    )
    # config.configurable and context are one set of knobs, kept in step as the reference does.
    assert short["context"] == {"model": "slow-0-7", "use_cache": False}
    assert short["config"] == {"configurable": short["context"]}
    chosen = str(uuid.uuid4())
    three = await client.assistants.create(
        "keel", config={"configurable": {"top_k": 3}}, assistant_id=chosen, metadata={"team": tag}
    )
    assert three["assistant_id"] == chosen and three["context"] == {"top_k": 3}
    assert three["name"] == "Untitled"
    with pytest.raises(ConflictError):
        await client.assistants.create("keel", assistant_id=chosen)
    same = await client.assistants.create("keel", assistant_id=chosen, if_exists="do_nothing")
    assert same["context"] == {"top_k": 3}

    # Search and count hold the default assistant and the tenant's variants.
    assert await client.assistants.count() == 3
    assert await client.assistants.count(metadata={"team": tag}) == 2
    found = await client.assistants.search(graph_id="keel", sort_by="name", sort_order="asc")
    assert [a["name"] for a in found] == ["Short answers", "Untitled", "keel"]
    newest = await client.assistants.search(limit=1)
    assert newest[0]["assistant_id"] == chosen
    named = await client.assistants.search(name="SHORT")
    assert [a["assistant_id"] for a in named] == [short["assistant_id"]]
    assert await client.assistants.search(graph_id="other") == []
    assert (await client.assistants.get(short["assistant_id"])) == short

    # A patch is a new version: metadata merged, knobs replaced; set_latest goes back.
    patched = await client.assistants.update(
        short["assistant_id"], context={"model": "slow-0-11"}, metadata={"v": 2}
    )
    assert patched["version"] == 2 and patched["context"] == {"model": "slow-0-11"}
    assert patched["metadata"] == {"team": tag, "v": 2} and patched["name"] == "Short answers"
    versions = await client.assistants.get_versions(short["assistant_id"])
    assert [(v["version"], v["context"]) for v in versions] == [
        (2, {"model": "slow-0-11"}),
        (1, {"model": "slow-0-7", "use_cache": False}),
    ]
    second = await client.assistants.get_versions(short["assistant_id"], metadata={"v": 2})
    assert [v["version"] for v in second] == [2]
    back = await client.assistants.set_latest(short["assistant_id"], 1)
    assert back["version"] == 1 and back["context"] == short["context"]
    assert (await client.assistants.get(short["assistant_id"]))["metadata"] == {"team": tag}
    again = await client.assistants.update(short["assistant_id"], name="Terse")
    assert again["version"] == 3 and again["context"] == short["context"]
    with pytest.raises(NotFoundError):
        await client.assistants.set_latest(short["assistant_id"], 9)

    drawn = await client.assistants.get_graph(chosen)
    assert "generate" in {n["id"] for n in drawn["nodes"]}
    assert "top_k" in (await client.assistants.get_schemas(chosen))["context_schema"]["properties"]

    await client.assistants.delete(chosen)
    with pytest.raises(NotFoundError):
        await client.assistants.get(chosen)
    with pytest.raises(NotFoundError):
        await client.assistants.get_versions(chosen)
    assert await client.assistants.count(metadata={"team": tag}) == 1


def test_bad_assistants_are_refused(tenants: tuple[Server, dict[str, str]]) -> None:
    server, keys = tenants
    http = httpx.Client(base_url=server.url, headers={"X-API-Key": keys["a"]}, timeout=30)
    bodies = [
        {"graph_id": "other"},  # no such graph
        {"graph_id": "keel", "context": {"top_k": "3"}},  # knobs are typed strictly
        {"graph_id": "keel", "context": {"top_k": 99}},
        {"graph_id": "keel", "context": {"model": "gpt-unlisted"}},  # not an allowed model
        {"graph_id": "keel", "context": {"top_k": 2}, "config": {"configurable": {"top_k": 3}}},
        {"graph_id": "keel", "assistant_id": "not-a-uuid"},
        {"graph_id": "keel", "assistant_id": DEFAULT_UUID},
        {"graph_id": "keel", "name": "nul\x00"},
    ]
    for body in bodies:
        response = http.post("/assistants", json=body)
        assert response.status_code == 422, (body, response.text)
    # The default assistant is the graph itself: read-only.
    assert http.patch(f"/assistants/{DEFAULT_UUID}", json={"name": "x"}).status_code == 422
    assert http.delete("/assistants/keel").status_code == 422
    assert http.post(f"/assistants/{DEFAULT_UUID}/latest", json={"version": 1}).status_code == 422
    versions = http.post("/assistants/keel/versions", json={}).json()
    assert [v["assistant_id"] for v in versions] == [DEFAULT_UUID]
    unknown = str(uuid.uuid4())
    for method, path, body in [
        ("GET", f"/assistants/{unknown}", None),
        ("PATCH", f"/assistants/{unknown}", {"name": "x"}),
        ("DELETE", f"/assistants/{unknown}", None),
    ]:
        assert http.request(method, path, json=body).status_code == 404


async def test_an_assistants_knobs_are_its_runs_knobs(
    tenants: tuple[Server, dict[str, str]], postgres_url: str
) -> None:
    server, keys = tenants
    client = get_client(url=server.url, api_key=keys["a"])
    seven = await client.assistants.create(
        "keel", context={"model": "slow-0-7", "use_cache": False, "top_k": 2}
    )
    thread_id = (await client.threads.create())["thread_id"]
    parts = [
        p
        async for p in client.runs.stream(
            thread_id, seven["assistant_id"], input=INPUT, stream_mode="updates"
        )
    ]
    run_id = parts[0].data["run_id"]
    updates = {next(iter(p.data)): next(iter(p.data.values())) for p in parts[1:]}
    assert updates["cache_lookup"]["cache"]["kind"] == "disabled"
    answer = updates["generate"]["answer"]
    assert "word5" in answer and "word6" not in answer  # slow-0-7: six words and "[1]."
    stored = _knobs(postgres_url, run_id)
    assert stored["knobs"] == {**DEFAULT_KNOBS, "model": "slow-0-7", "use_cache": False, "top_k": 2}
    assert stored["assistant_id"] == seven["assistant_id"]
    assert (await client.runs.get(thread_id, run_id))["assistant_id"] == seven["assistant_id"]

    # The run's own context, or its config.configurable, overrides the assistant's knobs.
    by_context = await client.runs.create(
        thread_id, seven["assistant_id"], input=INPUT, context={"model": "slow-0-11"}
    )
    values = await client.runs.join(thread_id, by_context["run_id"])
    assert "word9" in values["answer"] and "word10" not in values["answer"]
    knobs = _knobs(postgres_url, by_context["run_id"])["knobs"]
    assert knobs == {**DEFAULT_KNOBS, "model": "slow-0-11", "use_cache": False, "top_k": 2}
    by_config = await client.runs.create(
        thread_id, seven["assistant_id"], input=INPUT, config={"configurable": {"top_k": 4}}
    )
    await client.runs.join(thread_id, by_config["run_id"])
    knobs = _knobs(postgres_url, by_config["run_id"])["knobs"]
    assert knobs == {**DEFAULT_KNOBS, "model": "slow-0-7", "use_cache": False, "top_k": 4}
    # The default assistant runs with the defaults.
    plain = await client.runs.create(thread_id, "keel", input=INPUT)
    await client.runs.join(thread_id, plain["run_id"])
    assert _knobs(postgres_url, plain["run_id"])["knobs"] == DEFAULT_KNOBS


async def test_assistants_are_per_tenant(tenants: tuple[Server, dict[str, str]]) -> None:
    server, keys = tenants
    a = get_client(url=server.url, api_key=keys["a"])
    b = get_client(url=server.url, headers={"X-API-Key": keys["b"]})
    tag = uuid.uuid4().hex
    mine = await a.assistants.create("keel", context={"top_k": 2}, metadata={"tag": tag})
    aid = mine["assistant_id"]
    assert await b.assistants.search(metadata={"tag": tag}) == []
    assert [x["assistant_id"] for x in await b.assistants.search()] == [DEFAULT_UUID]
    thread_b = (await b.threads.create())["thread_id"]
    headers = {"X-API-Key": keys["b"]}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        foreign = [
            ("GET", f"/assistants/{aid}", None),
            ("PATCH", f"/assistants/{aid}", {"name": "stolen"}),
            ("DELETE", f"/assistants/{aid}", None),
            ("POST", f"/assistants/{aid}/versions", {}),
            ("POST", f"/assistants/{aid}/latest", {"version": 1}),
            ("GET", f"/assistants/{aid}/graph", None),
            ("GET", f"/assistants/{aid}/schemas", None),
            ("GET", f"/assistants/{aid}/subgraphs", None),
            ("POST", f"/threads/{thread_b}/runs/wait", {"assistant_id": aid, "input": INPUT}),
            ("POST", "/runs/wait", {"assistant_id": aid, "input": INPUT}),
        ]
        for method, path, body in foreign:
            response = await http.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
    # Ids are per tenant: B may use the same id for an assistant of its own.
    theirs = await b.assistants.create("keel", assistant_id=aid, context={"top_k": 7})
    assert theirs["context"] == {"top_k": 7}
    assert (await a.assistants.get(aid))["context"] == {"top_k": 2}
    await b.assistants.delete(aid)
    assert (await a.assistants.get(aid))["name"] == "Untitled"
