"""The Agent Server's store and crons, driven by the official Python client against two real
`keel serve` replicas on one Postgres: items and crons per tenant, and a due cron run exactly
once (a normal run: a row in `keel_runs`, its events in the log) by whichever replica claims it."""

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError

from api.auth import hash_key
from tests.conftest import Server
from tests.fake_llm import STREAM_ONLY

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
INPUT = {"messages": [{"role": "user", "content": QUESTION}]}
YEARLY = "0 0 1 1 *"  # never due during a test unless the test makes it due


@dataclass
class Replicas:
    """Two servers on one database, and the API keys of tenants A (the one with the ingested
    corpus: `default`) and B."""

    servers: list[Server]
    keys: dict[str, str]
    tenants: dict[str, str]

    def client(self, tenant: str, replica: int = 0) -> LangGraphClient:
        return get_client(url=self.servers[replica].url, api_key=self.keys[tenant])

    def http(self, tenant: str, replica: int = 0) -> httpx.Client:
        headers = {"X-API-Key": self.keys[tenant]}
        return httpx.Client(base_url=self.servers[replica].url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, postgres_url: str, fake_llm_url: str
) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("store-crons")
    tenants = {"a": "default", "b": f"b{uuid.uuid4().hex[:8]}"}
    keys = {n: f"key-{n}-{uuid.uuid4().hex}" for n in tenants}
    env = {
        "KEEL_DATABASE_URL": postgres_url,
        "KEEL_API_KEYS": json.dumps({hash_key(keys[n]): t for n, t in tenants.items()}),
        "KEEL_LLM_BASE_URL": fake_llm_url,
        **STREAM_ONLY,
        "KEEL_LLM_API_KEY": "test",
        "KEEL_LLM_MODEL": "slow-0-9",
        # Both replicas look for due crons five times a second: a double claim would show.
        "KEEL_RUN_HEARTBEAT_S": "0.2",
    }
    servers: list[Server] = []
    try:
        for n in range(2):
            shutil.copytree(corpus_dir, tmp / f"data-{n}")
            servers.append(
                Server({**env, "KEEL_DATA_DIR": str(tmp / f"data-{n}")}, tmp / f"server-{n}.log")
            )
        yield Replicas(servers, keys, tenants)
    finally:
        for server in servers:
            server.stop()
        with psycopg.connect(postgres_url) as conn:  # no cron of this module fires later
            conn.execute("DELETE FROM keel_crons WHERE tenant = ANY(%s)", (list(tenants.values()),))


