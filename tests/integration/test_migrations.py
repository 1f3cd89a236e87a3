"""Migrations have one owner: replicas (or `keel serve --workers 2`) starting together on a new
Postgres database all come up, where two unserialised `setup()`s collide on
`checkpoint_migrations_pkey`."""

import asyncio

import psycopg

from checkpoints import open_persistence
from tests.conftest import fresh_database


async def start_replica(url: str, started: asyncio.Barrier) -> list[str]:
    """Opens keel's persistence as a replica's lifespan does; returns the tables it sees."""
    await started.wait()  # both replicas enter setup() in the same instant
    async with open_persistence(url, pools=(1, 2)) as persistence:
        assert await persistence.saver.aget_tuple({"configurable": {"thread_id": "t"}}) is None
        assert await persistence.runs.list_for_thread("t") == []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        return [row[0] for row in await cursor.fetchall()]


async def test_two_replicas_migrate_a_new_database_together_ten_times_of_ten(postgres_url):
    for _ in range(10):
        with fresh_database(postgres_url) as url:
            started = asyncio.Barrier(2)
            first, second = await asyncio.gather(
                start_replica(url, started), start_replica(url, started)
            )
            assert first == second
            assert {"checkpoints", "checkpoint_migrations", "store", "keel_runs"} <= set(first)
