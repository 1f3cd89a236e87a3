"""What the corpus holds: documents before chunking, stored chunks, listings and reports."""

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from graph.errors import DuplicateDocuments


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

    def content_hash(self) -> str:
        """What re-ingestion compares: a document with the same hash is skipped."""
        parts = [self.title, self.source, *(f"{s.heading}\x01{s.text}" for s in self.sections)]
        return hashlib.sha256("\x00".join([*parts, self.text]).encode()).hexdigest()[:16]


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
    # Chunks whose text matched an injection rule at ingestion: they carry instructions.
    flagged_chunks: int = 0


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