async def test_store_items_search_namespaces_and_delete(
    replicas: Replicas, postgres_url: str
) -> None:
    a = replicas.client("a")
    tag = uuid.uuid4().hex[:12]  # tenant `default` outlives this run: fresh namespaces
    docs = [
        (["notes", tag, "ann"], "n1", {"kind": "note", "n": 1}),
        (["notes", tag, "ann"], "n2", {"kind": "todo", "n": 2}),
        (["notes", tag, "bob"], "n3", {"kind": "note", "n": 3}),
        (["files", tag], "f1", {"kind": "note", "n": 4}),
    ]
    for namespace, key, value in docs:
        await a.store.put_item(namespace, key, value)

    item = await a.store.get_item(["notes", tag, "ann"], "n1")
    assert item["namespace"] == ["notes", tag, "ann"] and item["key"] == "n1"
    assert item["value"] == {"kind": "note", "n": 1} and item["created_at"] <= item["updated_at"]
    assert await a.store.get_item(["notes", tag, "ann"], "missing") is None
    await a.store.put_item(["notes", tag, "ann"], "n1", {"kind": "note", "n": 10})
    assert (await a.store.get_item(["notes", tag, "ann"], "n1"))["value"]["n"] == 10

    found = await a.store.search_items(["notes", tag])
    assert [i["key"] for i in found["items"]] == ["n1", "n3", "n2"]  # last updated first
    notes = await a.store.search_items(["notes", tag], filter={"kind": "note"})
    assert {i["key"] for i in notes["items"]} == {"n1", "n3"}
    assert [i["key"] for i in (await a.store.search_items(["notes", tag, "bob"]))["items"]] == [
        "n3"
    ]
    page = await a.store.search_items(["notes", tag], limit=1, offset=1)
    assert [i["key"] for i in page["items"]] == ["n3"]
    others = await a.store.search_items(["notes", tag], filter={"n": {"$ne": 3}})
    assert {i["key"] for i in others["items"]} == {"n1", "n2"}

    listed = await a.store.list_namespaces(prefix=["notes", tag])
    assert listed == {"namespaces": [["notes", tag, "ann"], ["notes", tag, "bob"]]}
    cut = await a.store.list_namespaces(prefix=["notes", tag], max_depth=2)
    assert cut == {"namespaces": [["notes", tag]]}
    bob = await a.store.list_namespaces(prefix=["notes", tag], suffix=["bob"])
    assert bob == {"namespaces": [["notes", tag, "bob"]]}

    await a.store.delete_item(["notes", tag, "ann"], "n2")
    await a.store.delete_item(["notes", tag, "ann"], "n2")  # already gone: not an error
    assert await a.store.get_item(["notes", tag, "ann"], "n2") is None

    # The tenant is the hidden first part of each stored namespace.
    with psycopg.connect(postgres_url) as conn:
        prefixes = conn.execute(
            "SELECT DISTINCT prefix FROM store WHERE prefix LIKE %s ORDER BY prefix",
            (f"%{tag}%",),
        ).fetchall()
    assert prefixes == [
        (f"keel.store.default.files.{tag}",),
        (f"keel.store.default.notes.{tag}.ann",),
        (f"keel.store.default.notes.{tag}.bob",),
    ]

    # An item with a ttl is hidden once it expires (here: made to expire in the database).
    await a.store.put_item(["ttl", tag], "t", {"v": 1}, ttl=5)
    assert (await a.store.get_item(["ttl", tag], "t"))["value"] == {"v": 1}
    with psycopg.connect(postgres_url) as conn:
        minutes = conn.execute(
            "UPDATE store SET expires_at = now() - interval '1 second' WHERE prefix = %s "
            "RETURNING ttl_minutes",
            (f"keel.store.default.ttl.{tag}",),
        ).fetchone()
    assert minutes == (5,)
    assert await a.store.get_item(["ttl", tag], "t") is None
    assert (await a.store.search_items(["ttl", tag]))["items"] == []


def test_bad_store_requests_are_refused(replicas: Replicas) -> None:
    with replicas.http("a") as http:
        bad = [
            ("PUT", "/store/items", {"namespace": ["a.b"], "key": "k", "value": {}}),
            ("PUT", "/store/items", {"namespace": [], "key": "k", "value": {}}),
            ("PUT", "/store/items", {"namespace": [""], "key": "k", "value": {}}),
            ("PUT", "/store/items", {"namespace": ["a"], "key": "", "value": {}}),
            ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": []}),
            # beyond 64 bits: Postgres' jsonb would hold it, the embedded store's JSON would not
            ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {"n": -(2**71)}}),
            ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "ttl": -1}),
            ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "ttl": 1e-269}),
            ("DELETE", "/store/items", {"namespace": ["a.b"], "key": "k"}),
            ("POST", "/store/items/search", {"namespace_prefix": ["a."]}),
            ("POST", "/store/items/search", {"filter": {"n": {"$regex": "x"}}}),
            # field names the embedded store cannot query are refused on both
            ("POST", "/store/items/search", {"filter": {"": True}}),
            ("POST", "/store/items/search", {"filter": {"a b": 1}}),
            ("POST", "/store/items/search", {"query": "x" * 2001}),
            ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "index": True}),
            ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "index": [""]}),
            ("POST", "/store/namespaces", {"prefix": ["a.b"]}),
        ]
        for method, path, body in bad:
            response = http.request(method, path, json=body)
            assert response.status_code == 422, (method, body, response.text)
            assert response.json()["error"]["code"] in ("invalid_request", "invalid_input")
        for query in ({"namespace": "", "key": "k"}, {"namespace": "a..b", "key": "k"}):
            assert http.get("/store/items", params=query).status_code == 422


async def test_store_items_are_per_tenant(replicas: Replicas) -> None:
    a, b = replicas.client("a"), replicas.client("b", replica=1)
    tag = uuid.uuid4().hex[:12]
    await a.store.put_item(["shared", tag], "k", {"owner": "a"})
    assert await b.store.get_item(["shared", tag], "k") is None
    assert (await b.store.search_items(["shared", tag]))["items"] == []
    assert (await b.store.search_items([], filter={"owner": "a"}))["items"] == []
    assert (await b.store.list_namespaces(prefix=["shared"]))["namespaces"] == []
    await b.store.delete_item(["shared", tag], "k")  # deletes nothing of A's
    await b.store.put_item(["shared", tag], "k", {"owner": "b"})  # B's own, same name
    assert (await a.store.get_item(["shared", tag], "k"))["value"] == {"owner": "a"}
    assert (await b.store.get_item(["shared", tag], "k"))["value"] == {"owner": "b"}
    # The hidden prefix cannot be named: B's "keel" namespace is B's own.
    assert (await b.store.search_items(["keel"]))["items"] == []


