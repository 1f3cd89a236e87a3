"""Second-stage rerankers. The slot is a protocol so that a cross-encoder can take it later.

The shipped one is learned: a linear model of five signals per candidate, fitted on SciFact's
training claims by `scripts/train_reranker.py` (listwise, 5-fold cross-validated inside train)
and loaded from `rerank_model.npz` with numpy."""

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, Self

import numpy as np

from corpus import Corpus
from corpus.lexical import tokenize
from graph.state import Passage

# Candidates whose best-sentence match is the model's cosine even when they have no stored
# sentence vectors yet (the rest: static vectors alone); it bounds the model calls a cold query
# costs. SciFact train nDCG@10, cold, re-scoring 20: 0.7255 with 10, 0.7269 with 20; among tiers
# 1-2 of the manuals, 0.7174 and 0.7213.
MODEL_DEPTH = 20
WEIGHTS: Final = Path(__file__).with_name("rerank_model.npz")
# What the model reads of a candidate, in column order (see `features`).
FEATURES: Final = ("fused", "lexical", "dense", "match", "coverage")


class Reranker(Protocol):
    """Re-scores first-stage candidates; returns them best first with `score` replaced."""

    name: str

    def rerank(self, question: str, passages: list[Passage], corpus: Corpus) -> list[Passage]:
        """`corpus` is the one the passages came from (a cross-encoder may ignore it)."""
        ...


def features(question: str, passages: list[Passage], matches: np.ndarray) -> np.ndarray:
    """One row of `FEATURES` per passage: its fused first-stage score, its BM25 score over the
    best of the list, its document head's cosine, its best sentence's match (`matches`, from
    `Corpus.match_scores`) and the share of the question's (stemmed) words its text contains."""
    asked = set(tokenize(question))
    lexical = np.array([p.get("lexical_score") or 0.0 for p in passages], dtype=np.float32)
    best_lexical = float(lexical.max(initial=0.0)) or 1.0
    rows = [
        (
            p["score"],
            lexical[n] / best_lexical,
            p.get("dense_score") or 0.0,
            float(matches[n]),
            len(asked.intersection(tokenize(f"{p['title']} {p['text']}"))) / len(asked)
            if asked
            else 0.0,
        )
        for n, p in enumerate(passages)
    ]
    return np.array(rows, dtype=np.float32).reshape(len(passages), len(FEATURES))


@dataclass(frozen=True)
class LinearModel:
    """score = ((x - mean) / scale) . weights: standardised features, one weight each."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> Self:
        with np.load(path) as stored:
            names = tuple(str(n) for n in stored["features"])
            if names != FEATURES:
                raise ValueError(f"{path} was trained on {names}, this keel reads {FEATURES}")
            return cls(stored["mean"], stored["scale"], stored["weights"])

    def save(self, path: Path = WEIGHTS) -> None:
        np.savez(
            path,
            features=np.array(FEATURES),
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            weights=self.weights.astype(np.float32),
        )

    def score(self, rows: np.ndarray) -> np.ndarray:
        return ((rows - self.mean) / self.scale) @ self.weights


class LearnedReranker:
    """Scores the first `depth` candidates by a `LinearModel` of their `features`; those below
    keep their order under the re-scored ones."""

    name = "learned"

    def __init__(self, depth: int, model: LinearModel | None = None):
        self._depth = depth
        self._model = model or LinearModel.load()

    def rerank(self, question: str, passages: list[Passage], corpus: Corpus) -> list[Passage]:
        if not passages:
            return []
        head, tail = passages[: self._depth], passages[self._depth :]
        query = corpus.embed_query(question)
        matches = corpus.match_scores([p["id"] for p in head], query, MODEL_DEPTH)
        scores = self._model.score(features(question, head, matches))
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
