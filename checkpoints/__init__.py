"""Checkpointer and thread store, opened from one URL: `memory://`, `sqlite:///path`, `postgresql://...`.

Each backend has exactly one owner of its connection (an aiosqlite connection or an
`AsyncConnectionPool`), `setup()` runs once at open, and everything closes on exit.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from graph.errors import ConfigError


@dataclass(frozen=True)
class Persistence:
    """The checkpointer plus a key-value store (thread records) on the same database."""

    saver: BaseCheckpointSaver
    store: BaseStore
    kind: str


@asynccontextmanager
async def open_persistence(url: str) -> AsyncIterator[Persistence]:
    """Opens the checkpointer and store named by `url`, set up and ready; closes them on exit."""
    if url.startswith("memory://"):
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.store.memory import InMemoryStore

        yield Persistence(InMemorySaver(), InMemoryStore(), "memory")
    elif url.startswith("sqlite:///"):
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from langgraph.store.sqlite.aio import AsyncSqliteStore

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            sqlite_saver, sqlite_store = AsyncSqliteSaver(conn), AsyncSqliteStore(conn)
            await sqlite_saver.setup()
            await sqlite_store.setup()
            yield Persistence(sqlite_saver, sqlite_store, "sqlite")
        finally:
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
            max_size=10,
            open=False,
            # autocommit + dict rows are what langgraph's Postgres saver and store require.
            kwargs={"autocommit": True, "prepare_threshold": None, "row_factory": dict_row},
        )
        await pool.open(wait=True, timeout=15)
        try:
            pg_saver, pg_store = AsyncPostgresSaver(pool), AsyncPostgresStore(pool)
            await pg_saver.setup()
            await pg_store.setup()
            yield Persistence(pg_saver, pg_store, "postgres")
        finally:
            await pool.close()
    else:
        raise ConfigError(
            f"unsupported checkpoint URL {url!r}: use memory://, sqlite:///, postgresql://"
        )
