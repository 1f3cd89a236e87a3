"""The corpus room on the embedded stores: the SQLite chunk store, the tantivy BM25 index and the
Chroma index of document heads, each written per document and read in bounded pages."""

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from corpus import Document, open_corpora
from corpus.lexical import LexicalIndex, tokenize
from corpus.store import PAGE
from graph.settings import Settings
from integrations.text import split_sentences
from nodes.retrieve import DENSE_CHUNKS, dense_chunks


def test_bm25_ranks_by_term_rarity_and_stems_with_statistics_of_its_own(tmp_path: Path):
    index = LexicalIndex(tmp_path / "lexical" / "one")
    chunks = [
        ("a#0", "a", "the cat sat on the mat"),
        ("b#0", "b", "dogs are running fast"),
        ("c#0", "c", "a cat and a dog ran"),
    ]
    index.write(["a", "b", "c"], chunks)
    assert tokenize("Running dogs!") == ["run", "dog"]
    hits = index.search("running dog", 3)
    assert [h[0] for h in hits] == ["b#0", "c#0"]
    assert hits[0][1] > hits[1][1] > 0
    assert index.search("zebra", 3) == [] and index.search("the of", 3) == []
    # another collection's index: its documents neither show up here nor move these scores
    two = LexicalIndex(tmp_path / "lexical" / "two")
    two.write(["x", "y"], [("x#0", "x", "dog dog dog"), ("y#0", "y", "dogs everywhere")])
    assert [h[0] for h in two.search("dog", 3)] == ["x#0", "y#0"]
    assert index.search("running dog", 3) == hits
    # a document's chunks are replaced as a whole, then deleted
    index.write(["b"], [("b#0", "b", "zebras graze"), ("b#1", "b", "zebra stripes")])
    assert sorted(h[0] for h in index.search("zebra", 5)) == ["b#0", "b#1"]
    assert [h[0] for h in index.search("dog", 5)] == ["c#0"]
    assert index.held(["a", "b", "gone"]) == {"a", "b"} and index.count() == 4
    index.delete(["b"])
    assert index.search("zebra", 5) == [] and index.held(["b"]) == set()
    # another process's index object sees those commits after a reload, with nothing rebuilt
    other = LexicalIndex(tmp_path / "lexical" / "one")
    assert [h[0] for h in other.search("cat", 5)] == ["a#0", "c#0"]


def test_dense_hits_are_documents_that_score_their_chunks():
    lexical = [("b#3", 9.0), ("a#0", 5.0), ("b#1", 4.0)]
    documents = [("b", 0.8, 5), ("z", 0.7, 2), ("a", 0.5, 1), ("long", 0.4, 500)]
    dense = dense_chunks(documents, lexical)
    assert dense[:8] == [
        ("b#3", 0.8),  # the chunks BM25 found first, then the document's in order
        ("b#1", 0.8),
        ("b#0", 0.8),
        ("b#2", 0.8),
        ("b#4", 0.8),
        ("z#0", 0.7),
        ("z#1", 0.7),
        ("a#0", 0.5),
    ]
    assert dense[8:] == [(f"long#{n}", 0.4) for n in range(DENSE_CHUNKS)]
    assert dense_chunks([("a#b", 0.9, 1)], [("a#b#0", 1.0)]) == [("a#b#0", 0.9)]