async def test_crons_create_search_count_and_delete(replicas: Replicas) -> None:
    a, b = replicas.client("a"), replicas.client("b")
    tag = uuid.uuid4().hex
    thread_id = (await a.threads.create())["thread_id"]
    on_thread = await a.crons.create_for_thread(
        thread_id, "keel", schedule="*/5 * * * *", input=INPUT, metadata={"tag": tag}
    )
    stateless = await a.crons.create(
        "keel",
        schedule="30 9 * * 1-5",
        input={"messages": [{"role": "user", "content": "mail jane.doe@example.com the news"}]},
        metadata={"tag": tag, "kind": "daily"},
        timezone="Europe/Paris",
        context={"top_k": 3},
    )
    assert on_thread["thread_id"] == thread_id and stateless["thread_id"] is None
    assert on_thread["schedule"] == "*/5 * * * *" and on_thread["enabled"] is True
    assert on_thread["assistant_id"] == stateless["assistant_id"]
    assert stateless["timezone"] == "Europe/Paris" and stateless["payload"]["context"]["top_k"] == 3
    # The next run date is the schedule's next time, in the cron's timezone.
    next_paris = time.strptime(stateless["next_run_date"][:19], "%Y-%m-%dT%H:%M:%S")
    assert next_paris.tm_min == 30 and next_paris.tm_hour in (7, 8)  # 9:30 Paris in UTC
    # Only the redacted message is stored.
    stored = stateless["payload"]["input"]["messages"][0]["content"]
    assert "jane.doe@example.com" not in stored and stored.startswith("mail ")

    mine = await a.crons.search(metadata={"tag": tag}, sort_by="created_at", sort_order="asc")
    assert [c["cron_id"] for c in mine] == [on_thread["cron_id"], stateless["cron_id"]]
    assert [c["cron_id"] for c in await a.crons.search(thread_id=thread_id)] == [
        on_thread["cron_id"]
    ]
    assert await a.crons.count(metadata={"tag": tag}) == 2
    assert await a.crons.count(metadata={"tag": tag, "kind": "daily"}) == 1
    assert len(await a.crons.search(assistant_id="keel", metadata={"tag": tag})) == 2
    selected = await a.crons.search(metadata={"tag": tag}, limit=1, select=["cron_id"])
    assert list(selected[0]) == ["cron_id"]

    updated = await a.crons.update(
        stateless["cron_id"], schedule="0 12 * * *", metadata={"kind": "noon"}, enabled=False
    )
    assert updated["schedule"] == "0 12 * * *" and updated["enabled"] is False
    assert updated["metadata"] == {"tag": tag, "kind": "noon"}
    assert updated["next_run_date"][11:16] in ("10:00", "11:00")  # noon in Paris
    assert updated["payload"]["context"]["top_k"] == 3 and updated["timezone"] == "Europe/Paris"
    disabled = await a.crons.search(enabled=False, metadata={"tag": tag})
    assert [c["cron_id"] for c in disabled] == [stateless["cron_id"]]
    stateless = updated

    # Another tenant sees none of them, and cannot read, change, delete or add to A's thread.
    assert await b.crons.search(metadata={"tag": tag}) == [] and await b.crons.count() == 0
    with replicas.http("b", replica=1) as http:
        for method in ("GET", "DELETE"):
            response = http.request(method, f"/runs/crons/{on_thread['cron_id']}")
            assert response.status_code == 404, (method, response.text)
    with pytest.raises(NotFoundError):
        await b.crons.create_for_thread(thread_id, "keel", schedule=YEARLY, input=INPUT)
    with pytest.raises(NotFoundError):
        await b.crons.delete(stateless["cron_id"])
    with pytest.raises(NotFoundError):
        await b.crons.update(stateless["cron_id"], enabled=True)

    with replicas.http("a") as http:
        got = http.get(f"/runs/crons/{stateless['cron_id']}")
        assert got.status_code == 200 and got.json() == stateless
        refusals = [
            {"schedule": "every minute", "input": INPUT},
            {"schedule": "61 * * * *", "input": INPUT},
            {"schedule": YEARLY, "input": INPUT, "timezone": "Mars/Olympus"},
            {"schedule": YEARLY},
            {"schedule": YEARLY, "input": INPUT, "webhook": "http://127.0.0.1:1/hook"},
            {"schedule": YEARLY, "input": INPUT, "on_run_completed": "delete"},
        ]
        for body in refusals:
            response = http.post("/runs/crons", json={"assistant_id": "keel", **body})
            assert response.status_code == 422, (body, response.text)
        for patch in ({}, {"schedule": "* * *"}, {"on_run_completed": "delete"}):
            response = http.patch(f"/runs/crons/{stateless['cron_id']}", json=patch)
            assert response.status_code == 422, (patch, response.text)
        unknown = http.post(
            f"/threads/{uuid.uuid4()}/runs/crons", json={"schedule": YEARLY, "input": INPUT}
        )
        assert unknown.status_code == 404

    await a.crons.delete(stateless["cron_id"])
    with pytest.raises(NotFoundError):
        await a.crons.delete(stateless["cron_id"])
    assert await a.crons.count(metadata={"tag": tag}) == 1
    await a.threads.delete(thread_id)  # a thread's crons go with it
    assert await a.crons.count(metadata={"tag": tag}) == 0


