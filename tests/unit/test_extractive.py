"""The query-focused extractive answerer and the citation check of generated answers."""

from pathlib import Path

import numpy as np
import pytest

from corpus import open_corpora
from corpus.loaders import load_paths
from graph.context import Context
from graph.deps import Deps
from graph.settings import Settings
from integrations.cache_stores import SqliteCacheStore
from integrations.text import split_sentences
from nodes.citations import check_citations
from nodes.evidence import FEATURES, WEIGHTS, EvidenceModel, sentence_features
from nodes.extractive import (
    MAX_SENTENCES,
    MIN_RELEVANCE,
    Selected,
    evidence_model,
    extractive_answer,
    select_sentences,
    shares_identifier,
    unknown_words,
)

SSE_QUESTION = "How often do idle SSE connections get a keep-alive comment?"
KEEPALIVE = "Idle connections receive a comment line every fifteen seconds"


def unit(*components: float) -> np.ndarray:
    v = np.array(components, dtype=np.float32)
    return v / np.linalg.norm(v)


QUERY = unit(1, 0, 0, 0)


def by_cosine(threshold: float = 0.5, per_passage: int = 10, rank_weight: float = 0.0):
    """An evidence model of the cosine alone (less `rank_weight` per document rank):
    probability 0.99 at cosine 0.99, 0.88 at 0.85, 0.73 at 0.8, 0.12 at 0.707."""
    weights = np.zeros(len(FEATURES), dtype=np.float32)
    weights[FEATURES.index("cosine")] = 20.0
    weights[FEATURES.index("doc_rank")] = -rank_weight
    ones = np.ones(len(FEATURES), dtype=np.float32)
    return EvidenceModel(0 * ones, ones, weights, -15.0, threshold, per_passage)


def test_sentences_come_passage_by_passage_in_document_order():
    first = (
        ["Unrelated.", "Weak match here."],
        np.stack([unit(0, 0, 1, 0), unit(0.85, 0.53, 0, 0)]),
    )
    second = (["Strong match here."], np.stack([unit(0.99, -0.14, 0, 0)]))
    picked = select_sentences("question words", QUERY, [first, second], [0, 0], by_cosine())
    assert [s.text for s in picked] == ["Weak match here.", "Strong match here."]
    assert [(s.passage, s.position) for s in picked] == [(0, 1), (1, 0)]
    assert picked[0].probability < picked[1].probability
    assert picked[0].relevance < picked[1].relevance


def test_a_later_document_needs_a_better_sentence():
    same = np.stack([unit(1, 0.1, 0, 0)])
    candidates = [(["In doc 2."], same), (["In doc 1."], same)]
    picked = select_sentences("q", QUERY, candidates, [1, 0], by_cosine(0.999, rank_weight=1.0))
    assert [s.text for s in picked] == ["In doc 1."]


def test_nothing_over_the_threshold_selects_nothing():
    far = (["Off topic.", "Also off topic."], np.stack([unit(0.2, 1, 0, 0), unit(0, 0, 1, 0.1)]))
    assert float(far[1][0] @ QUERY) < MIN_RELEVANCE
    assert select_sentences("question", QUERY, [far]) == []
    assert select_sentences("question", QUERY, [([], np.zeros((0, 4)))]) == []


def test_sentences_under_the_models_threshold_are_left_out():
    one = (["Best.", "Much weaker."], np.stack([unit(1, 0, 0, 0), unit(1, 1, 0, 0)]))
    assert float(one[1][1] @ QUERY) > MIN_RELEVANCE
    assert [s.text for s in select_sentences("q", QUERY, [one], model=by_cosine())] == ["Best."]
    # The most probable sentence is chosen even under the threshold.
    picked = select_sentences("q", QUERY, [one], model=by_cosine(threshold=1.0))
    assert [s.text for s in picked] == ["Best."]


def test_near_duplicates_are_removed_and_the_caps_hold():
    dup = (["A fact.", "The same fact."], np.stack([unit(1, 0.05, 0, 0), unit(1, 0.05, 0.01, 0)]))
    assert [s.text for s in select_sentences("q", QUERY, [dup], model=by_cosine())] == ["A fact."]
    # Six equally relevant sentences that each say something else (pairwise cosine 0.64).
    basis = np.eye(8, dtype=np.float32)
    distinct = np.stack([0.8 * basis[0] + 0.6 * basis[i] for i in range(1, 7)])
    texts = [f"Sentence {i}." for i in range(6)]
    picked = select_sentences("q", basis[0], [(texts, distinct)], model=by_cosine())
    assert [s.text for s in picked] == texts[:MAX_SENTENCES]
    picked = select_sentences("q", basis[0], [(texts, distinct)], model=by_cosine(per_passage=2))
    assert [s.text for s in picked] == texts[:2]


