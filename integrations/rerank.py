"""Second-stage rerankers. The slot is a protocol so that a cross-encoder can take it later.

The shipped one is learned: a small network over thirty-one signals per candidate that the
first stage, BM25's statistics, MiniLM and its static vectors give (among them soft word
matches: kernel pooling over static word-piece similarities, KNRM's way), fitted on SciFact's
training claims by `scripts/train_reranker.py` (listwise, 5-fold cross-validated inside train,
folds grouped by relevant document) and loaded from `rerank_model.npz` with numpy."""

import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final, Protocol, Self

import numpy as np
from spacy.lang.en.stop_words import STOP_WORDS as _STOP_WORDS

from corpus import Corpus
from corpus.lexical import tokenize
from corpus.sentences import Matches
from graph.state import Passage
from integrations.weights import read_weights, write_weights

# Candidates whose best-sentence match is the model's cosine even when they have no stored
# sentence vectors yet (the rest: static vectors alone); it bounds the model calls a cold query
# costs. SciFact train nDCG@10, cold, re-scoring 20: 0.7255 with 10, 0.7269 with 20; among tiers
# 1-2 of the manuals, 0.7174 and 0.7213.
MODEL_DEPTH = 20
WEIGHTS: Final = Path(__file__).with_name("rerank_model.npz")
# What the model reads of a candidate, in column order (see `features`).
FEATURES: Final = (
    "fused",
    "lexical",
    "dense",
    "match",
    "coverage",
    "static_first",
    "static_second",
    "idf_coverage",
    "title_coverage",
    "bigrams",
    "numbers",
    "lexical_rank",
    "dense_rank",
    "fused_rank",
    "first_chunk",
    "length",
    "sentence_coverage",
    "sentence_idf_coverage",
    "document_chunks",
    *(f"soft_{kernel}" for kernel in ("1.0", "0.8", "0.6", "0.4", "0.2")),
    "soft_best",
    "soft_exact",
    "fused_gap",
    "dense_gap",
    "match_gap",
    "idf_coverage_gap",
    "sentence_idf_coverage_gap",
)
# Soft word matching (KNRM's kernel pooling over static word-piece vectors): each question
# piece's similarities to the text's pieces counted near each kernel's centre; the first
# kernel, that narrow, counts the piece itself.
SOFT_CENTRES: Final = np.array([1.0, 0.8, 0.6, 0.4, 0.2], dtype=np.float32)
SOFT_WIDTHS: Final = np.array([1e-3, 0.1, 0.1, 0.1, 0.1], dtype=np.float32)
# Gaps to the best candidate, of these (the tanh layer reads each candidate alone).
GAPS: Final = ("fused", "dense", "match", "idf_coverage", "sentence_idf_coverage")
# A list that missed the candidate ranks it here (and no deeper): an eval's lists are longer
# than a turn's, and SciFact train nDCG@10 lost 0.002 with ranks cut at a turn's 41.
RANK_CAP = 200
# Chunks of one document are counted among this many candidates (a turn retrieves 40).
DOCUMENT_WINDOW = 40
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
STOP_WORDS: Final = frozenset(_STOP_WORDS)  # not matched softly


class Reranker(Protocol):
    """Re-scores first-stage candidates; returns them best first with `score` replaced."""

    name: str

    def rerank(self, question: str, passages: list[Passage], corpus: Corpus) -> list[Passage]:
        """`corpus` is the one the passages came from (a cross-encoder may ignore it)."""
        ...


def _share(asked: set[str], found: set[str]) -> float:
    return len(asked & found) / len(asked) if asked else 0.0


def _weighted(weights: dict[str, float], found: set[str]) -> float:
    total = sum(weights.values())
    return sum(w for t, w in weights.items() if t in found) / total if total > 0 else 0.0


def _log_rank(rank: int | None) -> float:
    return math.log1p(min(rank or RANK_CAP, RANK_CAP))


