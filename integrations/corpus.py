"""The corpus: chunks and sentence vectors in Chroma, a BM25 index beside them, a version counter.

Embedding is the whole cost of ingestion (linear in tokens; ~4k tokens/s on two cores), so a
chunk's dense vector is its document's head: title and opening words, `dense_head_tokens` long,
shared by the document's chunks. BM25 sees every word. Sentence vectors, which the reranker
(late interaction at sentence level) and the extractive answerer need, are computed the first
time a chunk reaches them and stored beside the chunks for every replica; `keel serve` embeds
the rest in the background (`Corpora.warm_step`). Until then a query embeds only the few sentences
of a chunk that static vectors (a per-token table distilled from the same model, whose rows
ingestion computes) find closest to it (`scoring_vectors`). With `sentence_vectors="eager"`
ingestion embeds them all instead.
"""

import asyncio
import functools
import gc
import hashlib
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import chromadb
import numpy as np
from langchain_text_splitters import RecursiveCharacterTextSplitter

from graph.context import DEFAULT_TENANT
from graph.errors import DuplicateDocuments, StoreUnavailable
from graph.settings import Settings
from integrations.embeddings import Embedder, MiniLMEmbedder, StaticEmbedder
from integrations.lexical import BM25Index
from integrations.text import split_sentences

log = logging.getLogger("keel.corpus")

_WRITE_BATCH = 1000
# How stale another replica's view of the corpus version may be, in seconds.
VERSION_TTL_S = 1.0
# A chunk not embedded yet is scored by this many of its sentences (`Corpus.scoring_vectors`).
COLD_SENTENCES = 2
MAX_WANTED = 10_000  # cold chunks remembered for the warmer
# Chunks whose stored sentences and vectors stay in memory (~15 KB each), most recently used.
MAX_CACHED_CHUNKS = 4096


class Section(NamedTuple):
    """A part of a document under one heading path ("" before any heading)."""

    heading: str
    text: str


