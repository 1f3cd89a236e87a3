"""A tenant's corpus over the shared stores, and the set of them a process opens.

Ingestion writes each page of documents to the lexical index, then the dense index, then the
chunk store, whose rows are the commit: a document the store has is in every index, and an
ingestion interrupted before that is redone by the next (unchanged documents, by content hash,
are skipped). Nothing is held per chunk in memory: searches return ids, and a query reads the
rows of its candidates only.
"""

import asyncio
import functools
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corpus.chunking import Chunker
from corpus.dense import DenseIndex, open_chroma
from corpus.documents import Chunk, Document, DocumentInfo, IngestReport, check_unique
from corpus.lexical import LexicalIndex
from corpus.sentences import Matches, Scored, SentenceVectors
from corpus.store import ChunkStore, DocumentRecord, SqlChunkStore
from graph.context import DEFAULT_TENANT
from graph.errors import StoreUnavailable
from graph.settings import Settings
from integrations.embeddings import Embedder, MiniLMEmbedder, StaticEmbedder

log = logging.getLogger("keel.corpus")

# How stale another replica's view of the corpus version may be, in seconds.
VERSION_TTL_S = 1.0
# Documents are written in pages of at most this much text (~800 chunks) or this many documents.
PAGE_CHARS = 1_000_000
PAGE_DOCS = 500
# Heads are short and cut to one length: bigger batches cost no padding (+16% heads/s over 16).
HEAD_BATCH = 64


def _pages(docs: Sequence[Document]) -> Iterator[Sequence[Document]]:
    start, size = 0, 0
    for end, doc in enumerate(docs):
        if end > start and (size + len(doc.text) > PAGE_CHARS or end - start >= PAGE_DOCS):
            yield docs[start:end]
            start, size = end, 0
        size += len(doc.text)
    if start < len(docs):
        yield docs[start:]