def test_the_shipped_model_prefers_the_sentence_with_the_question_words():
    model = evidence_model()
    assert model.weights.shape == (len(FEATURES),) and 0 < model.threshold < 1
    assert EvidenceModel.load(WEIGHTS).threshold == model.threshold
    tie = (
        ["Reindeer graze the tundra.", "The lighthouse keeper rotates the lamp."],
        np.stack([unit(1, 0.3, 0, 0), unit(1, 0, 0.3, 0)]),
    )
    picked = select_sentences("Who rotates the lighthouse lamp?", QUERY, [tie])
    best = max(picked, key=lambda s: s.probability)
    assert best.text == "The lighthouse keeper rotates the lamp."
    assert [s.position for s in picked] == sorted(s.position for s in picked)


def test_features_read_words_numbers_and_result_wording():
    sentences = ["Background on mice.", "We found IL-6 rose 40% (p < 0.01) in IL6 knockouts."]
    rows = sentence_features(
        "IL6 raises inflammation", QUERY, [(sentences, np.stack([unit(0, 1, 0, 0), QUERY]))]
    )
    column = {name: rows[:, n] for n, name in enumerate(FEATURES)}
    assert column["shared_codes"].tolist() == [0.0, 1.0]
    assert column["overlap"][1] > column["overlap"][0] == 0
    assert column["result_cues"][1] >= 2 and column["result_cues"][0] == 0
    assert column["cosine_margin_passage"].tolist() == [-1.0, 0.0]


def test_markdown_headings_and_blank_lines_end_sentences():
    text = "# Harbor\nThe Harbor lighthouse is old.\nIt is red.\n\n## Keeper\nA list item\n\nNext."
    assert split_sentences(text) == [
        "The Harbor lighthouse is old.",
        "It is red.",
        "A list item",
        "Next.",
    ]


@pytest.fixture
async def deps(corpus_dir: Path, tmp_path: Path):
    built = Deps.from_settings(Settings(data_dir=corpus_dir), [])
    built.cache = SqliteCacheStore(tmp_path / "cache.sqlite")
    yield built
    await built.aclose()


async def passages_for(deps: Deps, question: str) -> list:
    from tests.unit.test_nodes import ranked

    return (await ranked(deps, question))["passages"][:5]


async def test_answers_the_sse_question_with_the_keepalive_sentence_only(deps):
    passages = await passages_for(deps, SSE_QUESTION)
    answer = await extractive_answer(deps, Context(), SSE_QUESTION, passages)
    assert answer is not None
    assert answer.sentences[0][0].startswith(KEEPALIVE)
    assert [n for _, n in answer.sentences] == list(range(1, len(answer.sentences) + 1))
    assert [c["n"] for c in answer.citations] == [n for _, n in answer.sentences]
    assert [c["snippet"] for c in answer.citations] == [s for s, _ in answer.sentences]
    assert answer.citations[0]["source"] == "streaming.md"
    assert answer.text.startswith(f"{answer.sentences[0][0]} [1]")
    assert not any("#" in s for s, _ in answer.sentences)


async def test_an_unanswerable_question_gets_no_sentences(deps):
    question = "What is the boiling point of tungsten on Mars?"
    passages = await passages_for(deps, question)
    assert passages  # retrieval always returns something; none of it answers
    assert await extractive_answer(deps, Context(), question, passages) is None


def passage(n: int) -> dict:
    return {
        "id": f"c{n}",
        "doc_id": f"d{n}",
        "source": f"s{n}.md",
        "title": "",
        "text": f"text {n}",
    }


def test_generated_citations_are_renumbered_and_out_of_range_ones_dropped():
    given = [passage(n) for n in range(1, 6)]
    checked = check_citations("Skipped [3] and replaced [3][5], never [9].", given)
    assert checked.answer == "Skipped [1] and replaced [1][2], never."
    assert [(c["n"], c["id"]) for c in checked.citations] == [(1, "c3"), (2, "c5")]
    assert checked.dropped == [9] and checked.degraded == ["citations_dropped: [9]"]
    clean = check_citations("Fine [1].", given)
    assert clean.answer == "Fine [1]." and clean.degraded == []


async def test_a_plain_text_title_line_is_never_an_answer(deps):
    question = "What file types can be ingested?"
    passages = await passages_for(deps, question)
    answer = await extractive_answer(deps, Context(), question, passages)
    assert answer is not None
    chosen = [s for s, _ in answer.sentences] + [c["snippet"] for c in answer.citations]
    assert "Ingesting documents" not in chosen
    assert chosen[0] == "keel ingests plain text, Markdown, HTML, PDF and JSON Lines files."