@dataclass(frozen=True)
class Document:
    """A source document before chunking; `sections`, when given, are chunked one by one so
    that each chunk carries its heading (and `text` is their texts joined)."""

    id: str
    text: str
    title: str = ""
    source: str = ""
    sections: tuple[Section, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A stored chunk."""

    id: str
    doc_id: str
    text: str
    title: str
    source: str
    section: str = ""


@dataclass(frozen=True)
class DocumentInfo:
    """One stored document, as listed."""

    id: str
    source: str
    title: str
    chunks: int
    ingested_at: str


@dataclass
class IngestReport:
    """What one ingestion did."""

    documents: int = 0
    chunks_added: int = 0
    documents_unchanged: int = 0
    documents_replaced: int = 0
    corpus_version: int = 0
    doc_ids: list[str] = field(default_factory=list)
    # What happened to each document: "added", "replaced" or "unchanged".
    outcomes: dict[str, str] = field(default_factory=dict)


def _content_hash(doc: Document) -> str:
    parts = [doc.title, doc.source, *(f"{s.heading}\x01{s.text}" for s in doc.sections), doc.text]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def check_unique(docs: Sequence[Document]) -> None:
    """Raises `DuplicateDocuments` naming every id that occurs more than once (and where)."""
    counts = Counter(doc.id for doc in docs)
    repeated = [doc_id for doc_id, n in counts.items() if n > 1]
    if repeated:
        where = {
            doc_id: sorted({doc.source or doc.id for doc in docs if doc.id == doc_id})
            for doc_id in repeated[:20]
        }
        names = "; ".join(f"{d} (from {', '.join(s)})" for d, s in where.items())
        raise DuplicateDocuments(f"the same document id occurs more than once: {names}")


def open_chroma(settings: Settings) -> Any:
    """A Chroma client: the server at `KEEL_CHROMA_URL`, else a PersistentClient in `data_dir`."""
    chroma_settings = chromadb.Settings(anonymized_telemetry=False)
    if settings.chroma_url:
        from urllib.parse import urlparse

        url = urlparse(settings.chroma_url)
        return chromadb.HttpClient(
            host=url.hostname or "127.0.0.1",
            port=url.port or 8000,
            ssl=url.scheme == "https",
            settings=chroma_settings,
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(
        path=str(settings.data_dir / "chroma"), settings=chroma_settings
    )


def open_corpora(settings: Settings) -> "Corpora":
    """Every tenant's corpus on the configured Chroma, embedded with the local MiniLM (and, for
    lazy sentence vectors, its static token table cached in the data dir)."""
    model = MiniLMEmbedder(threads=settings.embed_threads)
    static = background = None
    if settings.sentence_vectors == "lazy":
        static = StaticEmbedder(model, settings.data_dir / "static_tokens.npz")
        background = functools.partial(MiniLMEmbedder, threads=1, cache_size=0)
    return Corpora(open_chroma(settings), model, settings, static, background)


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


class Corpora:
    """One `Corpus` per tenant, opened on first use: a tenant retrieves only what it ingested.

    The default tenant (single-tenant deployments, `keel ingest`, `keel eval`) owns the
    collection named in settings; any other tenant gets `<collection>_t<digest of tenant>`.
    `static`, when given, scores sentences that have no stored vectors yet; `background`, when
    given, makes the model that embeds them in `warm_step` (one ORT thread of its own: a run's
    embeddings never queue behind it in the shared thread pool), on the first step: a process
    that never warms (`keel ingest`, `keel docs`) does not load a second copy (~115 MB).

    Questions' vectors are shared too (`start_query`, `query_vector`): every tenant uses one
    model, so a vector depends on its text alone."""

    # Recent questions whose vectors (or the model calls computing them) are kept.
    QUERIES_KEPT = 1024

    def __init__(
        self,
        client: Any,
        embedder: Embedder,
        settings: Settings,
        static: StaticEmbedder | None = None,
        background: Callable[[], Embedder] | None = None,
    ):
        self._client, self._embedder, self._settings = client, embedder, settings
        self._static, self._make_background = static, background
        self._background: Embedder | None = None
        self._open: dict[str, Corpus] = {}
        self._queries: OrderedDict[str, asyncio.Future[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: str = DEFAULT_TENANT) -> "Corpus":
        """The tenant's corpus (its collections are created empty when new)."""
        with self._lock:
            corpus = self._open.get(tenant)
            if corpus is None:
                corpus = Corpus(
                    self._client, self._embedder, self._settings, self.name(tenant), self._static
                )
                self._open[tenant] = corpus
            return corpus

    def start_query(self, text: str) -> "asyncio.Future[np.ndarray]":
        """Starts embedding `text` as a question in a thread, unless that is under way or done
        recently. A run's submission starts it, so the model runs beside the run's creation and
        the guard node instead of inside `cache_lookup`; runs asking the same question at once
        share one model call."""
        loop = asyncio.get_running_loop()
        with self._lock:
            future = self._queries.get(text)
            if future is None or future.get_loop() is not loop or _failed(future):
                embed = self._embedder.embed
                future = loop.run_in_executor(None, lambda: embed([text])[0])
                self._queries[text] = future
                while len(self._queries) > self.QUERIES_KEPT:
                    self._queries.popitem(last=False)
            else:
                self._queries.move_to_end(text)
            return future

    async def query_vector(self, text: str) -> np.ndarray:
        """`text`'s vector as a question (see `start_query`); one caller giving up (cancelled)
        does not cancel it for the others."""
        return await asyncio.shield(self.start_query(text))

    def load(self) -> None:
        """Opens the default corpus and builds its index now rather than on its first query, and
        embeds a question once: the model's one-thread session for single texts is made on first
        use (~120 ms), which would otherwise be the first question's."""
        self.get().refresh()
        self._embedder.embed(["How is a question embedded?"])

    def name(self, tenant: str) -> str:
        """The tenant's collection prefix."""
        if tenant == DEFAULT_TENANT:
            return self._settings.collection
        return f"{self._settings.collection}_t{hashlib.sha256(tenant.encode()).hexdigest()[:16]}"

    def warm_step(self, chunks: int, wanted_only: bool = False) -> int:
        """Embeds the sentences of up to `chunks` chunks that have none yet, in the default
        corpus first, then in the other open ones; returns how many (0: nothing left). With
        `wanted_only`, only chunks queries scored cold (`Corpus.warm`)."""
        if self._settings.sentence_vectors == "eager":
            return 0
        self.get()  # the default corpus is warmed even before its first query
        with self._lock:
            opened = list(self._open.values())
        if self._background is None:
            make = self._make_background
            self._background = make() if make is not None else self._embedder
        for corpus in opened:
            if done := corpus.warm(chunks, wanted_only, self._background):
                return done
        return 0

    def heartbeat(self) -> None:
        """Raises `StoreUnavailable` unless the vector store answers."""
        try:
            self._client.heartbeat()
        except Exception as exc:
            raise StoreUnavailable(f"vector store: {exc}") from exc