class Corpus:
    """One collection: its documents in the chunk store, lexical and dense indexes."""

    def __init__(
        self,
        name: str,
        store: ChunkStore,
        lexical: LexicalIndex,
        dense: DenseIndex,
        embedder: Embedder,
        settings: Settings,
        static: StaticEmbedder,
    ):
        self.name = name
        self._store, self._lexical, self._dense = store, lexical, dense
        self._embedder = embedder
        self._head_tokens = settings.dense_head_tokens
        self._eager_sentences = settings.sentence_vectors == "eager"
        self._chunker = Chunker(settings.chunk_size, settings.chunk_overlap)
        self.sentences = SentenceVectors(store, name, embedder, static, settings.embed_batch_size)
        self._version_lock = threading.Lock()
        self._version, self._version_at = 0, -VERSION_TTL_S
        self._seen = -1  # the version the lexical searcher was last reloaded at

    # -- versions -------------------------------------------------------------------------
    def version(self) -> int:
        """The corpus version: bumped by every ingestion or deletion that changed something.

        Read from the store at most every `VERSION_TTL_S` (a turn asks up to three times: cache
        key, index refresh, cache write); this replica's own changes show at once."""
        with self._version_lock:
            if time.monotonic() - self._version_at >= VERSION_TTL_S:
                self._version, self._version_at = self._store.version(self.name), time.monotonic()
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

    def _bump_version(self) -> int:
        version = self._store.bump(self.name)
        with self._version_lock:
            self._version, self._version_at = version, time.monotonic()
        return version

    def refresh(self) -> int:
        """Makes another process's commits searchable once the stored version moved (a reload
        of the lexical index's segment list, not a rebuild); returns the version."""
        version = self.version()
        if version != self._seen:
            self._lexical.reload()
            self._seen = version
        return version

    # -- writes ---------------------------------------------------------------------------
    def ingest(
        self, docs: Iterable[Document], progress: Callable[[int], None] | None = None
    ) -> IngestReport:
        """Chunks, embeds and indexes documents, a page at a time; unchanged documents are
        skipped, changed ones replaced. An id given twice raises `DuplicateDocuments` before
        anything is written. `progress` is called with the number of chunks written so far.

        Unchanged means the stored hash matches and both indexes still hold the document: a
        chunk store can outlive a wiped lexical folder or Chroma collection, and those documents
        are indexed again (counted as replaced)."""
        docs = list(docs)
        check_unique(docs)
        report = IngestReport(documents=len(docs), doc_ids=[doc.id for doc in docs])
        reindexed = 0
        for page in _pages(docs):
            stored = self._store.hashes(self.name, [doc.id for doc in page])
            digests = {doc.id: doc.content_hash() for doc in page}
            same = [doc.id for doc in page if stored.get(doc.id) == digests[doc.id]]
            lost = self._unindexed(same)
            reindexed += len(lost)
            pending: list[tuple[Document, DocumentRecord]] = []
            for doc in page:
                digest = digests[doc.id]
                if stored.get(doc.id) == digest and doc.id not in lost:
                    report.documents_unchanged += 1
                    report.outcomes[doc.id] = "unchanged"
                    continue
                replaced = doc.id in stored
                report.documents_replaced += replaced
                report.outcomes[doc.id] = "replaced" if replaced else "added"
                pending.append((doc, self._chunker.record(doc, digest)))
            if pending:
                report.chunks_added += self._write(pending)
                if progress:
                    progress(report.chunks_added)
        if reindexed:
            log.warning(
                "%d stored documents of %s were missing from its indexes: indexed them again",
                reindexed,
                self.name,
            )
        changed = report.documents_unchanged < report.documents
        report.corpus_version = self._bump_version() if changed else self.version()
        return report

    def _unindexed(self, doc_ids: list[str]) -> set[str]:
        """Those of the stored documents that an index no longer holds (a wiped lexical folder
        or Chroma collection under a chunk store that outlived it)."""
        if not doc_ids:
            return set()
        return set(doc_ids) - (self._lexical.held(doc_ids) & self._dense.held(doc_ids))

    def _write(self, pending: list[tuple[Document, DocumentRecord]]) -> int:
        records = [record for _, record in pending]
        doc_ids = [record.id for record in records]
        chunks = [
            (c.id, r.id, f"{r.title}\n{c.section}\n{c.text}") for r in records for c in r.chunks
        ]
        heads = [f"{doc.title}. {doc.text}" if doc.title else doc.text for doc, _ in pending]
        vectors = self._embedder.embed(heads, HEAD_BATCH, max_tokens=self._head_tokens)
        self._lexical.write(doc_ids, chunks)
        self._dense.write(doc_ids, vectors, [len(r.chunks) for r in records])
        self._store.write(self.name, records)
        texts = [(c.id, c.text) for r in records for c in r.chunks]
        if self._eager_sentences:
            self.sentences.embed_and_store(texts)
        return len(chunks)

    def delete(self, doc_id: str) -> int:
        """Removes a document; returns how many chunks went. Bumps the version."""
        removed = self._store.delete(self.name, [doc_id])
        if removed:  # the store first: what it no longer has, retrieval skips
            self._lexical.delete([doc_id])
            self._dense.delete([doc_id])
            self._bump_version()
        return removed

    # -- reads ----------------------------------------------------------------------------
    def count(self) -> int:
        """Chunks stored."""
        return self._store.count(self.name)

    def documents(self, limit: int, after: str = "") -> tuple[list[DocumentInfo], str | None]:
        """A page of documents by id (see `ChunkStore.documents`)."""
        return self._store.documents(self.name, limit, after)

    def embed_query(self, text: str) -> np.ndarray:
        """The query's dense vector."""
        return self._embedder.embed([text])[0]

    def dense_search(self, vector: np.ndarray, k: int) -> list[tuple[str, float, int]]:
        """Nearest documents (id, cosine similarity of their heads, chunks), best first."""
        return self._dense.search(vector, k)

    def lexical_count(self) -> int:
        """Chunks in the lexical index (as of its last reload)."""
        return self._lexical.count()

    def lexical_search(self, text: str, k: int) -> list[tuple[str, float]]:
        """Best BM25 chunks (id, score), best first."""
        return self._lexical.search(text, k)

    def chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        """Those chunks that are stored (a chunk deleted since it was found is missing)."""
        return self._store.chunks(self.name, chunk_ids)

    def sentence_vectors(self, chunk_ids: Sequence[str]) -> Scored:
        """Each chunk's sentences and their vectors, in order; embedded and stored on first use."""
        return self.sentences.vectors(chunk_ids, self._seen)

    def scoring_vectors(
        self, chunk_ids: Sequence[str], query: np.ndarray, cold_sentences: int
    ) -> Scored:
        """Sentence vectors to score chunks against `query` by (`SentenceVectors`)."""
        return self.sentences.scoring_vectors(chunk_ids, query, self._seen, cold_sentences)

    def match_scores(
        self, chunk_ids: Sequence[str], query: np.ndarray, model_depth: int
    ) -> Matches:
        """How well each chunk's sentences match `query` (`SentenceVectors.match_scores`)."""
        return self.sentences.match_scores(chunk_ids, query, self._seen, model_depth)

    def inverse_frequencies(self, terms: Sequence[str]) -> dict[str, float]:
        """BM25's inverse document frequency of each (tokenized) term among the chunks."""
        return self._lexical.inverse_frequencies(terms)

    def ping(self) -> None:
        """Raises unless the dense and lexical indexes answer queries."""
        self._dense.count()
        self._lexical.ping()


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