def _cron_runs(postgres_url: str, cron_ids: list[str]) -> list[tuple[str, str, str]]:
    """(cron id, run id, status) of the runs the crons started.

    Requests are parsed here, not cast in SQL: other tests store requests that are
    valid JSON text but not valid Postgres `json` (a `\\u0000` from the fuzzers).
    """
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT request, run_id, status FROM keel_runs WHERE request LIKE ANY(%s)",
            ([f"%{c}%" for c in cron_ids],),
        ).fetchall()
    runs = [(json.loads(r).get("metadata", {}).get("cron_id"), run, s) for r, run, s in rows]
    return [run for run in runs if run[0] in cron_ids]


async def test_due_crons_run_exactly_once_on_two_replicas(
    replicas: Replicas, postgres_url: str
) -> None:
    a = replicas.client("a")
    tag = uuid.uuid4().hex
    thread_id = (await a.threads.create())["thread_id"]
    on_thread = await a.crons.create_for_thread(
        thread_id, "keel", schedule=YEARLY, input=INPUT, metadata={"tag": tag}
    )
    stateless = [
        await a.crons.create("keel", schedule=YEARLY, input=INPUT, metadata={"tag": tag})
        for _ in range(4)
    ]
    cron_ids = [on_thread["cron_id"], *(c["cron_id"] for c in stateless)]
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "UPDATE keel_crons SET next_run_at = extract(epoch FROM now()) WHERE cron_id = ANY(%s)",
            (cron_ids,),
        )
    started = time.monotonic()
    while True:
        runs = _cron_runs(postgres_url, cron_ids)
        if len(runs) >= len(cron_ids) and all(s == "succeeded" for _, _, s in runs):
            break
        assert time.monotonic() < started + 90, runs
        await asyncio.sleep(0.3)
    print(f"{len(runs)} due crons: all runs succeeded {time.monotonic() - started:.1f}s later")
    await asyncio.sleep(1.5)  # several more claim rounds on both replicas: nothing fires twice
    runs = _cron_runs(postgres_url, cron_ids)
    assert sorted(c for c, _, _ in runs) == sorted(cron_ids)

    by_cron = {c: r for c, r, _ in runs}
    run = await a.runs.get(thread_id, by_cron[on_thread["cron_id"]])
    assert run["status"] == "success" and run["metadata"]["tag"] == tag
    values = await a.runs.join(thread_id, run["run_id"])
    assert values["answer"] and values["messages"][0]["content"] == QUESTION
    frames = [p.event async for p in a.runs.join_stream(thread_id, run["run_id"])]
    assert frames[0] == "metadata" and "values" in frames
    # Stateless crons run on threads of their own, tagged with the cron.
    for cron in stateless:
        (thread,) = await a.threads.search(metadata={"cron_id": cron["cron_id"]})
        assert (await a.runs.list(thread["thread_id"]))[0]["run_id"] == by_cron[cron["cron_id"]]
    # Each cron moved on to its next time (next new year).
    for cron in await a.crons.search(metadata={"tag": tag}):
        assert cron["next_run_date"][5:16] == "01-01T00:00"