class Corpus:
    """Chunks, sentence vectors and the BM25 index of one collection.

    Chroma is the source of truth; every replica rebuilds its BM25 index when the corpus version
    stored in the collection's metadata moves.
    """

    def __init__(
        self,
        client: Any,
        embedder: Embedder,
        settings: Settings,
        name: str,
        static: StaticEmbedder | None = None,
    ):
        self._client = client
        self._embedder = embedder
        self._static = static
        self._name = name
        self._batch_size = settings.embed_batch_size
        self._head_tokens = settings.dense_head_tokens
        self._eager_sentences = settings.sentence_vectors == "eager"
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap
        )
        config: Any = {"hnsw": {"space": "cosine"}}
        self._chunks = client.get_or_create_collection(
            f"{self._name}_chunks", configuration=config, embedding_function=None
        )
        self._sentences = client.get_or_create_collection(
            f"{self._name}_sentences", configuration=config, embedding_function=None
        )
        self._lock = threading.Lock()
        self._version_lock = threading.Lock()
        self._version, self._version_at = 0, -VERSION_TTL_S
        self._bm25 = BM25Index([], [])
        self._bm25_version = -1
        self._info: dict[str, Chunk] = {}
        # Chunks known to have sentence vectors (read from the store by `warm`, then kept up).
        self._warm: set[str] | None = None
        self._warm_version = -1
        # Chunks a query scored cold (oldest first): warmed first, even while runs go on.
        self._wanted: dict[str, None] = {}
        # (corpus version, chunk id) -> stored sentences and vectors, least recently used first
        self._cached: OrderedDict[tuple[int, str], tuple[list[str], np.ndarray]] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- versions -------------------------------------------------------------------------
    def version(self) -> int:
        """The corpus version: bumped by every ingestion or deletion that changed something.

        Read from the store at most every `VERSION_TTL_S` (a turn asks up to three times: cache
        key, BM25 refresh, cache write); this replica's own changes show at once."""
        with self._version_lock:
            if time.monotonic() - self._version_at >= VERSION_TTL_S:
                self._version, self._version_at = self._stored_version(), time.monotonic()
            return self._version

    def fresh_version(self) -> int | None:
        """The version as last read while it is fresh, else None: no store read, so the event
        loop may ask (and calls `version` in a thread only on None)."""
        if not self._version_lock.acquire(blocking=False):
            return None  # another thread is reading the store
        try:
            fresh = time.monotonic() - self._version_at < VERSION_TTL_S
            return self._version if fresh else None
        finally:
            self._version_lock.release()

    def _stored_version(self) -> int:
        collection = self._client.get_collection(f"{self._name}_chunks", embedding_function=None)
        return int((collection.metadata or {}).get("corpus_version", 0))

    def _bump_version(self) -> int:
        version = self._stored_version() + 1
        self._chunks.modify(metadata={"corpus_version": version})
        with self._version_lock:
            self._version, self._version_at = version, time.monotonic()
        return version

    def refresh(self) -> None:
        """Rebuilds the BM25 index and the chunk table when the stored version moved."""
        version = self.version()
        if version == self._bm25_version:
            return
        with self._lock:
            if version == self._bm25_version:
                return
            rows = self._chunks.get(include=["documents", "metadatas"])
            info = {
                cid: Chunk(
                    cid,
                    str(m["doc_id"]),
                    text,
                    str(m.get("title", "")),
                    str(m["source"]),
                    str(m.get("section", "")),
                )
                for cid, text, m in zip(
                    rows["ids"], rows["documents"], rows["metadatas"], strict=True
                )
            }
            self._bm25 = BM25Index(
                list(info), [f"{c.title}\n{c.section}\n{c.text}" for c in info.values()]
            )
            self._info = info
            self._bm25_version = version
            if gc.get_freeze_count():
                # The server froze its start-up heap (api/app.py): an index built later (a new
                # corpus version, another tenant) joins it, or every full collection walks it.
                gc.freeze()

    def warm(self, chunks: int, wanted_only: bool = False, embedder: Embedder | None = None) -> int:
        """Embeds (with `embedder`, default the corpus's own) and stores the sentences of up to
        `chunks` chunks that have none yet, those queries scored cold first (with `wanted_only`,
        only those); returns how many it took (0 when none is left)."""
        if wanted_only and not self._wanted:
            return 0  # while runs go on, looking up the collection every step is waste
        self.refresh()
        if self._warm is None or self._warm_version != self._bm25_version:
            rows = self._sentences.get(include=["metadatas"])
            self._warm = {str(m["chunk_id"]) for m in rows["metadatas"]}
            self._warm_version = self._bm25_version
        wanted = list(self._wanted)[:chunks]
        for cid in wanted:
            self._wanted.pop(cid, None)
        order = wanted if wanted_only else [*wanted, *self._info]
        todo = [
            (cid, chunk.text)
            for cid in dict.fromkeys(order)
            if cid not in self._warm and (chunk := self._info.get(cid)) is not None
        ][:chunks]
        if todo:
            self._store_sentences(todo, embedder)
            self._warm.update(cid for cid, _ in todo)  # also those without any sentence
            if self._warm.issuperset(self._info):
                log.info(
                    "sentence vectors of all %d chunks of %s stored", len(self._info), self._name
                )
        return len(todo)

    # -- ingestion ------------------------------------------------------------------------
    def ingest(
        self, docs: Iterable[Document], progress: Callable[[int], None] | None = None
    ) -> IngestReport:
        """Chunks, embeds and indexes documents; unchanged documents are skipped, changed ones
        replaced. An id given twice raises `DuplicateDocuments` before anything is written.
        `progress` is called with the number of chunks embedded so far."""
        docs = list(docs)
        check_unique(docs)
        report = IngestReport()
        existing = self._existing_hashes()
        pending: list[tuple[Document, str]] = []
        for doc in docs:
            report.documents += 1
            report.doc_ids.append(doc.id)
            digest = _content_hash(doc)
            if existing.get(doc.id) == digest:
                report.documents_unchanged += 1
                report.outcomes[doc.id] = "unchanged"
                continue
            if doc.id in existing:
                self._delete_docs([doc.id])
                report.documents_replaced += 1
                report.outcomes[doc.id] = "replaced"
            else:
                report.outcomes[doc.id] = "added"
            pending.append((doc, digest))
        if pending:
            report.chunks_added = self._add(pending, progress)
            report.corpus_version = self._bump_version()
        else:
            report.corpus_version = self.version()
        return report

    def delete(self, doc_id: str) -> int:
        """Removes a document's chunks; returns how many chunks went. Bumps the version."""
        removed = self._delete_docs([doc_id])
        if removed:
            self._bump_version()
        return removed

    def documents(self, limit: int, after: str = "") -> tuple[list[DocumentInfo], str | None]:
        """Up to `limit` documents with ids after `after`, by id, and the cursor of the next
        page (None on the last)."""
        rows = self._chunks.get(include=["metadatas"])
        found: dict[str, DocumentInfo] = {}
        for m in rows["metadatas"]:
            doc_id = str(m["doc_id"])
            if after and doc_id <= after:
                continue
            seen = found.get(doc_id)
            found[doc_id] = DocumentInfo(
                id=doc_id,
                source=str(m["source"]),
                title=str(m.get("title", "")),
                chunks=(seen.chunks if seen else 0) + 1,
                ingested_at=str(m.get("ingested_at", "")),
            )
        ordered = sorted(found)
        page = [found[d] for d in ordered[:limit]]
        return page, (page[-1].id if len(ordered) > limit else None)

    def _existing_hashes(self) -> dict[str, str]:
        rows = self._chunks.get(include=["metadatas"])
        return {str(m["doc_id"]): str(m["hash"]) for m in rows["metadatas"]}

    def _delete_docs(self, doc_ids: Sequence[str]) -> int:
        rows = self._chunks.get(where={"doc_id": {"$in": list(doc_ids)}}, include=[])
        if rows["ids"]:
            self._chunks.delete(ids=rows["ids"])
            self._sentences.delete(where={"chunk_id": {"$in": rows["ids"]}})
        return len(rows["ids"])

    def _add(
        self, pending: list[tuple[Document, str]], progress: Callable[[int], None] | None
    ) -> int:
        heads = {
            doc.id: f"{doc.title}. {doc.text}" if doc.title else doc.text for doc, _ in pending
        }
        ingested_at = datetime.now(UTC).isoformat(timespec="seconds")
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for doc, digest in pending:
            pieces = [
                (section.heading, text)
                for section in doc.sections or (Section("", doc.text),)
                for text in self._splitter.split_text(section.text) or [section.text]
            ]
            for n, (heading, text) in enumerate(pieces):
                meta = {
                    "doc_id": doc.id,
                    "source": doc.source or doc.id,
                    "title": doc.title,
                    "section": heading,
                    "hash": digest,
                    "chunk": n,
                    "ingested_at": ingested_at,
                }
                rows.append((f"{doc.id}#{n}", text, meta))
        done = 0
        for start in range(0, len(rows), _WRITE_BATCH):
            batch = rows[start : start + _WRITE_BATCH]
            doc_ids = list(dict.fromkeys(str(meta["doc_id"]) for *_, meta in batch))
            vectors = self._embedder.embed(
                [heads[d] for d in doc_ids], self._batch_size, max_tokens=self._head_tokens
            )
            by_doc = dict(zip(doc_ids, vectors, strict=True))
            self._chunks.add(
                ids=[cid for cid, *_ in batch],
                documents=[text for _, text, _ in batch],
                metadatas=[meta for *_, meta in batch],
                embeddings=np.asarray([by_doc[str(meta["doc_id"])] for *_, meta in batch]),
            )
            if self._eager_sentences:
                self._store_sentences([(cid, text) for cid, text, _ in batch])
            elif self._static is not None:  # so that queries find every token's row computed
                self._static.learn(text for _, text, _ in batch)
            done += len(batch)
            if progress:
                progress(done)
        return done

    def _store_sentences(
        self, chunks: Sequence[tuple[str, str]], embedder: Embedder | None = None
    ) -> dict[str, tuple[list[str], np.ndarray]]:
        """Embeds and stores the sentences of chunks (ids are deterministic, so replicas racing
        on the same chunk write the same rows)."""
        split = {cid: split_sentences(text) for cid, text in chunks}
        texts = [s for sentences in split.values() for s in sentences]
        if not texts:
            return {}
        vectors = (embedder or self._embedder).embed(texts, batch_size=self._batch_size)
        self._sentences.upsert(
            ids=[f"{cid}/{j}" for cid, sentences in split.items() for j in range(len(sentences))],
            documents=texts,
            metadatas=[
                {"chunk_id": cid, "n": j}
                for cid, sentences in split.items()
                for j in range(len(sentences))
            ],
            embeddings=vectors,
        )
        if self._warm is not None:
            self._warm.update(split)
        out, offset = {}, 0
        for cid, sentences in split.items():
            out[cid] = (sentences, vectors[offset : offset + len(sentences)])
            offset += len(sentences)
        return out

    # -- search ---------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        """The query's dense vector."""
        return self._embedder.embed([text])[0]

    def dense_search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Nearest chunks by cosine similarity, best first."""
        # No count() first: Chroma returns fewer rows when k exceeds the collection.
        rows = self._chunks.query(query_embeddings=[vector], n_results=k, include=["distances"])
        return [
            (cid, 1.0 - float(d))
            for cid, d in zip(rows["ids"][0], rows["distances"][0], strict=True)
        ]

    def lexical_search(self, text: str, k: int) -> list[tuple[str, float]]:
        """Best BM25 chunks, best first."""
        return self._bm25.search(text, k)

    def chunk(self, chunk_id: str) -> Chunk | None:
        """A chunk's text and provenance, from the in-memory table."""
        return self._info.get(chunk_id)

    def sentence_vectors(self, chunk_ids: Sequence[str]) -> dict[str, tuple[list[str], np.ndarray]]:
        """Each chunk's sentences and their vectors, in order; embedded and stored on first use."""
        return self._embed_missing(self._stored_sentences(chunk_ids), chunk_ids)

    def _embed_missing(
        self, out: dict[str, tuple[list[str], np.ndarray]], chunk_ids: Sequence[str]
    ) -> dict[str, tuple[list[str], np.ndarray]]:
        missing = [
            (cid, chunk.text)
            for cid in chunk_ids
            if cid not in out and (chunk := self.chunk(cid)) is not None
        ]
        if missing:
            out.update(self._store_sentences(missing))
        return out

    def scoring_vectors(
        self, chunk_ids: Sequence[str], query: np.ndarray, cold_sentences: int = COLD_SENTENCES
    ) -> dict[str, tuple[list[str], np.ndarray]]:
        """Sentences and model vectors to score chunks against `query` by: all of a chunk's
        stored ones, and for a chunk not embedded yet only its `cold_sentences` sentences
        closest to the query by static vector, embedded now (not stored). So a cold chunk costs
        a few sentences of model time, and every score is a model cosine. Without a static
        table this is `sentence_vectors`."""
        out = self._stored_sentences(chunk_ids)
        if self._static is None:
            return self._embed_missing(out, chunk_ids)
        cold = {
            cid: split_sentences(chunk.text)
            for cid in chunk_ids
            if cid not in out and (chunk := self.chunk(cid)) is not None
        }
        texts = [s for sentences in cold.values() for s in sentences]
        if not texts:
            return out
        if len(self._wanted) < MAX_WANTED:
            self._wanted.update(dict.fromkeys(cold))
        closeness = self._static.embed(texts) @ query.astype(np.float32)
        picked, offset = {}, 0
        for cid, sentences in cold.items():
            near = np.argsort(-closeness[offset : offset + len(sentences)], kind="stable")
            picked[cid] = [sentences[i] for i in sorted(near[:cold_sentences].tolist())]
            offset += len(sentences)
        vectors = self._embedder.embed(
            [s for sentences in picked.values() for s in sentences], self._batch_size
        )
        offset = 0
        for cid, sentences in picked.items():
            out[cid] = (sentences, vectors[offset : offset + len(sentences)])
            offset += len(sentences)
        return out

    def _stored_sentences(
        self, chunk_ids: Sequence[str]
    ) -> dict[str, tuple[list[str], np.ndarray]]:
        """The stored sentences and vectors of those chunks that have them: from memory when a
        recent query read them at this corpus version, else from the store."""
        version, out = self._bm25_version, {}
        with self._cache_lock:
            for cid in chunk_ids:
                if (hit := self._cached.get((version, cid))) is not None:
                    self._cached.move_to_end((version, cid))
                    out[cid] = hit
        if missing := [cid for cid in chunk_ids if cid not in out]:
            fetched = self._read_sentences(missing)
            with self._cache_lock:
                for cid, value in fetched.items():
                    self._cached[(version, cid)] = value
                while len(self._cached) > MAX_CACHED_CHUNKS:
                    self._cached.popitem(last=False)
            out.update(fetched)
        return out

    def _read_sentences(self, chunk_ids: Sequence[str]) -> dict[str, tuple[list[str], np.ndarray]]:
        rows = self._sentences.get(
            where={"chunk_id": {"$in": list(chunk_ids)}},
            include=["documents", "metadatas", "embeddings"],
        )
        grouped: dict[str, list[tuple[int, str, np.ndarray]]] = {}
        for text, meta, vec in zip(
            rows["documents"], rows["metadatas"], rows["embeddings"], strict=True
        ):
            grouped.setdefault(str(meta["chunk_id"]), []).append((int(meta["n"]), text, vec))
        out = {}
        for cid, items in grouped.items():
            items.sort(key=lambda item: item[0])
            vectors = np.asarray([v for *_, v in items], dtype=np.float32)
            vectors.flags.writeable = False  # shared by every query through the cache
            out[cid] = ([t for _, t, _ in items], vectors)
        return out
