"""A freshly ingested corpus (lazy sentence vectors): a token table distilled from the shipped
MiniLM picks the few sentences of each chunk worth embedding, so that the first queries never
wait for whole chunks' sentences to be embedded."""

import asyncio
import os
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from corpus import Corpora, Corpus, Document, open_corpora
from corpus.sentences import Matches
from graph.context import Context
from graph.settings import Settings
from graph.state import Passage
from integrations.embeddings import MiniLMEmbedder, StaticEmbedder
from integrations.pii import PatternRedactor
from integrations.rerank import (
    FEATURES,
    MODEL_DEPTH,
    RANK_CAP,
    STOP_WORDS,
    LearnedReranker,
    RerankModel,
    features,
    soft_matches,
)
from nodes.extractive import extractive_answer
from runtime.keel import WARM_CHUNKS, _warm_sentences
from scripts.train_reranker import cold_matches, fit

DOCS = [
    Document(
        "d",
        "Vitamin D is made in the skin under sunlight. Deficiency weakens bones in adults. "
        "Cod liver oil is a dietary source of it.",
        title="Vitamin D",
    ),
    Document(
        "k",
        "Kidney stones form from calcium oxalate crystals. Drinking water lowers the risk. "
        "Pain in the flank is the usual first symptom.",
        title="Kidney stones",
    ),
    Document(
        "h",
        "The harbor lighthouse opens at nine. Tickets are sold at the pier. "
        "Children under six enter free of charge.",
        title="Harbor",
    ),
]


def stored_sentences(data_dir: Path) -> int:
    """Sentences whose vectors are rows in the chunk store."""
    with sqlite3.connect(data_dir / "corpus.sqlite") as db:
        (count,) = db.execute(
            "SELECT COALESCE(SUM(json_array_length(sentences)), 0) FROM keel_corpus_chunks"
        ).fetchone()
    return int(count)


def first_stage(chunk_id: str, text: str, score: float) -> Passage:
    doc_id = chunk_id.split("#")[0]
    return Passage(
        id=chunk_id,
        doc_id=doc_id,
        source=doc_id,
        title="",
        section="",
        text=text,
        score=score,
        dense_rank=None,
        lexical_rank=None,
    )


def ingested(data_dir: Path) -> tuple[Corpora, Corpus]:
    """The DOCS in a fresh embedded store (lazy sentence vectors, the default)."""
    corpora = open_corpora(Settings(data_dir=data_dir))
    corpus = corpora.get()
    corpus.ingest(DOCS)
    corpus.refresh()
    return corpora, corpus


