"""Answer cache stores: a SQLite file for the embedded default, Redis for replicas.

Besides answers by exact key, each store keeps the cached questions' vectors per scope (tenant,
corpus version, answer settings) and searches them in process (`SemanticIndexes`)."""

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import redis.asyncio as redis

from checkpoints.sqlite import connect
from graph.errors import StoreUnavailable
from integrations.semantic_index import Candidate, Entry, SemanticIndexes

T = TypeVar("T")
_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS answer_cache "
    "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS answer_cache_expiry ON answer_cache (expires_at)",
    "CREATE TABLE IF NOT EXISTS cache_questions (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " scope TEXT NOT NULL, key TEXT NOT NULL, question TEXT NOT NULL,"
    " vector BLOB NOT NULL, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS cache_questions_scope ON cache_questions (scope, id)",
    "CREATE INDEX IF NOT EXISTS cache_questions_expiry ON cache_questions (expires_at)",
)
# Vectors rest as float16: half the bytes, cosine changes by ~1e-3.
VECTOR_DTYPE = np.float16


def pack_vector(vector: np.ndarray) -> bytes:
    """A vector as stored."""
    return vector.astype(VECTOR_DTYPE).tobytes()


def unpack_vector(raw: bytes) -> np.ndarray:
    """A stored vector, back as float32."""
    return np.frombuffer(raw, dtype=VECTOR_DTYPE).astype(np.float32)


class CacheStore(Protocol):
    """Key-value storage with an absolute TTL. Keys already carry tenant and corpus version."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any], ttl_s: int) -> None: ...

    async def add_question(
        self, scope: str, key: str, question: str, vector: np.ndarray, ttl_s: int
    ) -> None:
        """Records a cached answer's question (redacted) and vector under its scope."""
        ...

    async def similar(self, scope: str, vector: np.ndarray, k: int) -> list[Candidate]:
        """The scope's `k` live questions nearest to `vector`, best first."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class SqliteCacheStore:
    """A cache table in a SQLite file; expired rows are ignored on read and purged (by index) on
    write. Each operation is one call on the store's own thread (one hop, not one per statement
    as with aiosqlite): graph nodes call it, and they must not block the loop (LangGraph's dev
    server refuses blocking calls, `checkpoints.sqlite` explains why the runtime may)."""

    def __init__(self, path: Path, indexes: SemanticIndexes | None = None):
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)  # at start-up, not in the event loop
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-cache")
        self._indexes = indexes or SemanticIndexes(start_cursor="0")

    async def _call(self, operation: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, operation, *args)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = connect(self._path)
            for statement in _SQLITE_SCHEMA:
                db.execute(statement)
            self._db = db
        return self._db

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            for query, params in statements:
                db.execute(query, params)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _fetch(self, query: str, params: tuple[Any, ...]) -> list[Any]:
        return self._conn().execute(query, params).fetchall()

    async def get(self, key: str) -> dict[str, Any] | None:
        rows = await self._call(
            self._fetch,
            "SELECT value FROM answer_cache WHERE key = ? AND expires_at > ?",
            (key, time.time()),
        )
        return json.loads(rows[0][0]) if rows else None

    async def put(self, key: str, value: dict[str, Any], ttl_s: int) -> None:
        now = time.time()
        await self._call(
            self._write,
            ("DELETE FROM answer_cache WHERE expires_at <= ?", (now,)),
            (
                "INSERT OR REPLACE INTO answer_cache (key, value, expires_at) VALUES (?, ?, ?)",
                (key, json.dumps(value), now + ttl_s),
            ),
        )

    async def add_question(
        self, scope: str, key: str, question: str, vector: np.ndarray, ttl_s: int
    ) -> None:
        now = time.time()
        await self._call(
            self._write,
            ("DELETE FROM cache_questions WHERE expires_at <= ?", (now,)),
            (
                "INSERT INTO cache_questions (scope, key, question, vector, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (scope, key, question, pack_vector(vector), now + ttl_s),
            ),
        )

    async def similar(self, scope: str, vector: np.ndarray, k: int) -> list[Candidate]:
        return await self._indexes.search(scope, vector, k, self._read)

    async def _read(self, scope: str, cursor: str, limit: int) -> tuple[list[Entry], str]:
        found = await self._call(
            self._fetch,
            "SELECT id, key, question, vector, expires_at FROM cache_questions "
            "WHERE scope = ? AND id > ? ORDER BY id LIMIT ?",
            (scope, int(cursor), limit),
        )
        entries = [Entry(r[1], r[2], unpack_vector(r[3]), r[4]) for r in found]
        return entries, str(found[-1][0]) if found else cursor

    async def ping(self) -> None:
        await self._call(self._fetch, "SELECT 1", ())

    async def aclose(self) -> None:
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._thread.shutdown(wait=False)


class RedisCacheStore:
    """Cache entries as Redis strings with `EX` expiry, under a key prefix.

    A scope's questions are a Redis stream (capped near `max_questions`, expiring `ttl_s` after
    its last write) that every replica reads from its own cursor into its in-process index."""

    def __init__(
        self,
        url: str,
        prefix: str = "keel:cache:",
        indexes: SemanticIndexes | None = None,
        max_questions: int = 100_000,
    ):
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix
        self._indexes = indexes or SemanticIndexes(start_cursor="0-0")
        self._max_questions = max_questions

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

    async def add_question(
        self, scope: str, key: str, question: str, vector: np.ndarray, ttl_s: int
    ) -> None:
        stream = f"{self._prefix}q:{scope}"
        fields: dict[Any, Any] = {
            "k": key,
            "q": question,
            "v": pack_vector(vector),
            "e": repr(time.time() + ttl_s),
        }
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(stream, fields, maxlen=self._max_questions, approximate=True)
                pipe.expire(stream, ttl_s)
                await pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def similar(self, scope: str, vector: np.ndarray, k: int) -> list[Candidate]:
        return await self._indexes.search(scope, vector, k, self._read)

    async def _read(self, scope: str, cursor: str, limit: int) -> tuple[list[Entry], str]:
        try:
            found: Any = await self._redis.xread({f"{self._prefix}q:{scope}": cursor}, count=limit)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        if not found:
            return [], cursor
        rows = found[0][1]
        entries = [
            Entry(f[b"k"].decode(), f[b"q"].decode(), unpack_vector(f[b"v"]), float(f[b"e"]))
            for _, f in rows
        ]
        return entries, rows[-1][0].decode()

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()
