"""The knowledge base: documents chunked into a SQL chunk store (SQLite or Postgres), a BM25
index (tantivy) and a dense index of document heads (Chroma), shared by every replica and
updated per document. `open_corpora` opens them for a process."""

from corpus.corpus import Corpora, Corpus, open_corpora
from corpus.documents import Chunk, Document, DocumentInfo, IngestReport, Section, check_unique

__all__ = [
    "Chunk",
    "Corpora",
    "Corpus",
    "Document",
    "DocumentInfo",
    "IngestReport",
    "Section",
    "check_unique",
    "open_corpora",
]