def record_embeddings(monkeypatch: pytest.MonkeyPatch, corpus: Corpus) -> list[str]:
    """The texts the corpus's model embeds from now on, in order."""
    embedded: list[str] = []
    real_embed = corpus._embedder.embed

    def recording(texts: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        embedded.extend(texts)
        return real_embed(texts, *args, **kwargs)

    monkeypatch.setattr(corpus._embedder, "embed", recording)
    return embedded


@pytest.fixture(scope="module")
def model() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_static_table_is_distilled_from_the_model_once_per_machine(model):
    table = StaticEmbedder(model)  # the machine's table: built by the first user, then read
    assert table._path.exists() and table.dim == model.dim
    assert table._table.shape == (len(model.vocabulary), model.dim)
    ids = sorted(set(model.token_ids(["Vitamin D deficiency weakens bones."])[0]))
    # each row is the model's own vector of the token alone ([CLS] token [SEP], mean-pooled),
    # up to the integer model's activation scale, which is per call (rows came 512 at a time)
    rows, alone = table._table[ids].astype(np.float32), model.token_vectors(ids)
    cosines = (rows * alone).sum(1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(alone, axis=1)
    assert cosines.min() > 0.9, cosines
    # a one-token text: the static vector is the model's vector of that text (up to the integer
    # model's activation scale, which is per call: the row came in a batch of other tokens)
    (word,) = model.token_ids(["bones"])
    assert len(word) == 1
    assert float(table.embed(["bones"])[0] @ model.embed(["bones"])[0]) > 0.98
    # a table from another model file is not used
    size = len(model.vocabulary)
    assert table._load(size) is not None
    model.fingerprint, real = "another-model:1", model.fingerprint
    try:
        assert table._load(size) is None
    finally:
        model.fingerprint = real
    # static sentence vectors live in the model's space: the right sentence is nearest
    query = model.embed(["Does low vitamin D harm the skeleton?"])[0]
    sentences = [s for doc in DOCS for s in doc.text.split(". ")]
    assert int(np.argmax(table.embed(sentences) @ query)) == 1


def test_fresh_corpus_answers_with_static_scores_without_embedding_sentences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    corpora, corpus = ingested(tmp_path)
    assert stored_sentences(tmp_path) == 0  # and embedded no sentence
    embedded = record_embeddings(monkeypatch, corpus)
    question = "Which food provides vitamin D?"
    passages = [  # the first stage put the right document last (of the three close ones)
        first_stage(f"{doc.id}#0", doc.text, score)
        for doc, score in zip(reversed(DOCS), (0.9, 0.88, 0.86), strict=True)
    ] + [first_stage("gone#0", "", 0.0)]
    ranked = LearnedReranker(depth=40).rerank(question, passages, corpus)
    assert ranked[0]["doc_id"] == "d"
    # the model saw the question and, per chunk, the one sentence static vectors ranked first
    assert embedded[0] == question and len(embedded) == 1 + len(DOCS)
    assert {
        text: doc.id for doc in DOCS for text in embedded[1:] if text in doc.text
    }.keys() == set(embedded[1:])
    # all the answerer reads of deps
    deps: Any = SimpleNamespace(redactor=PatternRedactor(), corpora=corpora, settings=Settings())
    cold = asyncio.run(extractive_answer(deps, Context(), question, ranked))
    assert cold is not None and cold.citations[0]["id"] == "d#0"
    assert stored_sentences(tmp_path) == 0  # a query stores nothing: the warmer does
    # once the background warmer has embedded every chunk, the stored vectors are used, and
    # the answer is the same
    while corpora.warm_step(chunks=8):
        pass
    assert stored_sentences(tmp_path) == 9
    vectors = corpus.scoring_vectors(["d#0"], corpus.embed_query(question), 2)
    assert vectors["d#0"][0] == [s + "." for s in DOCS[0].text.rstrip(".").split(". ")]
    warm = asyncio.run(extractive_answer(deps, Context(), question, ranked))
    assert warm is not None and warm.sentences == cold.sentences
    # a deployment that wants closer evidence before answering abstains instead
    best = warm.citations[0]
    strict: Any = SimpleNamespace(**{**vars(deps), "settings": Settings(abstain_relevance=2.0)})
    assert best["id"] == "d#0"
    assert asyncio.run(extractive_answer(strict, Context(), question, ranked)) is None


def test_match_scores_cost_at_most_model_depth_sentences_cold_and_none_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    corpora, corpus = ingested(tmp_path)
    query = corpus.embed_query("What lowers the risk of kidney stones?")
    embedded = record_embeddings(monkeypatch, corpus)
    ids = ["h#0", "k#0", "d#0", "gone#0"]
    cold = corpus.match_scores(ids, query, model_depth=2)
    # the model embedded one sentence for each of the first two chunks, none for the others
    assert len(embedded) == 2 and embedded[0] in DOCS[2].text and embedded[1] in DOCS[1].text
    assert int(np.argmax(cold.model)) == 1 and cold.model[3] == 0.0  # a deleted chunk: nothing
    assert cold.best[:2] == embedded and cold.best[3] == "" and (cold.static[3] == 0).all()
    # beyond the model depth a chunk scores by static vectors alone, on the model's scale
    alone = corpus.match_scores(["d#0"], query, model_depth=0)
    assert cold.model[2] == pytest.approx(alone.model[0]) and 0.0 < alone.model[0] < 1.0
    assert alone.best[0] in DOCS[0].text
    # the static side: each chunk's best two static cosines, best first
    assert (cold.static[:3, 0] >= cold.static[:3, 1]).all() and (cold.static[:3] > 0).all()
    # once warm, stored vectors are read: no model call, each chunk's best model cosine
    while corpora.warm_step(chunks=8):
        pass
    embedded.clear()
    warm = corpus.match_scores(ids, query, model_depth=2)
    assert embedded == [] and int(np.argmax(warm.model)) == 1 and warm.model[3] == 0.0
    stored = [corpus.sentence_vectors([i])[i] for i in ids[:3]]
    assert warm.model[:3] == pytest.approx([float((v @ query).max()) for _, v in stored], abs=1e-6)
    assert warm.best[:3] == [s[int(np.argmax(v @ query))] for s, v in stored]
    assert warm.model[1] >= cold.model[1]  # the best of all its sentences, not only the static pick
    assert warm.static[:3] == pytest.approx(cold.static[:3], abs=1e-6)  # static: warm or cold


def test_chunks_scored_cold_are_warmed_first_even_while_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    corpora, corpus = ingested(tmp_path)
    query = corpus.embed_query("What causes kidney stones?")
    assert len(corpus.scoring_vectors(["k#0"], query, 2)["k#0"][0]) == 2
    # while runs go on, the warmer embeds only the chunk a query needed, all its sentences
    assert corpora.warm_step(chunks=8, wanted_only=True) == 1
    assert stored_sentences(tmp_path) == 3
    assert len(corpus.scoring_vectors(["k#0"], query, 2)["k#0"][0]) == 3  # stored: all of them
    # nothing else wanted: the busy warmer's steps do not even look at the store
    lookups: list[Any] = []
    store, real_cold = corpus.sentences._store, corpus.sentences._store.cold
    monkeypatch.setattr(store, "cold", lambda *a, **kw: lookups.append(1) or real_cold(*a, **kw))
    assert corpora.warm_step(chunks=8, wanted_only=True) == 0
    assert lookups == []
    assert corpora.warm_step(chunks=8) == 2  # idle: the rest
    assert lookups == [1]
    assert stored_sentences(tmp_path) == 9


def test_stored_sentences_are_read_once_per_corpus_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    corpora, corpus = ingested(tmp_path)
    while corpora.warm_step(chunks=8):
        pass
    reads: list[Any] = []
    store, real_read = corpus.sentences._store, corpus.sentences._store.sentence_rows
    monkeypatch.setattr(store, "sentence_rows", lambda *a: reads.append(a) or real_read(*a))
    query = corpus.embed_query("What causes kidney stones?")
    first = corpus.scoring_vectors(["k#0", "d#0"], query, 2)
    again = corpus.scoring_vectors(["d#0", "k#0"], query, 2)
    assert len(reads) == 1 and again == first  # the second query read nothing from the store
    with pytest.raises(ValueError):  # shared between queries: nobody may change them
        again["k#0"][1][0, 0] = 1.0
    # a changed document moves the corpus version: its new sentences are read, not the old
    corpus.ingest([Document("k", "Kidney stones are hard deposits. They hurt.", title="K")])
    corpus.refresh()
    while corpora.warm_step(chunks=8):
        pass
    assert corpus.scoring_vectors(["k#0"], query, 2)["k#0"][0] == [
        "Kidney stones are hard deposits.",
        "They hurt.",
    ]


class Counting:
    """An embedder that counts the texts it embeds."""

    def __init__(self, inner: Any):
        self.inner, self.texts = inner, 0

    def embed(self, texts: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts, *args, **kwargs)


def test_the_default_corpus_loads_before_any_query_and_warms_on_its_own_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    corpora = open_corpora(Settings(data_dir=tmp_path))
    corpora.get().ingest(DOCS)
    reopened = open_corpora(Settings(data_dir=tmp_path))  # a replica starting on that store
    reopened.load()
    corpus = reopened.get()
    # nothing is rebuilt or read whole: the stores answer as they are
    assert corpus.count() == 3 and corpus.lexical_search("kidney stones", 3)[0][0] == "k#0"
    assert reopened._background is None  # made by the first warm step, not before
    made: list[Counting] = []

    def make() -> Counting:
        made.append(Counting(MiniLMEmbedder(threads=1, cache_size=0)))
        return made[0]

    query = Counting(corpus._embedder)
    monkeypatch.setattr(corpus.sentences, "_embedder", query)
    monkeypatch.setattr(reopened, "_make_background", make)
    assert reopened.warm_step(chunks=8) == 3
    assert reopened.warm_step(chunks=8) == 0 and len(made) == 1
    assert (query.texts, made[0].texts) == (0, 9)  # runs' embeddings never queue behind it


def test_warm_steps_run_on_a_thread_at_the_lowest_cpu_priority():
    steps: list[tuple[int, bool, int]] = []
    finished = threading.Event()

    class Corpora:
        def warm_step(self, chunks: int, wanted_only: bool) -> int:
            nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            steps.append((chunks, wanted_only, nice))
            if len(steps) == 2:
                finished.set()
            return 1

    class Runs:
        def idle_s(self) -> float:
            return 60.0  # idle: whole steps, back to back

    async def main() -> None:
        warmer = asyncio.create_task(_warm_sentences(Corpora(), Runs()))  # type: ignore[arg-type]
        await asyncio.to_thread(finished.wait, 10)
        warmer.cancel()
        await asyncio.gather(warmer, return_exceptions=True)

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    asyncio.run(main())
    assert steps[:2] == [(WARM_CHUNKS, False, 19)] * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_soft_matches_count_the_question_pieces_a_text_has_and_its_near_words(model):
    static = StaticEmbedder(model)
    question, *texts = static.token_units(
        [
            "Does aspirin lower the risk of stroke?",
            "Taking aspirin, they lower the risk of stroke.",
            "Acetylsalicylic acid reduces cerebral infarction.",
            "The lighthouse sells tickets.",
            "",
        ],
        STOP_WORDS,
    )
    # stop words ("does", "the", "of") and the question mark are not matched
    (content,) = static.token_units(["aspirin lower risk stroke"], STOP_WORDS)
    assert question[0] == pytest.approx(content[0]) and len(question[1]) < 10
    soft = soft_matches(question, texts)
    verbatim, synonyms, unrelated, empty = soft
    # every piece found verbatim: the exact kernel and the best similarity are full
    assert verbatim[-1] == pytest.approx(1.0) and verbatim[-2] == pytest.approx(1.0, abs=1e-3)
    assert verbatim[0] > synonyms[0] == unrelated[0] == 0.0
    # words of related meaning match better than unrelated ones, by the best similarity
    assert synonyms[-2] > unrelated[-2]
    assert not empty.any()


def test_reranker_features_and_the_shipped_model(tmp_path: Path):
    passages = [
        {
            **first_stage("k#0", DOCS[1].text, 0.9),
            "title": "Kidney stones",
            "lexical_score": 4.0,
            "dense_score": 0.5,
            "lexical_rank": 1,
        },
        {**first_stage("d#1", DOCS[0].text, 0.4), "lexical_score": None, "dense_score": 0.2},
    ]
    matches = Matches(
        np.array([0.7, 0.1]),
        np.array([[0.6, 0.5], [0.2, 0.2]]),
        ["Drinking water lowers the risk.", ""],
    )
    idf = {"lower": 1.0, "risk": 1.0, "kidney": 3.0, "stone": 3.0}
    question = "What lowers the risk of kidney stones in 2 weeks?"
    soft = np.array([[3.0, 1.0, 0.5, 0.2, 0.1, 1.0, 1.0], [0.0, 0.5, 0.5, 0.2, 0.1, 0.4, 0.0]])
    rows = features(question, passages, matches, idf, soft)
    row = dict(zip(FEATURES, rows[0].tolist(), strict=True))
    # the first stage's scores and ranks; a list that missed it reads as beyond a turn's list
    assert row["fused"] == pytest.approx(0.9) and row["lexical"] == 1.0 and row["dense"] == 0.5
    assert row["lexical_rank"] == pytest.approx(np.log(2)) and row["fused_rank"] == 0.0
    assert row["dense_rank"] == pytest.approx(np.log1p(RANK_CAP))
    # the sentences' matches, as given
    assert (row["match"], row["static_first"], row["static_second"]) == pytest.approx(
        (0.7, 0.6, 0.5)
    )
    # the question's 7 stems ("the", "of", "in" are BM25's stop words): it contains "lower",
    # "risk", "kidney" and "stone", all the inverse frequency given; its title two of them
    assert row["coverage"] == pytest.approx(4 / 7) and row["idf_coverage"] == pytest.approx(1.0)
    assert row["title_coverage"] == pytest.approx(2 / 7) and row["numbers"] == 0.0
    # consecutive pairs: "lower risk" and "kidney stone" of 6
    assert row["bigrams"] == pytest.approx(2 / 6)
    # the best sentence has "lower" and "risk": 2 of 7 stems, a quarter of the weight
    assert row["sentence_coverage"] == pytest.approx(2 / 7)
    assert row["sentence_idf_coverage"] == pytest.approx(2 / 8)
    assert row["first_chunk"] == 1.0 and row["document_chunks"] == 1.0
    other = dict(zip(FEATURES, rows[1].tolist(), strict=True))
    assert other["lexical"] == 0.0 and other["first_chunk"] == 0.0 and other["coverage"] == 0.0
    assert other["fused_rank"] == pytest.approx(np.log(2)) and other["sentence_coverage"] == 0.0
    # the soft matches, as given, and the gaps to the best candidate's
    assert rows[:, FEATURES.index("soft_1.0") : FEATURES.index("soft_exact") + 1] == (
        pytest.approx(soft)
    )
    assert (row["fused_gap"], row["match_gap"], row["dense_gap"]) == (0.0, 0.0, 0.0)
    assert other["fused_gap"] == pytest.approx(0.4 - 0.9)
    assert other["match_gap"] == pytest.approx(0.1 - 0.7)
    assert other["idf_coverage_gap"] == pytest.approx(-1.0)
    shipped = RerankModel.load()
    assert shipped.linear.shape == (len(FEATURES),) and shipped.hidden.shape[0] == len(FEATURES)
    assert all(np.isfinite(getattr(shipped, k)).all() for k in RerankModel._ARRAYS)
    # it ranks the candidate with the better evidence first
    assert shipped.score(rows)[0] > shipped.score(rows)[1]
    # weights trained on other features are refused, not misread
    np.savez(tmp_path / "old.npz", features=np.array(["fused", "match"]), mean=np.zeros(2))
    with pytest.raises(ValueError, match="trained on"):
        RerankModel.load(tmp_path / "old.npz")


def test_reranker_scores_its_depth_and_keeps_the_rest_below(tmp_path: Path):
    _, corpus = ingested(tmp_path)
    # a model that reads only the share of the question's words a passage contains
    width = len(FEATURES)
    linear = np.eye(width)[FEATURES.index("coverage")]
    words = RerankModel(
        np.zeros(width), np.ones(width), linear, np.zeros((width, 1)), np.zeros(1), np.zeros(1)
    )
    question = "Where are lighthouse tickets sold?"
    passages = [
        first_stage("k#0", DOCS[1].text, 0.9),
        first_stage("h#0", DOCS[2].text, 0.5),
        first_stage("d#0", DOCS[0].text, 0.3),
    ]
    ranked = LearnedReranker(depth=2, model=words).rerank(question, passages, corpus)
    assert [p["id"] for p in ranked] == ["h#0", "k#0", "d#0"]
    assert [p["score"] for p in ranked] == sorted((p["score"] for p in ranked), reverse=True)
    assert LearnedReranker(depth=2, model=words).rerank(question, [], corpus) == []


def test_training_script_fits_a_ranking_model_and_reads_cold_matches(tmp_path: Path):
    # The smoke run of `scripts/train_reranker.py`: its fit on lists where the relevant
    # candidate is the one with most of the question's words, and its cold emulation.
    rng = np.random.default_rng(0)
    column = FEATURES.index("coverage")

    def lists(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for _ in range(count):
            rows = rng.normal(size=(10, len(FEATURES))).astype(np.float32)
            out.append((rows, (np.arange(10) == np.argmax(rows[:, column])).astype(float)))
        return out

    model = fit(lists(300), hidden=4, members=2, l2=1e-3, epochs=300)
    assert model.hidden.shape == (len(FEATURES), 8) and model.out.shape == (8,)
    held_out = lists(40)
    hits = [np.argmax(model.score(x)) == np.argmax(y) for x, y in held_out]
    assert np.mean(hits) >= 0.75  # by chance: 0.1
    # a warm corpus's matches, read as a cold one would give them: the same as a cold query's
    corpora, corpus = ingested(tmp_path)
    query = corpus.embed_query("What lowers the risk of kidney stones?")
    ids = ["h#0", "k#0", "d#0"]
    cold = corpus.match_scores(ids, query, MODEL_DEPTH)
    while corpora.warm_step(chunks=8):
        pass
    warm = corpus.match_scores(ids, query, MODEL_DEPTH)
    emulated = cold_matches(corpus, ids, query, warm)
    assert emulated.best == cold.best and emulated.model == pytest.approx(cold.model, abs=0.02)
    assert (emulated.static == warm.static).all()
