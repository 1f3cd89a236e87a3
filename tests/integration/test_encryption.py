"""Encryption at rest of checkpoints in a real Postgres: round trip, no plaintext in the rows,
plaintext rows refused when encryption is on, key rotation, strict msgpack; thread titles sealed
with the same key."""

import os
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph

from checkpoints import open_persistence
from checkpoints.crypto import CheckpointCryptoError, KeelSerializer, build_serde
from checkpoints.threads import create_thread, get_thread, readable, touch_thread
from graph.errors import ConfigError
from graph.settings import Settings
from graph.state import State

SECRET = "the-zebra-flies-at-midnight"  # a plaintext that must never appear in a row
KEY_A = os.urandom(32).hex()
KEY_B = os.urandom(32).hex()


def _toy_graph(saver: Any) -> Any:
    """A one-node graph over keel's State: a message, a str answer, a dict, a list of dicts."""

    async def answer(state: State) -> dict[str, Any]:
        return {
            "question": f"question {SECRET}",
            "answer": f"answer {SECRET}",
            "messages": [AIMessage(f"reply {SECRET}")],
            "passages": [
                {
                    "id": "p1",
                    "doc_id": "d1",
                    "source": "s",
                    "title": "",
                    "text": f"passage {SECRET}",
                    "score": 1.0,
                    "dense_rank": 1,
                    "lexical_rank": None,
                }
            ],
            "guard": {"blocked": False, "reason": None, "redactions": {}, "injection": False},
        }

    builder = StateGraph(State)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    return builder.compile(checkpointer=saver)


async def _run(url: str, serde: Any, thread_id: str) -> dict[str, Any]:
    async with open_persistence(url, serde=serde) as p:
        graph = _toy_graph(p.saver)
        config = {"configurable": {"thread_id": thread_id}}
        await graph.ainvoke(
            {"messages": [HumanMessage(f"hello {SECRET}")]}, config, durability="sync"
        )
        return (await graph.aget_state(config)).values


async def _read(url: str, serde: Any, thread_id: str) -> dict[str, Any]:
    async with open_persistence(url, serde=serde) as p:
        config = {"configurable": {"thread_id": thread_id}}
        return (await _toy_graph(p.saver).aget_state(config)).values


