"""The chunk store: documents, their chunks, sentence vectors and each collection's version.

One schema in SQL: a SQLite file under the data dir (embedded) or Postgres (`KEEL_DATABASE_URL`),
which every replica shares. It is the corpus's source of truth and the last thing an ingestion
writes, so a document whose row is here is in every index. Every read is bounded: id lists go in
pages of `PAGE`, listings by keyset with a `LIMIT`. Writes are per document.
"""

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from corpus.documents import Chunk, DocumentInfo

# Ids per statement: far below SQLite's 32,766 variables, and short statements for Postgres.
PAGE = 500
# Held while Postgres creates the schema, so replicas starting together on a new database do not
# race on `CREATE TABLE IF NOT EXISTS` (pg_type unique violations).
SCHEMA_LOCK = 0x6B65_656C_0C0F

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_corpus_versions (
    collection TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS keel_corpus_documents (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    hash TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    ingested_at TEXT NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE TABLE IF NOT EXISTS keel_corpus_chunks (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    section TEXT NOT NULL,
    text TEXT NOT NULL,
    sentences TEXT,
    vectors {blob},
    PRIMARY KEY (collection, id)
);
CREATE TABLE IF NOT EXISTS keel_corpus_flags (
    collection TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    PRIMARY KEY (collection, chunk_id)
);
CREATE INDEX IF NOT EXISTS keel_corpus_flags_doc ON keel_corpus_flags (collection, doc_id);
CREATE INDEX IF NOT EXISTS keel_corpus_chunks_doc ON keel_corpus_chunks (collection, doc_id);
CREATE INDEX IF NOT EXISTS keel_corpus_chunks_cold ON keel_corpus_chunks (collection, id)
    WHERE vectors IS NULL;
"""


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk as written: position `n` in its document, its heading path, and the injection
    rule its text matched at ingestion ("" for none)."""

    id: str
    n: int
    section: str
    text: str
    injection: str = ""


@dataclass(frozen=True)
class DocumentRecord:
    """A document as written, with all of its chunks."""

    id: str
    source: str
    title: str
    hash: str
    ingested_at: str
    chunks: tuple[ChunkRecord, ...]


class SentenceRow(NamedTuple):
    """A chunk's text and, once embedded, its sentences and their vectors."""

    text: str
    sentences: list[str] | None
    vectors: np.ndarray | None


class ChunkStore(Protocol):
    """What the corpus needs from its store of record (Haystack's `DocumentStore` split: count,
    filter, write with a duplicate policy, delete), per collection."""

    def count(self, collection: str) -> int: ...
    def version(self, collection: str) -> int: ...
    def bump(self, collection: str) -> int: ...
    def hashes(self, collection: str, doc_ids: Sequence[str]) -> dict[str, str]: ...
    def write(self, collection: str, docs: Sequence[DocumentRecord]) -> None: ...
    def delete(self, collection: str, doc_ids: Sequence[str]) -> int: ...
    def chunks(self, collection: str, ids: Sequence[str]) -> dict[str, Chunk]: ...
    def documents(
        self, collection: str, limit: int, after: str = ""
    ) -> tuple[list[DocumentInfo], str | None]: ...
    def sentence_rows(self, collection: str, ids: Sequence[str]) -> dict[str, SentenceRow]: ...
    def store_sentences(
        self, collection: str, rows: Sequence[tuple[str, list[str], np.ndarray]]
    ) -> None: ...
    def cold(
        self, collection: str, limit: int, among: Sequence[str] | None = None
    ) -> list[tuple[str, str]]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


def _pages(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), PAGE):
        yield ids[start : start + PAGE]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class _Cursor:
    """One SQL spelling for both drivers: `?` placeholders become psycopg's `%s`."""

    def __init__(self, cursor: Any, postgres: bool):
        self._cursor, self._postgres = cursor, postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> "_Cursor":
        self._cursor.execute(sql.replace("?", "%s") if self._postgres else sql, params)
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(sql.replace("?", "%s") if self._postgres else sql, rows)

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    def fetchone(self) -> Any:
        return self._cursor.fetchone()


class SqlChunkStore:
    """`ChunkStore` on SQLite (a file: `sqlite:///path`) or Postgres (`postgresql://...`)."""

    def __init__(self, url: str):
        self._postgres = url.startswith(("postgresql://", "postgres://"))
        self._local = threading.local()
        self._pool: Any = None
        if self._postgres:
            from psycopg_pool import ConnectionPool

            self._pool = ConnectionPool(url, min_size=1, max_size=4, open=True)
        else:
            self._path = Path(url.removeprefix("sqlite:///"))
            self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._tx(write=True) as cur:
            if self._postgres:
                cur.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            for statement in _SCHEMA.format(blob="BYTEA" if self._postgres else "BLOB").split(";"):
                if statement.strip():
                    cur.execute(statement)

    def _sqlite(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:  # one connection per thread: WAL lets readers run beside the writer
            conn = sqlite3.connect(self._path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[_Cursor]:
        if self._pool is not None:
            with self._pool.connection() as conn, conn.cursor() as cursor:
                yield _Cursor(cursor, postgres=True)
            return
        conn = self._sqlite()
        if not write:
            yield _Cursor(conn.cursor(), postgres=False)
            return
        conn.execute("BEGIN IMMEDIATE")  # the write lock now, not on the first write
        try:
            yield _Cursor(conn.cursor(), postgres=False)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def count(self, collection: str) -> int:
        """Chunks in the collection."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT COALESCE(SUM(chunks), 0) FROM keel_corpus_documents WHERE collection = ?",
                (collection,),
            ).fetchone()
        return int(row[0])

    def version(self, collection: str) -> int:
        """Bumped by every change to the collection (0: never written)."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT version FROM keel_corpus_versions WHERE collection = ?", (collection,)
            ).fetchone()
        return int(row[0]) if row else 0

    def bump(self, collection: str) -> int:
        """Moves the version on; returns the new one."""
        with self._tx(write=True) as cur:
            row = cur.execute(
                "INSERT INTO keel_corpus_versions (collection, version) VALUES (?, 1) "
                "ON CONFLICT (collection) DO UPDATE "
                "SET version = keel_corpus_versions.version + 1 RETURNING version",
                (collection,),
            ).fetchone()
        return int(row[0])

    def hashes(self, collection: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """The content hash of each of those documents that is stored."""
        rows = self._select_in(
            "SELECT id, hash FROM keel_corpus_documents WHERE collection = ? AND id IN ({ids})",
            collection,
            doc_ids,
        )
        return {str(i): str(h) for i, h in rows}

    def write(self, collection: str, docs: Sequence[DocumentRecord]) -> None:
        """Writes documents and their chunks in one transaction, replacing what is stored under
        the same ids (duplicate policy: overwrite)."""
        with self._tx(write=True) as cur:
            self._delete(cur, collection, [doc.id for doc in docs])
            cur.executemany(
                "INSERT INTO keel_corpus_documents "
                "(collection, id, source, title, hash, chunks, ingested_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (collection, d.id, d.source, d.title, d.hash, len(d.chunks), d.ingested_at)
                    for d in docs
                ],
            )
            cur.executemany(
                "INSERT INTO keel_corpus_chunks (collection, id, doc_id, n, section, text) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(collection, c.id, d.id, c.n, c.section, c.text) for d in docs for c in d.chunks],
            )
            cur.executemany(
                "INSERT INTO keel_corpus_flags (collection, chunk_id, doc_id, rule) "
                "VALUES (?, ?, ?, ?)",
                [
                    (collection, c.id, d.id, c.injection)
                    for d in docs
                    for c in d.chunks
                    if c.injection
                ],
            )

    def delete(self, collection: str, doc_ids: Sequence[str]) -> int:
        """Removes documents with their chunks; returns how many chunks went."""
        with self._tx(write=True) as cur:
            return self._delete(cur, collection, doc_ids)

    def _delete(self, cur: _Cursor, collection: str, doc_ids: Sequence[str]) -> int:
        removed = 0
        for page in _pages(doc_ids):
            where = f"collection = ? AND {{}} IN ({_marks(len(page))})"
            row = cur.execute(
                f"SELECT COALESCE(SUM(chunks), 0) FROM keel_corpus_documents "
                f"WHERE {where.format('id')}",
                (collection, *page),
            ).fetchone()
            removed += int(row[0])
            for table in ("keel_corpus_chunks", "keel_corpus_flags"):
                cur.execute(
                    f"DELETE FROM {table} WHERE {where.format('doc_id')}", (collection, *page)
                )
            cur.execute(
                f"DELETE FROM keel_corpus_documents WHERE {where.format('id')}", (collection, *page)
            )
        return removed

    def chunks(self, collection: str, ids: Sequence[str]) -> dict[str, Chunk]:
        """Those of the chunks that are stored, with their document's title and source."""
        rows = self._select_in(
            "SELECT c.id, c.doc_id, c.text, d.title, d.source, c.section "
            "FROM keel_corpus_chunks c JOIN keel_corpus_documents d "
            "ON d.collection = c.collection AND d.id = c.doc_id "
            "WHERE c.collection = ? AND c.id IN ({ids})",
            collection,
            ids,
        )
        return {str(r[0]): Chunk(*map(str, r)) for r in rows}

    def documents(
        self, collection: str, limit: int, after: str = ""
    ) -> tuple[list[DocumentInfo], str | None]:
        """Up to `limit` documents with ids after `after`, by id, with how many of their chunks
        were flagged as carrying instructions, and the cursor of the next page (None on the
        last)."""
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT d.id, d.source, d.title, d.chunks, d.ingested_at, "
                "(SELECT COUNT(*) FROM keel_corpus_flags f "
                "WHERE f.collection = d.collection AND f.doc_id = d.id) "
                "FROM keel_corpus_documents d "
                "WHERE d.collection = ? AND d.id > ? ORDER BY d.id LIMIT ?",
                (collection, after, limit + 1),
            ).fetchall()
        page = [
            DocumentInfo(str(i), str(s), str(t), int(n), str(at), int(flagged))
            for i, s, t, n, at, flagged in rows
        ]
        return page[:limit], (page[limit - 1].id if len(page) > limit else None)

    def sentence_rows(self, collection: str, ids: Sequence[str]) -> dict[str, SentenceRow]:
        """Each stored chunk's text and, when embedded, sentences and vectors."""
        out: dict[str, SentenceRow] = {}
        rows = self._select_in(
            "SELECT id, text, sentences, vectors FROM keel_corpus_chunks "
            "WHERE collection = ? AND id IN ({ids})",
            collection,
            ids,
        )
        for cid, text, stored, blob in rows:
            sentences: list[str] | None = json.loads(stored) if stored else None
            vectors = None
            if sentences:  # a chunk without sentences has none to score, stored or not
                vectors = np.frombuffer(bytes(blob), dtype=np.float16).astype(np.float32)
                vectors = vectors.reshape(len(sentences), -1)
                vectors.flags.writeable = False  # shared by every query through caches
            out[str(cid)] = SentenceRow(str(text), sentences, vectors)
        return out

    def store_sentences(
        self, collection: str, rows: Sequence[tuple[str, list[str], np.ndarray]]
    ) -> None:
        """Stores chunks' sentences and vectors (float16). Replicas racing on one chunk write
        the same values."""
        with self._tx(write=True) as cur:
            cur.executemany(
                "UPDATE keel_corpus_chunks SET sentences = ?, vectors = ? "
                "WHERE collection = ? AND id = ?",
                [
                    (json.dumps(s), np.asarray(v, dtype=np.float16).tobytes(), collection, cid)
                    for cid, s, v in rows
                ],
            )

    def cold(
        self, collection: str, limit: int, among: Sequence[str] | None = None
    ) -> list[tuple[str, str]]:
        """Up to `limit` chunks (id, text) without sentence vectors, only from `among` if given."""
        if among is None:
            with self._tx() as cur:
                rows = cur.execute(
                    "SELECT id, text FROM keel_corpus_chunks "
                    "WHERE collection = ? AND vectors IS NULL LIMIT ?",
                    (collection, limit),
                ).fetchall()
        else:
            rows = self._select_in(
                "SELECT id, text FROM keel_corpus_chunks "
                "WHERE collection = ? AND vectors IS NULL AND id IN ({ids})",
                collection,
                among,
            )
        return [(str(i), str(t)) for i, t in rows[:limit]]

    def _select_in(self, sql: str, collection: str, ids: Sequence[str]) -> list[Any]:
        """The rows of `sql` (`? ... IN ({ids})`: the collection, then the ids) over `ids`, a
        page of them per statement."""
        rows: list[Any] = []
        with self._tx() as cur:
            for page in _pages(ids):
                rows += cur.execute(
                    sql.format(ids=_marks(len(page))), (collection, *page)
                ).fetchall()
        return rows

    def ping(self) -> None:
        """Raises unless the store answers a query."""
        with self._tx() as cur:
            cur.execute("SELECT count(*) FROM keel_corpus_versions").fetchone()

    def close(self) -> None:
        """Closes the pool (Postgres); SQLite connections close with their threads."""
        if self._pool is not None:
            self._pool.close()