class Corpora:
    """One `Corpus` per tenant, opened on first use: a tenant retrieves only what it ingested.

    The default tenant (single-tenant deployments, `keel ingest`, `keel eval`) owns the
    collection named in settings; any other tenant gets `<collection>_t<digest of tenant>`.
    All share one chunk store, one lexical folder (an index per collection) and one Chroma client. `static` scores
    sentences that have no stored vectors yet; `background`, when given, makes the model
    that embeds them in `warm_step` (one ORT thread of its own: a run's embeddings never queue
    behind it), on the first step: a process that never warms does not load a second copy.

    Questions' vectors are shared too (`start_query`, `query_vector`): every tenant uses one
    model, so a vector depends on its text alone."""

    # Recent questions whose vectors (or the model calls computing them) are kept.
    QUERIES_KEPT = 1024

    def __init__(
        self,
        client: Any,
        store: ChunkStore,
        lexical: Path,
        embedder: Embedder,
        settings: Settings,
        static: StaticEmbedder,
        background: Callable[[], Embedder] | None = None,
    ):
        self._client, self._store, self._lexical = client, store, lexical
        self._embedder, self._settings = embedder, settings
        self._static, self._make_background = static, background
        self._background: Embedder | None = None
        self._open: dict[str, Corpus] = {}
        self._queries: OrderedDict[str, asyncio.Future[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        """The embedding model every corpus uses (the Agent Server store's index uses it too)."""
        return self._embedder

    def get(self, tenant: str = DEFAULT_TENANT) -> Corpus:
        """The tenant's corpus (its collections are created empty when new)."""
        with self._lock:
            corpus = self._open.get(tenant)
            if corpus is None:
                name = self.name(tenant)
                corpus = Corpus(
                    name,
                    self._store,
                    LexicalIndex(self._lexical / name),
                    DenseIndex(self._client, name),
                    self._embedder,
                    self._settings,
                    self._static,
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
        """Opens the default corpus and searches it once, so the first question pays for none
        of this: the model's one-thread session for single texts (made on first use, ~120 ms)
        and Chroma's HNSW index (read from disk by the first query, ~0.3 s at 37k documents)."""
        corpus = self.get()
        corpus.refresh()
        legacy = f"{self._settings.collection}_chunks"  # where keel kept chunks before corpus/
        names = {c.name for c in self._client.list_collections()}
        if legacy in names and corpus.count() == 0 and self._client.get_collection(legacy).count():
            log.warning("%s holds chunks of an earlier keel: ingest the documents again", legacy)
        elif corpus.lexical_count() == 0 and (stored := corpus.count()):
            log.warning(
                "the lexical index of %s is empty while the chunk store holds %d chunks (a new "
                "lexical folder, or one index for all collections before): ingest the documents "
                "again to index them",
                corpus.name,
                stored,
            )
        question = "How is a question embedded?"
        corpus.dense_search(self._embedder.embed([question])[0], 1)
        corpus.lexical_search(question, 1)

    def name(self, tenant: str) -> str:
        """The tenant's collection name."""
        if tenant == DEFAULT_TENANT:
            return self._settings.collection
        return f"{self._settings.collection}_t{hashlib.sha256(tenant.encode()).hexdigest()[:16]}"

    def warm_step(self, chunks: int, wanted_only: bool = False) -> int:
        """Embeds the sentences of up to `chunks` chunks that have none yet, in the default
        corpus first, then in the other open ones; returns how many (0: nothing left). With
        `wanted_only`, only chunks queries scored cold."""
        if self._settings.sentence_vectors == "eager":
            return 0
        self.get()  # the default corpus is warmed even before its first query
        with self._lock:
            opened = list(self._open.values())
        if self._background is None:
            make = self._make_background
            self._background = make() if make is not None else self._embedder
        for corpus in opened:
            if done := corpus.sentences.warm(chunks, wanted_only, self._background):
                return done
        return 0

    def heartbeat(self) -> None:
        """Raises `StoreUnavailable` unless the chunk store, the vector store and the lexical
        index answer queries (not just connections: a broken index fails readiness)."""
        for part, probe in (
            ("chunk store", self._store.ping),
            ("vector store", self._client.heartbeat),
            ("indexes", self.get().ping),
        ):
            try:
                probe()
            except Exception as exc:
                raise StoreUnavailable(f"{part}: {exc}") from exc

    def close(self) -> None:
        """Closes the chunk store's connections."""
        self._store.close()


def open_corpora(settings: Settings) -> Corpora:
    """Every tenant's corpus on the configured stores, embedded with the local MiniLM and its
    static token table (and, for lazy sentence vectors, a background model that warms them)."""
    model = MiniLMEmbedder(threads=settings.embed_threads)
    background = None
    if settings.sentence_vectors == "lazy":
        background = functools.partial(MiniLMEmbedder, threads=1, cache_size=0)
    return Corpora(
        open_chroma(settings),
        SqlChunkStore(settings.corpus_store_url),
        settings.lexical_path,
        model,
        settings,
        StaticEmbedder(model),
        background,
    )
