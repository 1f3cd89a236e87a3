"""Checkpointer and thread store, opened from one URL: `memory://`, `sqlite:///path`, `postgresql://...`.

Each backend has exactly one owner of its connections (`sqlite3` connections called inline, see
`checkpoints.sqlite`, or an `AsyncConnectionPool`), `setup()` runs once at open, and everything
closes on exit.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.store.base import BaseStore, TTLConfig

from checkpoints.assistants import AssistantStore
from checkpoints.crons import CronStore
from checkpoints.runs import PostgresRunStore, RunStore, SqliteRunStore
from checkpoints.sqlite import InlineSqliteSaver, InlineSqliteStore, WalCheckpointer, connect
from checkpoints.store_vectors import StoreVectors
from graph.errors import ConfigError


@dataclass(frozen=True)
class Persistence:
    """The checkpointer, a key-value store (thread records and the Agent Server's store), the
    run store, the assistant store, the cron store and the store's item vectors, on one
    database."""

    saver: BaseCheckpointSaver
    store: BaseStore
    runs: RunStore
    assistants: AssistantStore
    crons: CronStore
    vectors: StoreVectors
    kind: str
    # The checkpoint serializer (`checkpoints.crypto`): thread titles are sealed with its key too.
    serde: SerializerProtocol | None = None


# Items put with a `ttl`: hidden once expired (Postgres), deleted by a sweep every minute; a
# read restarts it unless it says `refresh_ttl: false` (explicit: SQLite's store would not).
STORE_TTL: TTLConfig = {
    "omit_expired": True,
    "sweep_interval_minutes": 1,
    "refresh_on_read": True,
}


async def _keel_tables(
    saver: Any, store: Any, runs: RunStore, kind: str, serde: SerializerProtocol | None
) -> Persistence:
    """Creates keel's own tables (runs, assistants, crons, store vectors) on the run store's
    connection."""
    await runs.setup()
    assistants, crons = AssistantStore(runs), CronStore(runs, postgres=kind == "postgres")
    vectors = StoreVectors(runs, items_table=kind != "memory")
    await assistants.setup()
    await crons.setup()
    await vectors.setup()
    return Persistence(saver, store, runs, assistants, crons, vectors, kind, serde)


@asynccontextmanager
async def open_persistence(
    url: str,
    serde: SerializerProtocol | None = None,
    pool_max: int = 10,
    pools: tuple[int, int] = (1, 1),
) -> AsyncIterator[Persistence]:
    """Opens the checkpointer and store named by `url`, set up and ready; closes them on exit.
    `serde` (see `checkpoints.crypto.build_serde`) hardens and encrypts checkpoint values;
    `pool_max` bounds the Postgres pool; `pools` (workers, replicas) counts the pools sharing the
    database, checked against its max_connections at open (and a warning when autovacuum is off)."""
    if url.startswith("memory://"):
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.store.memory import InMemoryStore

        conn = connect(":memory:")
        try:
            runs = SqliteRunStore(conn)
            yield await _keel_tables(
                InMemorySaver(serde=serde), InMemoryStore(), runs, "memory", serde
            )
        finally:
            conn.close()
    elif url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection each: the saver lets sqlite3 open its transactions, the store and the
        # run store run explicit ones; sharing one would let one commit the other's work.
        saver_conn = connect(path, autocommit=False, checkpoints=False)
        store_conn, runs_conn = connect(path, checkpoints=False), connect(path, checkpoints=False)
        sqlite_saver = InlineSqliteSaver(saver_conn, serde=serde)
        sqlite_store = InlineSqliteStore(store_conn, ttl=STORE_TTL)
        wal = WalCheckpointer(path)
        try:
            sqlite_saver.setup()
            sqlite_store.setup()
            sqlite_store.start_ttl_sweeper()
            wal.start()
            yield await _keel_tables(
                sqlite_saver, sqlite_store, SqliteRunStore(runs_conn), "sqlite", serde
            )
        finally:
            sqlite_store.stop_ttl_sweeper()
            wal.stop()
            for conn in (runs_conn, store_conn, saver_conn):
                conn.close()
    elif url.startswith(("postgresql://", "postgres://")):
        from langgraph.store.postgres.aio import AsyncPostgresStore
        from psycopg import AsyncConnection
        from psycopg.rows import DictRow, dict_row
        from psycopg_pool import AsyncConnectionPool

        pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_max,
            open=False,
            # autocommit + dict rows are what langgraph's Postgres saver and store require.
            # Prepared statements stay on (psycopg's default: a statement's fifth run on a
            # connection prepares it): the per-step checkpoint and event-log writes are parsed
            # and planned once per connection, 25-40% less Postgres CPU for them than unprepared.
            kwargs={"autocommit": True, "row_factory": dict_row},
        )
        await pool.open(wait=True, timeout=15)
        try:
            from checkpoints.capacity import (
                check_autovacuum,
                check_connection_budget,
                server_settings,
            )

            limit, autovacuum = await server_settings(pool)
            check_connection_budget(pool_max, *pools, limit)
            check_autovacuum(autovacuum)
            from checkpoints.postgres import PostgresSaver

            # With a serializer, primitive channel values go through it too (not inline JSONB).
            pg_saver = PostgresSaver(pool, serde=serde, sealed=serde is not None)
            pg_store = AsyncPostgresStore(pool, ttl=STORE_TTL)
            from checkpoints.migrations import migration_lock

            async with migration_lock(url):
                await pg_saver.setup()
                await pg_store.setup()
                persistence = await _keel_tables(
                    pg_saver, pg_store, PostgresRunStore(pool), "postgres", serde
                )
            try:
                await pg_store.start_ttl_sweeper()
                yield persistence
            finally:
                await pg_store.stop_ttl_sweeper()
        finally:
            await pool.close()
    else:
        raise ConfigError(
            f"unsupported checkpoint URL {url!r}: use memory://, sqlite:///, postgresql://"
        )
