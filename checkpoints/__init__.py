"""Checkpointer and thread store, opened from one URL: `memory://`, `sqlite:///path`, `postgresql://...`.

Each backend has exactly one owner of its connection (an aiosqlite connection or an
`AsyncConnectionPool`), `setup()` runs once at open, and everything closes on exit.
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
from graph.errors import ConfigError


@dataclass(frozen=True)
class Persistence:
    """The checkpointer, a key-value store (thread records and the Agent Server's store), the
    run store, the assistant store and the cron store, on one database."""

    saver: BaseCheckpointSaver
    store: BaseStore
    runs: RunStore
    assistants: AssistantStore
    crons: CronStore
    kind: str


# Items put with a `ttl`: hidden once expired (Postgres), deleted by a sweep every minute.
STORE_TTL: TTLConfig = {"omit_expired": True, "sweep_interval_minutes": 1}


async def _set_up(saver: Any, store: Any, runs: RunStore, kind: str) -> Persistence:
    """Runs each part's idempotent `setup()` (creates tables, migrates) once, at open, and
    starts the store's TTL sweep (the caller stops it)."""
    await saver.setup()
    await store.setup()
    await store.start_ttl_sweeper()
    await runs.setup()
    assistants, crons = AssistantStore(runs), CronStore(runs, postgres=kind == "postgres")
    await assistants.setup()
    await crons.setup()
    return Persistence(saver, store, runs, assistants, crons, kind)


async def _sqlite_conn(path: str) -> Any:
    """An autocommit connection for code that runs its own BEGIN ... COMMIT."""
    import aiosqlite

    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout = 10000")
    return conn


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
    database, checked against its max_connections at open."""
    if url.startswith("memory://"):
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.store.memory import InMemoryStore

        conn = await _sqlite_conn(":memory:")
        try:
            runs = SqliteRunStore(conn)
            await runs.setup()
            assistants, crons = AssistantStore(runs), CronStore(runs, postgres=False)
            await assistants.setup()
            await crons.setup()
            yield Persistence(
                InMemorySaver(serde=serde), InMemoryStore(), runs, assistants, crons, "memory"
            )
        finally:
            await conn.close()
    elif url.startswith("sqlite:///"):
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from langgraph.store.sqlite.aio import AsyncSqliteStore

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection each: the saver commits implicitly, the store and the run store run
        # explicit transactions; sharing a connection would let one commit the other's work.
        saver_conn = await aiosqlite.connect(path)
        store_conn = await _sqlite_conn(str(path))
        runs_conn = await _sqlite_conn(str(path))
        sqlite_saver = AsyncSqliteSaver(saver_conn, serde=serde)
        sqlite_store = AsyncSqliteStore(store_conn, ttl=STORE_TTL)
        try:
            await saver_conn.execute("PRAGMA journal_mode=WAL")
            await saver_conn.execute("PRAGMA busy_timeout = 10000")
            yield await _set_up(sqlite_saver, sqlite_store, SqliteRunStore(runs_conn), "sqlite")
        finally:
            await sqlite_store.stop_ttl_sweeper()
            for conn in (runs_conn, store_conn, saver_conn):
                await conn.close()
    elif url.startswith(("postgresql://", "postgres://")):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
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
            kwargs={"autocommit": True, "prepare_threshold": None, "row_factory": dict_row},
        )
        await pool.open(wait=True, timeout=15)
        try:
            from checkpoints.capacity import check_connection_budget, max_connections

            check_connection_budget(pool_max, *pools, await max_connections(pool))
            from checkpoints.crypto import SealedAsyncPostgresSaver

            # With a serializer, primitive channel values go through it too (not inline JSONB).
            saver_type = AsyncPostgresSaver if serde is None else SealedAsyncPostgresSaver
            pg_saver = saver_type(pool, serde=serde)
            pg_store = AsyncPostgresStore(pool, ttl=STORE_TTL)
            try:
                yield await _set_up(pg_saver, pg_store, PostgresRunStore(pool), "postgres")
            finally:
                await pg_store.stop_ttl_sweeper()
        finally:
            await pool.close()
    else:
        raise ConfigError(
            f"unsupported checkpoint URL {url!r}: use memory://, sqlite:///, postgresql://"
        )
