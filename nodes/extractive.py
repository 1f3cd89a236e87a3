"""The extractive answerer, shared by generate (no model configured) and fallback: the sentences
of the ranked passages that answer the question, best first, each cited as [1], [2]... with the
sentence itself as the citation's snippet; None when no sentence is relevant enough."""

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from spacy.lang.en.stop_words import STOP_WORDS

from corpus import Corpus
from corpus.lexical import tokenize
from graph.context import Context
from graph.deps import Deps
from graph.state import Citation, Passage
from nodes.evidence import FEATURES, EvidenceModel, sentence_features

# Which sentences answer is the evidence model's call (`nodes/evidence.py`); none is chosen when
# no candidate's relevance (cosine + 0.8 x word share - 0.05 x document rank) reaches the floor,
# by default this (`KEEL_ABSTAIN_RELEVANCE`'s default too, docs/evaluation.md#abstention).
MIN_RELEVANCE = 0.5
# Sentences this similar to one already chosen say the same thing again.
REDUNDANCY = 0.85
MAX_SENTENCES = 4
# A passage not embedded yet offers this many of its sentences, those static vectors find closest
# to the question (SciFact train, first 200, cold: evidence P/R 0.320/0.268 with 2, 0.340/0.326
# with 4, 0.367/0.358 with 6 but generate p50 x4.6; 0.373/0.384 with all, embedded).
COLD_SENTENCES = 4
# A short line without final punctuation is a title or heading ("Ingesting documents" atop a
# .txt file): it names a topic and answers nothing.
HEADING_WORDS = 8
_FINAL_PUNCTUATION = tuple(".!?:;\"')]")
# A question naming something no document has a word for ("cookies", asked of a corpus about
# bread) is answered only by a sentence this close in meaning, or one sharing an identifier with
# it ("eIF3f"): a shared word ("bake") is not enough. SciFact train, gold abstracts only: 2 of
# 505 claims lose their answer ("tirasemtiv", named otherwise in its abstract), evidence P/R
# 0.419/0.454 -> 0.417/0.450; the same at 0.5, more from 0.6.
GROUNDED_COSINE = 0.55
# Shorter stems, or with digits, are codes and abbreviations: a corpus may well spell them otherwise.
NAME_CHARS = 4
_WORD = re.compile(r"[a-z0-9]+")


def is_heading(sentence: str) -> bool:
    """A title-like line: at most `HEADING_WORDS` words and no final punctuation."""
    return not sentence.endswith(_FINAL_PUNCTUATION) and len(sentence.split()) <= HEADING_WORDS


@dataclass(frozen=True)
class Selected:
    """A chosen sentence: its passage (0-based rank), position among the sentences given for
    that passage, relevance (what abstention is judged by), cosine similarity to the question and
    the evidence model's probability that it is evidence."""

    passage: int
    position: int
    text: str
    relevance: float
    similarity: float
    probability: float


@cache
def evidence_model() -> EvidenceModel:
    """The shipped evidence model (`nodes/evidence_model.npz`), loaded once."""
    return EvidenceModel.load()


@dataclass(frozen=True)
class Candidates:
    """The sentences the evidence model scores (title-like lines left out): their texts, owners
    (passage, position), unit vectors (one row each) and `nodes.evidence.FEATURES` rows."""

    texts: list[str]
    owners: list[tuple[int, int]]
    matrix: np.ndarray
    rows: np.ndarray


def candidate_sentences(
    question: str,
    query: np.ndarray,
    candidates: list[tuple[list[str], np.ndarray]],
    doc_ranks: list[int] | None = None,
) -> Candidates | None:
    """The sentences of `candidates` (each ranked passage's sentences and their unit vectors)
    that may be chosen, with their features; None when there is none. `doc_ranks` holds the rank
    of each passage's document (default: the passage's own rank)."""
    kept_candidates: list[tuple[list[str], np.ndarray]] = []
    texts: list[str] = []
    owners: list[tuple[int, int]] = []
    kept_ranks: list[int] = []
    by_passage = doc_ranks if doc_ranks is not None else list(range(len(candidates)))
    for rank, (sentences, vectors) in enumerate(candidates):
        kept = [i for i, sentence in enumerate(sentences) if not is_heading(sentence)]
        if not kept:
            continue
        block = np.asarray(vectors, dtype=np.float32).reshape(len(sentences), -1)
        block = block if len(kept) == len(sentences) else block[kept]
        texts.extend(sentences[i] for i in kept)
        owners.extend((rank, i) for i in kept)
        kept_candidates.append(([sentences[i] for i in kept], block))
        kept_ranks.append(by_passage[rank])
    if not texts:
        return None
    rows = sentence_features(question, query, kept_candidates, kept_ranks)
    return Candidates(texts, owners, np.vstack([b for _, b in kept_candidates]), rows)


def choose(found: Candidates, probability: np.ndarray, model: EvidenceModel) -> list[int]:
    """Indexes of the chosen sentences of `found`, grouped by document (in rank order), then by
    passage, each passage's in document order: those the model gives at least its threshold and
    its `relative` share of the best one's, at most its `per_passage` best of a passage and
    `MAX_SENTENCES` in all, the most probable one always, near-duplicates of a chosen one not."""
    chosen: list[int] = []
    per_passage: Counter[int] = Counter()
    order = np.argsort(-probability, kind="stable")
    floor = max(model.threshold, model.relative * float(probability[order[0]]))
    for i in order:
        if len(chosen) == MAX_SENTENCES or (chosen and probability[i] < floor):
            break
        passage = found.owners[i][0]
        if per_passage[passage] == model.per_passage:
            continue
        if chosen and float((found.matrix[chosen] @ found.matrix[i]).max()) >= REDUNDANCY:
            continue
        chosen.append(int(i))
        per_passage[passage] += 1
    doc_rank = found.rows[:, FEATURES.index("doc_rank")]
    return sorted(chosen, key=lambda i: (float(doc_rank[i]), found.owners[i]))