def _raw_rows(url: str, thread_id: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    with psycopg.connect(url) as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            rows = conn.execute(f"SELECT * FROM {table} WHERE thread_id = %s", (thread_id,))
            out[table] = [
                b" ".join(
                    bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row
                )
                for row in rows
            ]
    return out


def _settings(key: str | None, old: str = "") -> Settings:
    env = {"encryption_key": key} if key else {}
    return Settings(**env, encryption_old_keys=old)  # type: ignore[arg-type]


async def test_round_trip_and_no_plaintext_at_rest(postgres_url: str):
    serde = build_serde(_settings(KEY_A))
    thread_id = uuid.uuid4().hex
    values = await _run(postgres_url, serde, thread_id)
    assert values["answer"] == f"answer {SECRET}"
    again = await _read(postgres_url, serde, thread_id)
    assert again["answer"] == f"answer {SECRET}"
    assert again["question"] == f"question {SECRET}"
    assert [m.content for m in again["messages"]] == [f"hello {SECRET}", f"reply {SECRET}"]
    assert again["passages"][0]["text"] == f"passage {SECRET}"
    rows = _raw_rows(postgres_url, thread_id)
    assert rows["checkpoint_blobs"] and rows["checkpoint_writes"]
    for table, texts in rows.items():
        for text in texts:
            assert SECRET.encode() not in text, table
    # Without the serializer the same secret is stored in clear (the test would catch a leak).
    plain_thread = uuid.uuid4().hex
    await _run(postgres_url, None, plain_thread)
    plain = _raw_rows(postgres_url, plain_thread)
    assert any(SECRET.encode() in t for texts in plain.values() for t in texts)


async def test_plaintext_rows_are_refused_when_encryption_is_on(postgres_url: str):
    thread_id = uuid.uuid4().hex
    await _run(postgres_url, KeelSerializer(), thread_id)  # strict but not encrypted
    with pytest.raises(CheckpointCryptoError, match="plaintext checkpoint row"):
        await _read(postgres_url, build_serde(_settings(KEY_A)), thread_id)
    # And an encrypted row is not silently read (or mangled) without the key.
    sealed = uuid.uuid4().hex
    await _run(postgres_url, build_serde(_settings(KEY_A)), sealed)
    with pytest.raises(CheckpointCryptoError, match="KEEL_ENCRYPTION_KEY is not set"):
        await _read(postgres_url, KeelSerializer(), sealed)


async def test_thread_titles_are_sealed_with_the_checkpoint_key(postgres_url: str):
    tenant, question = f"t{uuid.uuid4().hex[:8]}", f"where is {SECRET}?"
    async with open_persistence(postgres_url, serde=build_serde(_settings(KEY_A))) as p:
        sealed = (await create_thread(p, tenant))["thread_id"]
        await touch_thread(p, tenant, sealed, 2, question)
        assert readable(p, await get_thread(p, tenant, sealed))["title"] == question
    async with open_persistence(postgres_url, serde=KeelSerializer()) as p:
        plain = (await create_thread(p, tenant))["thread_id"]
        await touch_thread(p, tenant, plain, 2, question)
        with pytest.raises(CheckpointCryptoError, match="KEEL_ENCRYPTION_KEY is not set"):
            readable(p, await get_thread(p, tenant, sealed))
    with psycopg.connect(postgres_url) as conn:
        rows = dict(
            conn.execute(
                "SELECT key, value::text FROM store WHERE key = ANY(%s)", ([sealed, plain],)
            ).fetchall()
        )
    assert SECRET not in rows[sealed] and SECRET in rows[plain]  # the test would catch a leak
    # After a rotation the old key still opens it; a title written before the key, as it is.
    rotated = build_serde(_settings(KEY_B, old=KEY_A))
    async with open_persistence(postgres_url, serde=rotated) as p:
        for thread_id in (sealed, plain):
            assert readable(p, await get_thread(p, tenant, thread_id))["title"] == question


async def test_key_rotation(postgres_url: str):
    old_thread, new_thread = uuid.uuid4().hex, uuid.uuid4().hex
    await _run(postgres_url, build_serde(_settings(KEY_A)), old_thread)
    rotated = build_serde(_settings(KEY_B, old=KEY_A))
    # Rows sealed with the old key stay readable while it is listed as an old key ...
    assert (await _read(postgres_url, rotated, old_thread))["answer"] == f"answer {SECRET}"
    # ... new rows are sealed with the new key only ...
    await _run(postgres_url, rotated, new_thread)
    only_b = build_serde(_settings(KEY_B))
    assert (await _read(postgres_url, only_b, new_thread))["answer"] == f"answer {SECRET}"
    kid_b = rotated.cipher.current if rotated.cipher else ""
    with psycopg.connect(postgres_url) as conn:
        types = {
            row[0]
            for row in conn.execute(
                "SELECT type FROM checkpoint_blobs WHERE thread_id = %s", (new_thread,)
            )
        }
    assert types and all(t == "empty" or t.endswith(f"aesgcm:{kid_b}") for t in types)
    # ... and once the old key is dropped, its rows are refused with a clear error.
    with pytest.raises(CheckpointCryptoError, match="neither KEEL_ENCRYPTION_KEY"):
        await _read(postgres_url, only_b, old_thread)


@dataclass
class Gadget:
    """A type outside the msgpack allowlist (an attacker's payload would name some importable
    callable the same way)."""

    command: str


def test_strict_msgpack_does_not_revive_unlisted_types():
    permissive = JsonPlusSerializer(allowed_msgpack_modules=True)
    assert isinstance(permissive.loads_typed(permissive.dumps_typed(Gadget("x"))), Gadget)
    serde = build_serde(_settings(KEY_A))
    revived = serde.loads_typed(serde.dumps_typed(Gadget("x")))
    assert not isinstance(revived, Gadget)
    # Allow-listed types (messages) are still revived.
    message = serde.loads_typed(serde.dumps_typed(HumanMessage("hi")))
    assert isinstance(message, HumanMessage) and message.content == "hi"


def test_bad_keys_are_config_errors():
    with pytest.raises(ConfigError):
        build_serde(_settings("too-short"))
    with pytest.raises(ConfigError):
        build_serde(_settings(None, old=KEY_A))
    settings = _settings(KEY_B, old=f"{KEY_A}, {KEY_A}")
    assert len(settings.encryption_old_keys) == 2
