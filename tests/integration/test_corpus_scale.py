"""The corpus at scale and shared: the chunk store on Postgres, a corpus past the 40,000 chunks
where the old design failed every question, and replicas that share the stores."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from corpus import open_corpora
from corpus.store import ChunkRecord, DocumentRecord, SqlChunkStore
from graph.settings import Settings
from tests.conftest import fresh_database, scifact_docs

QUESTIONS = [
    "Does vitamin D deficiency increase the risk of fractures?",
    "What is the role of microRNA in cancer cells?",
    "Is obesity associated with type 2 diabetes?",
    "How does aspirin affect cardiovascular events?",
    "Do statins lower mortality?",
]


@pytest.fixture
def new_database(postgres_url: str) -> Iterator[str]:
    """A new, empty Postgres database for this test."""
    with fresh_database(postgres_url) as url:
        yield url


def test_the_chunk_store_on_postgres(new_database: str):
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            SqlChunkStore(new_database).close()
        except BaseException as exc:
            errors.append(exc)

    # replicas starting together on a new database: one creates the schema, none fails
    starters = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join()
    assert errors == []
    store = SqlChunkStore(new_database)
    try:
        docs = [
            DocumentRecord(
                f"d{n:04}",
                f"s{n}",
                f"Title {n}",
                f"h{n}",
                "2026-12-06T00:00:00+00:00",
                tuple(
                    ChunkRecord(f"d{n:04}#{c}", c, f"Sec {c}", f"text {n}.{c}") for c in range(2)
                ),
            )
            for n in range(1200)
        ]
        assert store.version("c") == 0
        store.write("c", docs)
        assert store.bump("c") == 1 and store.bump("c") == 2 and store.version("c") == 2
        assert store.count("c") == 2400 and store.count("other") == 0
        ids = [f"d{n:04}" for n in range(1200)]
        assert store.hashes("c", ids)["d0007"] == "h7" and len(store.hashes("c", ids)) == 1200
        chunks = store.chunks("c", [f"{d}#1" for d in ids])  # more ids than one statement
        assert len(chunks) == 1200 and chunks["d0003#1"].title == "Title 3"
        assert chunks["d0003#1"].section == "Sec 1" and chunks["d0003#1"].text == "text 3.1"
        page, cursor = store.documents("c", 1000)
        rest, last = store.documents("c", 1000, cursor or "")
        assert [d.id for d in page + rest] == ids and last is None
        vectors = np.eye(2, 384, dtype=np.float32)
        store.store_sentences("c", [("d0001#0", ["One.", "Two."], vectors)])
        row = store.sentence_rows("c", ["d0001#0", "d0002#0"])
        assert row["d0001#0"].sentences == ["One.", "Two."] and row["d0002#0"].vectors is None
        np.testing.assert_allclose(row["d0001#0"].vectors, vectors)
        assert ("d0001#0", "text 1.0") not in store.cold("c", 5000)
        assert store.cold("c", 3, ["d0001#0", "d0002#0"]) == [("d0002#0", "text 2.0")]
        assert store.delete("c", ["d0001", "d0002", "missing"]) == 4
        assert store.count("c") == 2396 and store.chunks("c", ["d0001#0"]) == {}
    finally:
        store.close()


def _stream(client: httpx.Client, question: str) -> list[tuple[str, dict]]:
    thread_id = client.post("/v1/threads").json()["thread_id"]
    events, kind = [], ""
    body = {"message": question, "context": {"use_cache": False}}
    with client.stream("POST", f"/v1/threads/{thread_id}/runs/stream", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    return events


def test_a_corpus_past_40k_chunks_answers_lists_and_reports_readiness(start_server, tmp_path: Path):
    """The old design answered every question with `store_unavailable` past ~32k chunks while
    /readyz said ready; SciFact cut into 200-character chunks makes 40,841."""
    settings = Settings(data_dir=tmp_path / "data", chunk_size=200, chunk_overlap=0)
    corpus = open_corpora(settings).get()
    report = corpus.ingest(scifact_docs(10_000))
    assert report.chunks_added > 40_000 and corpus.count() == report.chunks_added
    server = start_server(KEEL_DATA_DIR=str(settings.data_dir))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/readyz").json()["checks"]["corpus"] == "ok"
        for question in QUESTIONS:
            events = _stream(client, question)
            kinds = [kind for kind, _ in events]
            assert "run.error" not in kinds and kinds[-1] == "run.finished", events[-1]
            retrieved = next(
                d for k, d in events if k == "node.finished" and d["node"] == "retrieve"
            )
            assert retrieved["summary"]["passages"], retrieved
            assert events[-1][1]["citations"], events[-1]
        listed, cursor, chunks = 0, None, 0
        while True:
            page = client.get(
                "/v1/documents", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}
            )
            assert page.status_code == 200, page.text
            listed += len(page.json()["documents"])
            chunks += sum(d["chunks"] for d in page.json()["documents"])
            if (cursor := page.json()["next_cursor"]) is None:
                break
        assert (listed, chunks) == (report.documents, report.chunks_added)
        # an index that no longer opens fails readiness instead of failing every question
        meta = settings.lexical_path / settings.collection / "meta.json"
        meta.write_text("{ not json")
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["corpus"].startswith("error")


def test_a_page_ingested_on_one_replica_answers_on_another(
    start_servers, postgres_url: str, chroma_url: str, tmp_path: Path
):
    """Replicas share the chunk store (Postgres), the dense index (a Chroma server) and the
    lexical index (one folder); neither rebuilds anything to see the other's writes."""
    shared = {
        "KEEL_DATABASE_URL": postgres_url,
        "KEEL_CORPUS_URL": postgres_url,
        "KEEL_CHROMA_URL": chroma_url,
        "KEEL_LEXICAL_DIR": str(tmp_path / "lexical"),
        "KEEL_COLLECTION": f"scale{uuid.uuid4().hex[:8]}",
    }
    first, second = start_servers(
        {**shared, "KEEL_DATA_DIR": str(tmp_path / "a")},
        {**shared, "KEEL_DATA_DIR": str(tmp_path / "b")},
    )
    question = {
        "message": "What does the barn owl of Harbor Wood hunt?",
        "context": {"use_cache": False},
    }
    with (
        httpx.Client(base_url=first.url, timeout=60) as a,
        httpx.Client(base_url=second.url, timeout=60) as b,
    ):
        thread = b.post("/v1/threads").json()["thread_id"]
        assert b.post(f"/v1/threads/{thread}/runs/wait", json=question).json()["citations"] == []
        page = ("owls.md", b"# Owls\n\nThe barn owl of Harbor Wood hunts voles over the meadow.")
        assert a.post("/v1/documents", files=[("files", page)]).status_code == 201
        ingested = time.monotonic()
        while True:
            thread = b.post("/v1/threads").json()["thread_id"]
            answer = b.post(f"/v1/threads/{thread}/runs/wait", json=question).json()
            if answer["citations"]:
                break
            assert time.monotonic() - ingested < 5, answer
            time.sleep(0.1)
        assert answer["citations"][0]["source"] == "owls.md"
        listed = b.get("/v1/documents").json()["documents"]
        assert [d["id"] for d in listed] == ["owls.md"]
