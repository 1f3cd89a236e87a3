"""Vectors of the Agent Server store's items, for semantic search: one float32 row per indexed
field of an item, in `keel_store_vectors` beside the runs (Postgres or SQLite; no vector
extension needed). Search ranks them in numpy, a page of rows at a time, so memory stays
bounded however many items a namespace holds."""

from collections.abc import Sequence

import numpy as np

from checkpoints.runs import RunStore

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS keel_store_vectors (
        prefix TEXT NOT NULL,
        key TEXT NOT NULL,
        field TEXT NOT NULL,
        vector BYTEA NOT NULL,
        PRIMARY KEY (prefix, key, field))""",
]
# Rows read per query while ranking.
PAGE_ROWS = 2000


def joined(namespace: Sequence[str]) -> str:
    """A namespace as one text (its labels hold no dots), as LangGraph's stores key it."""
    return ".".join(namespace)


class StoreVectors:
    """The store's item vectors, on the run store's connection owner; `items_table`: the
    store's items are in LangGraph's `store` table of the same database (not in memory)."""

    def __init__(self, runs: RunStore, items_table: bool):
        self._runs, self._items_table = runs, items_table

    async def setup(self) -> None:
        """Creates the table (idempotent)."""
        async with self._runs.transaction(lock_key="schema") as tx:
            for statement in _SCHEMA:
                await self._runs.execute(tx, statement)

    async def replace(
        self, namespace: Sequence[str], key: str, vectors: dict[str, np.ndarray]
    ) -> None:
        """Sets an item's vectors (field path -> unit vector): none removes them."""
        prefix = joined(namespace)
        async with self._runs.transaction(lock_key=f"vectors:{prefix}") as tx:
            await self._runs.execute(
                tx, "DELETE FROM keel_store_vectors WHERE prefix = %s AND key = %s", (prefix, key)
            )
            for field, vector in vectors.items():
                await self._runs.execute(
                    tx,
                    "INSERT INTO keel_store_vectors (prefix, key, field, vector) "
                    "VALUES (%s, %s, %s, %s)",
                    (prefix, key, field, np.asarray(vector, dtype=np.float32).tobytes()),
                )

    async def ranked(
        self,
        namespace_prefix: Sequence[str],
        query: np.ndarray,
        keep: int,
        among: set[tuple[str, str]] | None = None,
    ) -> list[tuple[str, str, float]]:
        """The best `keep` items under the prefix (and `among` these (namespace text, key)
        when given) by cosine similarity to the unit vector `query`, an item scoring its best
        field: (namespace text, key, score), best first."""
        prefix = joined(namespace_prefix)
        best: dict[tuple[str, str], float] = {}
        async for rows, matrix in _Pages(self._runs, prefix, query.shape[0]):
            scores = matrix @ query.astype(np.float32)
            # Rows come in (namespace, key) order: an item's fields in this page are adjacent.
            starts = [n for n in range(len(rows)) if n == 0 or rows[n] != rows[n - 1]]
            items = [rows[n] for n in starts]
            item_scores = np.maximum.reduceat(scores, starts)
            if among is not None:
                wanted = [n for n, item in enumerate(items) if item in among]
                items, item_scores = [items[n] for n in wanted], item_scores[wanted]
            # An item outside the page's best `keep` has `keep` better ones: it cannot win.
            leaders = np.argsort(-item_scores, kind="stable")[:keep]
            for n in leaders.tolist():
                score = float(item_scores[n])
                if score > best.get(items[n], -2.0):  # an item may span two pages
                    best[items[n]] = score
            if len(best) > 4 * keep:  # memory stays bounded: only the leaders can still win
                best = dict(sorted(best.items(), key=lambda kv: -kv[1])[:keep])
        top = sorted(best.items(), key=lambda kv: -kv[1])[:keep]
        return [(row_prefix, key, score) for (row_prefix, key), score in top]

    async def remove(self, namespace: Sequence[str], key: str) -> None:
        """Removes an item's vectors."""
        await self.replace(namespace, key, {})

    async def drop_orphans(self) -> int:
        """Removes the vectors of items the store no longer has (its TTL sweep deleted them);
        returns how many rows went."""
        if not self._items_table:
            return 0
        async with self._runs.transaction() as tx:
            return await self._runs.execute(
                tx,
                "DELETE FROM keel_store_vectors WHERE NOT EXISTS (SELECT 1 FROM store "
                "WHERE store.prefix = keel_store_vectors.prefix "
                "AND store.key = keel_store_vectors.key)",
            )


class _Pages:
    """The rows under a namespace prefix, a page at a time in key order: (ids, matrix)."""

    def __init__(self, runs: RunStore, prefix: str, dim: int):
        self._runs, self._prefix, self._dim = runs, prefix, dim
        self._after: tuple[str, str, str] = ("", "", "")

    def __aiter__(self) -> "_Pages":
        return self

    async def __anext__(self) -> tuple[list[tuple[str, str]], np.ndarray]:
        inside = "(prefix = %s OR substr(prefix, 1, %s) = %s)" if self._prefix else "1 = 1"
        params: tuple[object, ...] = (
            (self._prefix, len(self._prefix) + 1, self._prefix + ".") if self._prefix else ()
        )
        async with self._runs.single() as tx:
            rows = await self._runs.fetch(
                tx,
                f"SELECT prefix, key, field, vector FROM keel_store_vectors WHERE {inside} "
                "AND (prefix, key, field) > (%s, %s, %s) ORDER BY prefix, key, field LIMIT %s",
                (*params, *self._after, PAGE_ROWS),
            )
        if not rows:
            raise StopAsyncIteration
        last = rows[-1]
        self._after = (last["prefix"], last["key"], last["field"])
        blobs = (bytes(r["vector"]) for r in rows)
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), self._dim)
        return [(r["prefix"], r["key"]) for r in rows], matrix
