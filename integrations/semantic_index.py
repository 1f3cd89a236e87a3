"""In-process nearest-question search for the semantic cache: one HNSW graph (faiss) per scope.

A scope is a tenant + corpus version + answer settings; the stores (SQLite, Redis) keep the
vectors and feed each replica's indexes incrementally, so every replica searches in process."""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import faiss
import numpy as np

# Searches are one query each: more threads would only fight the other workers for 2 cores.
faiss.omp_set_num_threads(1)
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 64
STALE_CHECK_S = 60.0


@dataclass(frozen=True)
class Entry:
    """One cached question as a store hands it to the index."""

    key: str
    question: str
    vector: np.ndarray
    expires_at: float


@dataclass(frozen=True)
class Candidate:
    """A cached question near the asked one; `key` is its exact-cache key."""

    key: str
    question: str
    similarity: float


# (scope, cursor, limit) -> the scope's entries after the cursor, oldest first, and the new cursor
Reader = Callable[[str, str, int], Awaitable[tuple[list[Entry], str]]]


class ScopeIndex:
    """The questions of one scope: an HNSW graph plus their keys, texts and expiry times.

    `cursor` is the store's position of the last entry added (a SQLite row id, a Redis stream
    id), so a sync reads only newer entries."""

    def __init__(self, dim: int, cursor: str):
        self.cursor = cursor
        self._index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efSearch = HNSW_EF_SEARCH
        self._keys: list[str] = []
        self._questions: list[str] = []
        self._expires: list[float] = []
        self._checked_at = 0.0

    def __len__(self) -> int:
        return len(self._keys)

    def stale(self, now: float) -> bool:
        """True when most entries have expired (search skips them; a rebuild drops them).

        Counted at most once a minute: the count is linear in the scope's size."""
        if now - self._checked_at < STALE_CHECK_S or len(self._expires) < 1000:
            return False
        self._checked_at = now
        return int((np.asarray(self._expires) <= now).sum()) * 2 > len(self._expires)

    def add(self, entries: list[Entry], cursor: str) -> None:
        """Indexes entries (already L2-normalised vectors) and moves the cursor past them."""
        if entries:
            matrix = np.stack([e.vector for e in entries]).astype(np.float32, copy=False)
            self._index.add(np.ascontiguousarray(matrix))
            self._keys.extend(e.key for e in entries)
            self._questions.extend(e.question for e in entries)
            self._expires.extend(e.expires_at for e in entries)
        self.cursor = cursor

    def search(self, vector: np.ndarray, k: int, now: float) -> list[Candidate]:
        """The `k` nearest live questions by cosine similarity, best first."""
        if not self._keys:
            return []
        query = np.ascontiguousarray(vector.reshape(1, -1).astype(np.float32, copy=False))
        scores, ids = self._index.search(query, k)
        return [
            Candidate(self._keys[i], self._questions[i], float(s))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0 and self._expires[i] > now
        ]


class SemanticIndexes:
    """The scopes this replica has searched lately (least recently used dropped past `scopes`).

    Each search first reads the scope's entries newer than its cursor from the store (at most
    `sync_batch` a time, so a cold replica catches up over a few lookups instead of stalling
    one). A scope whose entries have mostly expired is rebuilt from the store."""

    def __init__(self, start_cursor: str, scopes: int = 16, sync_batch: int = 5000):
        self._start, self._scopes, self._batch = start_cursor, scopes, sync_batch
        self._indexes: OrderedDict[str, ScopeIndex] = OrderedDict()
        self._lock = asyncio.Lock()  # faiss must not add and search one graph at once

    async def search(self, scope: str, vector: np.ndarray, k: int, read: Reader) -> list[Candidate]:
        """Syncs the scope from the store through `read`, then searches it."""
        now = time.time()
        async with self._lock:
            index = self._indexes.get(scope)
            if index is None or index.stale(now):
                index = ScopeIndex(vector.shape[0], self._start)
                self._indexes[scope] = index
            self._indexes.move_to_end(scope)
            while len(self._indexes) > self._scopes:
                self._indexes.popitem(last=False)
            entries, cursor = await read(scope, index.cursor, self._batch)
            if entries:
                live = [e for e in entries if e.expires_at > now]
                await asyncio.to_thread(index.add, live, cursor)
            return index.search(vector, k, now)
