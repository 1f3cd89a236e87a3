"""Chunking: a document's sections cut into overlapping pieces that keep their heading."""

from datetime import UTC, datetime

from langchain_text_splitters import RecursiveCharacterTextSplitter

from corpus.documents import Document, Section
from corpus.store import ChunkRecord, DocumentRecord
from nodes.injection_rules import detect_injection


class Chunker:
    """Cuts documents into chunks of about `size` characters, `overlap` shared by neighbours."""

    def __init__(self, size: int, overlap: int):
        self._splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)

    def record(self, doc: Document, digest: str) -> DocumentRecord:
        """The document as the store keeps it; chunk ids are `<doc id>#<n>`. Each chunk is
        screened with the injection rules, as the passage screen will see it (title first)."""
        pieces = [
            (section.heading, text)
            for section in doc.sections or (Section("", doc.text),)
            for text in self._splitter.split_text(section.text) or [section.text]
        ]
        return DocumentRecord(
            id=doc.id,
            source=doc.source or doc.id,
            title=doc.title,
            hash=digest,
            ingested_at=datetime.now(UTC).isoformat(timespec="seconds"),
            chunks=tuple(
                ChunkRecord(
                    f"{doc.id}#{n}",
                    n,
                    heading,
                    text,
                    detect_injection(f"{doc.title}\n{text}") or "",
                )
                for n, (heading, text) in enumerate(pieces)
            ),
        )