def _rows(data_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(data_dir / "corpus.sqlite") as db:
        return db.execute(sql).fetchall()


def test_ingestion_writes_each_document_once_to_every_store(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, chunk_size=200, chunk_overlap=0)
    corpora = open_corpora(settings)
    corpus = corpora.get()
    long_text = " ".join(f"Sentence {n} talks about alpha particles and decay." for n in range(12))
    docs = [
        Document("a", long_text, title="Alpha decay"),
        Document("b", "Zebra crossings are striped. Pedestrians cross there.", title="Roads"),
    ]
    report = corpus.ingest(docs)
    assert report.chunks_added > 3 and report.outcomes == {"a": "added", "b": "added"}
    chunks = _rows(tmp_path, "SELECT id, doc_id, vectors FROM keel_corpus_chunks ORDER BY n, id")
    assert len(chunks) == report.chunks_added == corpus.count()
    assert all(vectors is None for *_, vectors in chunks)  # no sentence embedded at ingestion
    # the dense index holds one vector per document: its head
    heads = corpus._dense._collection.get(include=["embeddings", "metadatas"])
    assert sorted(heads["ids"]) == ["a", "b"]
    head = corpus._embedder.embed([f"Alpha decay. {long_text}"], 16, settings.dense_head_tokens)
    row = heads["ids"].index("a")
    np.testing.assert_allclose(heads["embeddings"][row], head[0], atol=1e-5)
    assert heads["metadatas"][row]["chunks"] == report.chunks_added - 1
    hits = corpus.dense_search(corpus.embed_query("alpha particles decay"), 5)
    assert hits[0][0] == "a" and len(hits) == 2
    assert corpus.lexical_search("zebra crossings", 5)[0][0] == "b#0"
    # sentence vectors: stored on first use, for every replica; the rest by warm steps
    first = corpus.sentence_vectors(["b#0"])
    assert first["b#0"][0] == ["Zebra crossings are striped.", "Pedestrians cross there."]
    stored = _rows(tmp_path, "SELECT sentences FROM keel_corpus_chunks WHERE id = 'b#0'")
    assert stored == [('["Zebra crossings are striped.", "Pedestrians cross there."]',)]
    np.testing.assert_allclose(
        corpus.sentence_vectors(["b#0"])["b#0"][1], first["b#0"][1], atol=1e-3
    )
    steps = [corpora.warm_step(chunks=2) for _ in range(10)]
    assert steps[0] == 2 and steps[-1] == 0 and sum(steps) == report.chunks_added - 1
    texts = _rows(tmp_path, "SELECT text, sentences FROM keel_corpus_chunks")
    assert all(
        len(split_sentences(text)) == sentences.count('", "') + 1 for text, sentences in texts
    )
    # unchanged: skipped; changed: replaced everywhere; deleted: gone from every store
    version = corpus.version()
    again = corpus.ingest([docs[1], Document("a", "Alpha rays are helium nuclei.", title="A")])
    assert again.outcomes == {"b": "unchanged", "a": "replaced"} and again.corpus_version > version
    assert corpus.count() == 2 and corpus.lexical_search("particles", 5) == []
    assert corpus.chunks(["a#0", "a#1"])["a#0"].text == "Alpha rays are helium nuclei."
    assert corpus.delete("a") == 1 and corpus.delete("a") == 0
    assert corpus.lexical_search("helium", 5) == [] and corpus.chunks(["a#0"]) == {}
    assert [h[0] for h in corpus.dense_search(corpus.embed_query("alpha"), 5)] == ["b"]
    # another tenant's collections are its own: empty here
    other = corpora.get("acme")
    assert other.version() == 0 and other.lexical_search("zebra crossings", 5) == []
    assert other.documents(10) == ([], None)


def test_reads_page_through_any_number_of_documents(tmp_path: Path):
    corpus = open_corpora(Settings(data_dir=tmp_path)).get()
    docs = [Document(f"d{n:05}", f"Note {n} about topic {n % 7}.") for n in range(3 * PAGE + 7)]
    assert corpus.ingest(docs).chunks_added == len(docs)
    ids = [f"{doc.id}#0" for doc in docs]
    assert len(corpus.chunks(ids)) == len(docs)  # more ids than one statement takes
    listed, cursor = [], ""
    while True:
        page, cursor = corpus.documents(400, cursor)
        listed += [info.id for info in page]
        if cursor is None:
            break
    assert listed == [doc.id for doc in docs]
    assert corpus.ingest(docs).documents_unchanged == len(docs)


def test_an_interrupted_ingestion_is_finished_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    corpus = open_corpora(Settings(data_dir=tmp_path)).get()
    docs = [Document("k", "Kidney stones form from calcium oxalate.", title="Kidney")]
    store = corpus._store

    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # the process dies after the indexes, before the store

    with monkeypatch.context() as patched:
        patched.setattr(store, "write", crash)
        with pytest.raises(KeyboardInterrupt):
            corpus.ingest(docs)
    assert corpus.lexical_search("kidney", 5) == [("k#0", pytest.approx(0.575, abs=0.2))]
    assert corpus.chunks(["k#0"]) == {}  # not in the store: retrieval skips the index entry
    assert corpus.ingest(docs).outcomes == {"k": "added"}
    assert [h[0] for h in corpus.lexical_search("kidney calcium", 5)] == ["k#0"]  # once
    assert corpus.chunks(["k#0"])["k#0"].title == "Kidney"


def test_a_chunk_store_that_outlived_its_indexes_gets_them_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    docs = [
        Document("k", "Kidney stones form from calcium oxalate.", title="Kidney"),
        Document("d", "Vitamin D is made in the skin under sunlight.", title="Vitamin D"),
    ]
    settings = Settings(data_dir=tmp_path)
    first = open_corpora(settings)
    assert first.get().ingest(docs).documents_unchanged == 0
    assert first.get().ingest(docs).outcomes == {"k": "unchanged", "d": "unchanged"}
    # the lexical folder is lost (a fresh volume), the chunk store is not: nothing is unchanged
    moved = open_corpora(settings.model_copy(update={"lexical_dir": tmp_path / "new-lexical"}))
    with caplog.at_level(logging.WARNING, "keel.corpus"):
        moved.load()  # start-up says so
    assert "ingest the documents again" in caplog.text
    corpus = moved.get()
    assert corpus.lexical_search("kidney", 5) == []
    assert corpus.ingest(docs).outcomes == {"k": "replaced", "d": "replaced"}
    assert [hit[0] for hit in corpus.lexical_search("kidney calcium", 5)] == ["k#0"]
    # one document's vector is lost from Chroma: only that one is indexed again
    corpus._dense.delete(["d"])
    assert corpus.ingest(docs).outcomes == {"k": "unchanged", "d": "replaced"}
    assert {hit[0] for hit in corpus.dense_search(corpus.embed_query("vitamin"), 5)} == {"k", "d"}