def test_title_like_lines_are_never_chosen():
    lines = ["Ingesting documents", "Documents are split into chunks."]
    picked = select_sentences("q", QUERY, [(lines, np.stack([QUERY, unit(1, 0.2, 0, 0)]))])
    assert [(s.text, s.position) for s in picked] == [("Documents are split into chunks.", 1)]


BREAD = """# Sourdough bread

Mix the flour, water and starter, then let the dough rest for an hour before adding salt.
Bake the loaf at 230 °C for twenty minutes with the lid on, then twenty more without it.
Store the bread in a paper bag at room temperature for up to three days.

## Oven temperatures

| Item | Temperature | Time |
| --- | --- | --- |
| Baguette | 250 °C | 25 min |
| Brioche | 180 °C | 30 min |
"""


@pytest.fixture
async def bakery(data_dir: Path, tmp_path: Path):
    """The sample corpus plus a page about bread, with a Markdown table."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "bread.md").write_text(BREAD)
    corpora = open_corpora(Settings(data_dir=data_dir, sentence_vectors="eager"))
    corpora.get().ingest(load_paths([tmp_path / "docs"], root=tmp_path / "docs"))
    corpora.close()
    built = Deps.from_settings(Settings(data_dir=data_dir), [])
    built.cache = SqliteCacheStore(tmp_path / "cache.sqlite")
    yield built
    await built.aclose()


@pytest.mark.parametrize(
    "question",
    [
        "How long do I bake cookies?",
        "At what temperature should cookies be baked?",
        "How should I store cookies?",
    ],
)
async def test_a_question_about_something_no_document_names_is_not_answered_off_topic(
    bakery, question: str
):
    # Bread sentences share "bake", "temperature" or "store" with these: not enough.
    passages = await passages_for(bakery, question)
    assert passages and passages[0]["source"] == "bread.md"
    assert unknown_words(bakery.corpora.get(), question, passages) == ["cookies"]
    assert await extractive_answer(bakery, Context(), question, passages) is None


async def test_bread_questions_are_answered_and_table_rows_read_as_sentences(bakery):
    question = "How should sourdough bread be stored?"
    stored = await extractive_answer(
        bakery, Context(), question, await passages_for(bakery, question)
    )
    assert stored is not None and "paper bag" in stored.sentences[0][0]
    question = "At what temperature is a baguette baked?"
    oven = await extractive_answer(
        bakery, Context(), question, await passages_for(bakery, question)
    )
    assert oven is not None
    assert oven.sentences[0][0] == "Item: Baguette; Temperature: 250 °C; Time: 25 min."
    assert not any("|" in s for s, _ in oven.sentences)


def test_a_sentence_sharing_an_identifier_with_the_question_is_on_topic():
    def chosen(text: str) -> list[Selected]:
        return [Selected(0, 0, text, 0.6, 0.4, 0.5)]

    question = "Deltex has no known interactions with eIF3f."
    assert shares_identifier(question, chosen("The screen identified eIF3f as a partner."))
    assert not shares_identifier(question, chosen("Known interactions were screened."))
    assert not shares_identifier("Cookies bake in 12 minutes.", chosen("Bread bakes 12 minutes."))


def test_abstention_reads_the_best_candidate_whichever_the_model_chooses():
    # The model prefers the sentence without the question's words; the other is more relevant
    # (cosine 0.447 + 0.8 x 3 of 4 words = 1.047 against 0.857).
    sentences = ["The lighthouse keeper rotates the lamp.", "Reindeer graze the tundra."]
    vectors = np.stack([unit(0.5, 1, 0, 0), unit(1, 0.6, 0, 0)])
    question = "Who rotates the lighthouse lamp?"
    one = by_cosine(per_passage=1)
    picked = select_sentences(question, QUERY, [(sentences, vectors)], model=one)
    assert [(s.text, s.relevance) for s in picked] == [("Reindeer graze the tundra.", 0.8575)]
    assert select_sentences(question, QUERY, [(sentences, vectors)], None, one, 1.0) == picked
    assert select_sentences(question, QUERY, [(sentences, vectors)], None, one, 1.1) == []


def test_sentences_of_one_document_stay_together():
    basis = np.eye(8, dtype=np.float32)
    # Equally close to the question (cosine 0.9), distinct from each other (0.81).
    close = [np.stack([0.9 * basis[0] + 0.436 * basis[n]]) for n in (1, 2, 3)]
    texts = ["Doc A, chunk 1.", "Doc B.", "Doc A, chunk 2."]
    candidates = [([t], v) for t, v in zip(texts, close, strict=True)]
    picked = select_sentences("q", basis[0], candidates, [0, 1, 0], by_cosine())
    assert [s.text for s in picked] == ["Doc A, chunk 1.", "Doc A, chunk 2.", "Doc B."]