def select_sentences(
    question: str,
    query: np.ndarray,
    candidates: list[tuple[list[str], np.ndarray]],
    doc_ranks: list[int] | None = None,
    model: EvidenceModel | None = None,
    floor: float = MIN_RELEVANCE,
) -> list[Selected]:
    """The sentences that answer `question`, source by source in rank order, each passage's in
    document order (`candidate_sentences`, `choose`; `model` defaults to the shipped one).

    `query` is the question's unit vector. Each sentence's relevance, what abstention judges, is
    its cosine plus 0.8 x the share of the question's words it has, minus 0.05 per rank of its
    document (`nodes.evidence`); nothing is chosen when no candidate reaches `floor`
    (whichever the model would choose: so abstention does not depend on the model).
    """
    model = model or evidence_model()
    found = candidate_sentences(question, query, candidates, doc_ranks)
    if found is None:
        return []
    probability = model.probability(found.rows)
    relevance = found.rows[:, FEATURES.index("relevance")]
    cosine = found.rows[:, FEATURES.index("cosine")]
    if float(relevance.max()) < floor:
        return []  # nothing addresses the question well enough
    return [
        Selected(
            *found.owners[i],
            found.texts[i],
            round(float(relevance[i]), 4),
            round(float(cosine[i]), 4),
            round(float(probability[i]), 4),
        )
        for i in choose(found, probability, model)
    ]


def unknown_words(corpus: Corpus, question: str, passages: list[Passage]) -> list[str]:
    """The question's words (not function words, stems of at least `NAME_CHARS` letters) that
    neither `passages` nor any other document of `corpus` contains."""
    seen = set(tokenize(" ".join(f"{p['title']} {p['text']}" for p in passages)))
    words: dict[str, str] = {}
    for word in _WORD.findall(question.lower()):
        stem = next(iter(tokenize(word)), "")
        # Function words ("what", "should") are asked with, not about.
        if word in STOP_WORDS or not stem.isalpha() or len(stem) < NAME_CHARS:
            continue
        if stem not in seen:
            words[stem] = word
    return [word for word in words.values() if not corpus.lexical_search(word, 1)]


@dataclass(frozen=True)
class ExtractiveAnswer:
    """Sentences with their citation numbers (1, 2, ... in answer order)."""

    sentences: list[tuple[str, int]]
    citations: list[Citation]
    redactions: dict[str, int] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(f"{sentence} [{n}]" for sentence, n in self.sentences)


def _select(
    corpus: Corpus, question: str, query: np.ndarray, passages: list[Passage], floor: float
) -> list[Selected]:
    # The reranker embedded the first ones already: the embedder's cache has them.
    stored = corpus.scoring_vectors([p["id"] for p in passages], query, COLD_SENTENCES)
    empty: tuple[list[str], np.ndarray] = ([], np.zeros((0, query.size), dtype=np.float32))
    docs = list(dict.fromkeys(p["doc_id"] for p in passages))
    picked = select_sentences(
        question,
        query,
        [stored.get(p["id"], empty) for p in passages],
        [docs.index(p["doc_id"]) for p in passages],
        floor=floor,  # `KEEL_ABSTAIN_RELEVANCE`
    )
    if picked and max(s.similarity for s in picked) < GROUNDED_COSINE:
        if not shares_identifier(question, picked) and unknown_words(corpus, question, passages):
            return []
    return picked


def shares_identifier(question: str, picked: list[Selected]) -> bool:
    """Whether a chosen sentence names an identifier of the question (letters and digits, such
    as "eIF3f" or "CCL19"): it is about the same thing, whatever else the corpus calls it."""
    codes = {w for w in _WORD.findall(question.lower()) if not w.isalpha() and not w.isdigit()}
    return any(codes.intersection(_WORD.findall(s.text.lower())) for s in picked)


# Called with each sentence (redacted, with its citation number) and its citation, in order.
OnSentence = Callable[[str, Citation], None]


async def extractive_answer(
    deps: Deps,
    context: Context,
    question: str,
    passages: list[Passage],
    on_sentence: OnSentence | None = None,
) -> ExtractiveAnswer | None:
    """The sentences of `passages` that answer `question`, or None when none is relevant. The
    question's vector is the run's own (`Corpora.query_vector`): no second model call.

    Each sentence goes to `on_sentence` as soon as it is redacted (the output guard: sentences
    leave redacted, as answer tokens and as citation snippets), before the next one is."""
    if not passages:
        return None
    query = await deps.corpora.query_vector(question)
    corpus = deps.corpora.get(context.tenant)
    picked = await asyncio.to_thread(
        _select, corpus, question, query, passages, deps.settings.abstain_relevance
    )
    if not picked:
        return None
    counts: Counter[str] = Counter()
    sentences: list[tuple[str, int]] = []
    citations: list[Citation] = []
    for n, choice in enumerate(picked, start=1):
        redaction = await asyncio.to_thread(deps.redactor.redact, choice.text)
        counts.update(redaction.counts)
        p = passages[choice.passage]
        citation = Citation(n=n, id=p["id"], source=p["source"], snippet=redaction.text[:300])
        sentences.append((redaction.text, n))
        citations.append(citation)
        if on_sentence is not None:
            on_sentence(f"{redaction.text} [{n}]", citation)
    return ExtractiveAnswer(sentences, citations, dict(counts))
