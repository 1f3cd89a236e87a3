"""Second-stage rerankers. The slot is a protocol so that a cross-encoder can take it later.

The shipped one is learned: a small network over nineteen signals per candidate that the
first stage, BM25's statistics, MiniLM and its static vectors give, fitted on SciFact's training
claims by `scripts/train_reranker.py` (listwise, 5-fold cross-validated inside train) and loaded
from `rerank_model.npz` with numpy."""

import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final, Protocol, Self

import numpy as np

from corpus import Corpus
from corpus.lexical import tokenize
from corpus.sentences import Matches
from graph.state import Passage

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
)
# A list that missed the candidate ranks it here (and no deeper): an eval's lists are longer
# than a turn's, and SciFact train nDCG@10 lost 0.002 with ranks cut at a turn's 41.
RANK_CAP = 200
# Chunks of one document are counted among this many candidates (a turn retrieves 40).
DOCUMENT_WINDOW = 40
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


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


def features(
    question: str, passages: list[Passage], matches: Matches, idf: dict[str, float]
) -> np.ndarray:
    """One row of `FEATURES` for each of the first `len(matches.model)` passages: its fused
    first-stage score, its BM25 score over the best of those, its document head's cosine, its
    sentences' matches (`matches`, from `Corpus.match_scores`: the best model cosine, the best
    two static cosines), the share of the question's (stemmed) words its text contains (plain,
    weighted by `idf`, of the title alone, of consecutive pairs, of numbers), its ranks in the
    lexical, dense and fused lists, whether it opens its document, its length, the best
    sentence's share of the question's words (plain and by `idf`) and how many of the first
    `DOCUMENT_WINDOW` candidates share its document."""
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
    return np.array(rows, dtype=np.float32).reshape(len(passages), len(FEATURES))


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
        with np.load(path) as stored:
            names = tuple(str(n) for n in stored["features"])
            if names != FEATURES:
                raise ValueError(f"{path} was trained on {names}, this keel reads {FEATURES}")
            return cls(*(stored[k] for k in cls._ARRAYS))

    def save(self, path: Path = WEIGHTS) -> None:
        np.savez(
            path,
            features=np.array(FEATURES),
            **{k: getattr(self, k).astype(np.float32) for k in self._ARRAYS},
        )

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
        scores = self._model.score(features(question, passages, matches, idf))
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
