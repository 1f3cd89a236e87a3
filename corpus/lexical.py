"""The lexical index: Okapi BM25 (k1 1.2, b 0.75) over Snowball-stemmed words, in tantivy.

Each collection has its own index on disk (a folder named after it), so its BM25 statistics
(document frequencies, average length) are its own: one tenant's documents never move another's
ranking. Indexes are updated per document; processes open them read-only and see another's
commits on `reload`, so nothing is rebuilt at start-up or after an ingestion. Measured against BM25 postings in SQL before choosing
(docs/benchmarks.md, "Components measured for the corpus stores"): 26k vs 1.5k chunks/s written, 1-5 ms per query at 570k chunks.
Writers take turns through an OS lock beside the index (tantivy allows one writer at a time).
"""

import fcntl
import math
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import Stemmer
import tantivy

# Hyphenated compounds split into their parts ("soil-transmitted" matches "soil transmitted"):
# +0.028 nDCG@10 for BM25 on SciFact train over keeping them whole.
_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have in into is it its of on or that the their "
    "there these this those to was were which with".split()
)
_stemmer = Stemmer.Stemmer("english")
# A writer's indexing memory; it commits before it outgrows this.
WRITER_HEAP = 64 * 1024 * 1024
WRITER_LOCK = "keel-writer.lock"


def tokenize(text: str) -> list[str]:
    """Lower-cases, splits on non-alphanumerics, drops stop words and stems (Snowball)."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOPWORDS]
    return _stemmer.stemWords(words)


class LexicalIndex:
    """BM25 over one collection's chunks, on disk at `path`."""

    def __init__(self, path: Path):
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("doc", tokenizer_name="raw", index_option="basic")
        builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
        # Text arrives tokenized by `tokenize`, words joined by spaces; BM25 needs frequencies.
        builder.add_text_field("terms", tokenizer_name="whitespace", index_option="freq")
        self._schema = builder.build()
        self._path = path
        self._lock = threading.Lock()  # this process's writer
        self._opening = threading.Lock()
        # Opened on first use, in whichever thread searches or writes: a tenant's corpus is
        # made where a run first asks for it, on the event loop, which must not touch the disk.
        self._opened: tantivy.Index | None = None
        self._current: tantivy.Searcher | None = None

    @property
    def _index(self) -> tantivy.Index:
        if self._opened is None:
            with self._opening:
                if self._opened is None:
                    self._path.mkdir(parents=True, exist_ok=True)
                    self._opened = tantivy.Index(self._schema, path=str(self._path), reuse=True)
        return self._opened

    @property
    def _searcher(self) -> tantivy.Searcher:
        if self._current is None:
            self._current = self._index.searcher()
        return self._current

    @contextmanager
    def _writer(self) -> Iterator[tantivy.IndexWriter]:
        index = self._index
        with self._lock, (self._path / WRITER_LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process's writer: wait for its commit
            writer = index.writer(heap_size=WRITER_HEAP, num_threads=1)
            try:
                yield writer
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
            finally:
                writer.wait_merging_threads()
        self.reload()

    def write(self, doc_ids: Sequence[str], chunks: Sequence[tuple[str, str, str]]) -> None:
        """Replaces the chunks of documents `doc_ids` with `chunks` (id, doc id, text), in one
        commit. Idempotent: chunks a crashed ingestion left behind are deleted first."""
        with self._writer() as writer:
            for doc_id in doc_ids:
                writer.delete_documents_by_term("doc", doc_id)
            for chunk_id, doc_id, text in chunks:
                writer.add_document(
                    tantivy.Document(
                        doc=doc_id,
                        id=chunk_id,
                        terms=" ".join(tokenize(text)),
                    )
                )

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Removes the documents' chunks."""
        self.write(doc_ids, [])

    def reload(self) -> None:
        """Sees every commit made so far, by any process."""
        self._index.reload()
        self._current = self._index.searcher()

    def held(self, doc_ids: Sequence[str]) -> set[str]:
        """Those of the documents that have chunks in the index."""
        searcher = self._searcher
        return {
            doc_id
            for doc_id in doc_ids
            if searcher.search(tantivy.Query.term_query(self._schema, "doc", doc_id), 1).hits
        }

    def search(self, text: str, k: int) -> list[tuple[str, float]]:
        """The best `k` chunks (id, BM25 score), best first."""
        terms = tokenize(text)
        if not terms or k <= 0:
            return []
        Query, Occur = tantivy.Query, tantivy.Occur
        words = Query.boolean_query(
            [(Occur.Should, Query.term_query(self._schema, "terms", t)) for t in terms]
        )
        searcher = self._searcher
        hits = searcher.search(words, k)
        return [(str(searcher.doc(address)["id"][0]), float(score)) for score, address in hits.hits]

    def inverse_frequencies(self, terms: Sequence[str]) -> dict[str, float]:
        """BM25's inverse document frequency, log(1 + (N - df + 0.5) / (df + 0.5)), of each
        term (as `tokenize` gives it) among the chunks, as of the last `reload`."""
        searcher = self._searcher
        total = searcher.num_docs
        out = {}
        for term in dict.fromkeys(terms):
            found = searcher.doc_freq("terms", term)
            out[term] = math.log(1 + (total - found + 0.5) / (found + 0.5))
        return out

    def count(self) -> int:
        """Chunks indexed, as of the last `reload`."""
        return int(self._searcher.num_docs)

    def ping(self) -> None:
        """Raises unless the index, as it is on disk now, opens and answers a query."""
        self.reload()
        self._searcher.search(tantivy.Query.term_query(self._schema, "id", ""), 1)
