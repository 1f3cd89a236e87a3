"""Answer cache stores: a SQLite file for the embedded default, Redis for replicas."""

import json
import time
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import redis.asyncio as redis

from graph.errors import StoreUnavailable


class CacheStore(Protocol):
    """Key-value storage with an absolute TTL. Keys already carry tenant and corpus version."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any], ttl_s: int) -> None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class SqliteCacheStore:
    """A cache table in a SQLite file; expired rows are ignored on read and purged on write."""

    def __init__(self, path: Path):
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)  # at start-up, not in the event loop
        self._db: aiosqlite.Connection | None = None

    async def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            self._db = await aiosqlite.connect(self._path)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute(
                "CREATE TABLE IF NOT EXISTS answer_cache "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)"
            )
            await self._db.commit()
        return self._db

    async def get(self, key: str) -> dict[str, Any] | None:
        db = await self._conn()
        async with db.execute(
            "SELECT value FROM answer_cache WHERE key = ? AND expires_at > ?", (key, time.time())
        ) as cursor:
            row = await cursor.fetchone()
        return json.loads(row[0]) if row else None

    async def put(self, key: str, value: dict[str, Any], ttl_s: int) -> None:
        db = await self._conn()
        now = time.time()
        await db.execute("DELETE FROM answer_cache WHERE expires_at <= ?", (now,))
        await db.execute(
            "INSERT OR REPLACE INTO answer_cache (key, value, expires_at) VALUES (?, ?, ?)",
            (key, json.dumps(value), now + ttl_s),
        )
        await db.commit()

    async def ping(self) -> None:
        db = await self._conn()
        await db.execute("SELECT 1")

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


class RedisCacheStore:
    """Cache entries as Redis strings with `EX` expiry, under a key prefix."""

    def __init__(self, url: str, prefix: str = "keel:cache:"):
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(self._prefix + key)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return json.loads(raw) if raw else None

    async def put(self, key: str, value: dict[str, Any], ttl_s: int) -> None:
        try:
            await self._redis.set(self._prefix + key, json.dumps(value), ex=ttl_s)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
