"""One owner for schema migrations on a Postgres database.

langgraph's saver and store `setup()` read their migration table, then insert the missing
versions: two processes starting on an empty database both insert version 0 and one dies on
`checkpoint_migrations_pkey`. Every `setup()` therefore runs under one session-level advisory
lock, held on its own connection (outside the pool the migrations use, so a pool of one cannot
deadlock) and dropped by the server if the process dies mid-migration.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection

from graph.errors import StoreUnavailable

# Fixed across releases and processes: every keel that migrates this database waits on it.
MIGRATION_LOCK = "keel:migrations"
POLL_S = 0.1


@asynccontextmanager
async def migration_lock(url: str, timeout_s: float = 120.0) -> AsyncIterator[None]:
    """Holds the database's migration lock for the block; waits for another holder first (a
    replica migrating a large schema), at most `timeout_s` seconds."""
    conn = await AsyncConnection.connect(url, autocommit=True)
    async with conn:
        deadline = time.monotonic() + timeout_s
        # Polled, not a blocking pg_advisory_lock: a waiting statement holds a snapshot, and the
        # holder's CREATE INDEX CONCURRENTLY waits for every snapshot, so neither would move.
        while not await _try_lock(conn):
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"Postgres migrations are held by another process for over {timeout_s:.0f} s"
                )
            await asyncio.sleep(POLL_S)
        yield  # closing the connection releases the lock, on success, error or cancellation


async def _try_lock(conn: AsyncConnection) -> bool:
    cursor = await conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (MIGRATION_LOCK,)
    )
    row = await cursor.fetchone()
    return bool(row and row[0])