def soft_matches(
    question: tuple[np.ndarray, np.ndarray], texts: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """For each text, its soft matches of the question (each as `StaticEmbedder.token_units`
    gives it: unit piece vectors and Zipf weights): per kernel of `SOFT_CENTRES`, the
    Zipf-weighted mean over the question's pieces of log(1 + the text's pieces near it), then
    the weighted mean of each piece's best similarity and the weighted share found verbatim."""
    vectors, weights = question
    out = np.zeros((len(texts), len(SOFT_CENTRES) + 2), dtype=np.float32)
    if not len(weights):
        return out
    share = weights / weights.sum()
    for n, (text, _) in enumerate(texts):
        if not len(text):
            continue
        similarity = vectors @ text.T  # question pieces x text pieces
        near = np.exp(-((similarity[..., None] - SOFT_CENTRES) ** 2) / (2 * SOFT_WIDTHS**2))
        out[n, : len(SOFT_CENTRES)] = share @ np.log1p(near.sum(axis=1))
        best = similarity.max(axis=1)
        out[n, -2], out[n, -1] = share @ best, share @ (best >= 0.999)
    return out


def features(
    question: str,
    passages: list[Passage],
    matches: Matches,
    idf: dict[str, float],
    soft: np.ndarray,
) -> np.ndarray:
    """One row of `FEATURES` for each of the first `len(matches.model)` passages: its fused
    first-stage score, its BM25 score over the best of those, its document head's cosine, its
    sentences' matches (`matches`, from `Corpus.match_scores`: the best model cosine, the best
    two static cosines), the share of the question's (stemmed) words its text contains (plain,
    weighted by `idf`, of the title alone, of consecutive pairs, of numbers), its ranks in the
    lexical, dense and fused lists, whether it opens its document, its length, the best
    sentence's share of the question's words (plain and by `idf`), how many of the first
    `DOCUMENT_WINDOW` candidates share its document, its `soft` matches (`soft_matches`, a
    row per passage) and the gaps of its `GAPS` to the best of the passages read."""
    words = tokenize(question)
    asked, pairs = set(words), set(itertools.pairwise(words))
    weights = {t: idf.get(t, 0.0) for t in asked}
    numbers = set(_NUMBER.findall(question))
    documents = Counter(p["doc_id"] for p in passages[:DOCUMENT_WINDOW])
    passages = passages[: len(matches.model)]
    lexical = np.array([p.get("lexical_score") or 0.0 for p in passages], dtype=np.float32)
    best_lexical = float(lexical.max(initial=0.0)) or 1.0
    rows = []
    for n, p in enumerate(passages):
        tokens = tokenize(f"{p['title']} {p['text']}")
        found, sentence = set(tokens), set(tokenize(matches.best[n]))
        rows.append(
            (
                p["score"],
                lexical[n] / best_lexical,
                p.get("dense_score") or 0.0,
                float(matches.model[n]),
                _share(asked, found),
                float(matches.static[n, 0]),
                float(matches.static[n, 1]),
                _weighted(weights, found),
                _share(asked, set(tokenize(p["title"]))),
                len(pairs.intersection(itertools.pairwise(tokens))) / len(pairs) if pairs else 0.0,
                _share(numbers, set(_NUMBER.findall(p["text"]))),
                _log_rank(p.get("lexical_rank")),
                _log_rank(p.get("dense_rank")),
                math.log1p(n),
                float(p["id"].rsplit("#", 1)[-1] == "0"),
                math.log1p(len(tokens)),
                _share(asked, sentence),
                _weighted(weights, sentence),
                float(documents[p["doc_id"]]),
            )
        )
    plain = np.array(rows, dtype=np.float32).reshape(len(passages), FEATURES.index("soft_1.0"))
    gaps = plain[:, [FEATURES.index(name) for name in GAPS]]
    return np.hstack([plain, soft[: len(passages)], gaps - gaps.max(axis=0, initial=-np.inf)])


def units(
    corpus: Corpus, question: str, passages: list[Passage]
) -> tuple[tuple[np.ndarray, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """The question's and the passages' (title and text) word pieces for `soft_matches`."""
    texts = [question, *(f"{p['title']} {p['text']}" for p in passages)]
    found = corpus.sentences.static.token_units(texts, STOP_WORDS)
    return found[0], found[1:]


@dataclass(frozen=True)
class RerankModel:
    """A one-hidden-layer network over standardised features z = (x - mean) / scale:
    score = z . linear + tanh(z @ hidden + bias) . out (trained as an average of small
    networks, stored as one)."""

    mean: np.ndarray
    scale: np.ndarray
    linear: np.ndarray
    hidden: np.ndarray
    bias: np.ndarray
    out: np.ndarray
    _ARRAYS: ClassVar = ("mean", "scale", "linear", "hidden", "bias", "out")

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> Self:
        stored = read_weights(path, FEATURES)
        return cls(*(stored[k] for k in cls._ARRAYS))

    def save(self, path: Path = WEIGHTS) -> None:
        write_weights(path, FEATURES, {k: getattr(self, k) for k in self._ARRAYS})

    def score(self, rows: np.ndarray) -> np.ndarray:
        z = (rows - self.mean) / self.scale
        return z @ self.linear + np.tanh(z @ self.hidden + self.bias) @ self.out


class LearnedReranker:
    """Scores the first `depth` candidates by a `RerankModel` of their `features`; those below
    keep their order under the re-scored ones."""

    name = "learned"

    def __init__(self, depth: int, model: RerankModel | None = None):
        self._depth = depth
        self._model = model or RerankModel.load()

    def rerank(self, question: str, passages: list[Passage], corpus: Corpus) -> list[Passage]:
        if not passages:
            return []
        head, tail = passages[: self._depth], passages[self._depth :]
        query = corpus.embed_query(question)
        matches = corpus.match_scores([p["id"] for p in head], query, MODEL_DEPTH)
        idf = corpus.inverse_frequencies(tokenize(question))
        soft = soft_matches(*units(corpus, question, head))
        scores = self._model.score(features(question, passages, matches, idf, soft))
        rescored = sorted(
            (
                Passage(**{**p, "score": round(float(s), 6)})
                for p, s in zip(head, scores, strict=True)
            ),
            key=lambda p: -p["score"],
        )
        # The rest keep their order, below the lowest re-scored one.
        floor = rescored[-1]["score"]
        return rescored + [
            Passage(**{**p, "score": round(floor - n, 6)}) for n, p in enumerate(tail, start=1)
        ]
