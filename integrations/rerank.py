"""Second-stage rerankers. The slot is a protocol so that a cross-encoder can take it later."""

from typing import Protocol

import numpy as np

from corpus import Corpus
from graph.state import Passage

# Share of the best sentence's match in the blend (depth: how many candidates get it): on SciFact
# train (head vectors + BM25, score-fused) 0.7 beat 0.6 and 0.8, and depth 20 beat 10.
RERANK_WEIGHT = 0.7
# Candidates whose match includes the model's cosine (the rest: static vectors alone); it bounds
# the model calls a query costs when its candidates have no sentence vectors yet. SciFact train
# nDCG@10, cold: 0.725 with 5, 0.726 with 10, 0.727 with 15.
MODEL_DEPTH = 10


class Reranker(Protocol):
    """Re-scores first-stage candidates; returns them best first with `score` replaced."""

    name: str

    def rerank(self, question: str, passages: list[Passage], corpus: Corpus) -> list[Passage]:
        """`corpus` is the one the passages came from (a cross-encoder may ignore it)."""
        ...


class SentenceMaxSimReranker:
    """Late interaction at sentence level: a passage scores by its best-matching sentence
    (`Corpus.match_scores`: static vectors, and the model's for the first `MODEL_DEPTH`),
    blended with its first-stage score. Candidates below `depth` keep their order under the
    re-scored ones."""

    name = "sentence-maxsim"

    def __init__(self, depth: int, weight: float = RERANK_WEIGHT):
        self._weight = weight
        self._depth = depth

    def rerank(self, question: str, passages: list[Passage], corpus: Corpus) -> list[Passage]:
        if not passages:
            return []
        query = corpus.embed_query(question)
        matches = corpus.match_scores(
            [p["id"] for p in passages[: self._depth]], query, MODEL_DEPTH
        )
        first = np.array([p["score"] for p in passages], dtype=np.float32)
        span = float(first.max() - first.min()) or 1.0
        rescored = []
        for rank, (passage, prior) in enumerate(
            zip(passages, (first - first.min()) / span, strict=True)
        ):
            best = float(matches[rank]) if rank < self._depth else 0.0
            score = self._weight * best + (1 - self._weight) * float(prior)
            rescored.append(Passage(**{**passage, "score": round(score, 6)}))
        rescored.sort(key=lambda p: -p["score"])
        return rescored
