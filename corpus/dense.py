"""The dense index: one vector per document, its head (title and opening words), in Chroma.

Every chunk of a document shared its head's vector anyway (embedding is ingestion's whole cost),
so the index holds documents, not chunks: ~15x fewer vectors on manuals, which is what keeps a
half-million-chunk corpus's vector index in memory at a few tens of MB. Embedded, a Chroma
`PersistentClient` under the data dir; in production, the Chroma server at `KEEL_CHROMA_URL`.
"""

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import chromadb
import numpy as np

from graph.settings import Settings

# Rows per Chroma call (its own limit is ~5,000).
_BATCH = 1000


def open_chroma(settings: Settings) -> Any:
    """A Chroma client: the server at `KEEL_CHROMA_URL`, else a PersistentClient in `data_dir`."""
    chroma_settings = chromadb.Settings(anonymized_telemetry=False)
    if settings.chroma_url:
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


class DenseIndex:
    """Document head vectors of one collection (cosine space)."""

    def __init__(self, client: Any, name: str):
        self._collection = client.get_or_create_collection(
            f"{name}_heads", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
        )

    def write(self, doc_ids: Sequence[str], vectors: np.ndarray, chunks: Sequence[int]) -> None:
        """Stores (or replaces) the documents' vectors, with how many chunks each has."""
        for start in range(0, len(doc_ids), _BATCH):
            end = start + _BATCH
            self._collection.upsert(
                ids=list(doc_ids[start:end]),
                embeddings=vectors[start:end],
                metadatas=[{"chunks": n} for n in chunks[start:end]],
            )

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Removes the documents' vectors."""
        for start in range(0, len(doc_ids), _BATCH):
            self._collection.delete(ids=list(doc_ids[start : start + _BATCH]))

    def held(self, doc_ids: Sequence[str]) -> set[str]:
        """Those of the documents that have a vector."""
        held: set[str] = set()
        for start in range(0, len(doc_ids), _BATCH):
            rows = self._collection.get(ids=list(doc_ids[start : start + _BATCH]), include=[])
            held.update(rows["ids"])
        return held

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float, int]]:
        """Nearest documents (id, cosine similarity, chunks), best first."""
        # No count() first: Chroma returns fewer rows when k exceeds the collection.
        rows = self._collection.query(
            query_embeddings=[vector], n_results=k, include=["distances", "metadatas"]
        )
        return [
            (doc_id, 1.0 - float(d), int((meta or {}).get("chunks", 1)))
            for doc_id, d, meta in zip(
                rows["ids"][0], rows["distances"][0], rows["metadatas"][0], strict=True
            )
        ]

    def count(self) -> int:
        """Documents with a vector (a real read of the collection: readiness uses it)."""
        return int(self._collection.count())
