"""The extractive answerer, shared by generate (no model configured) and fallback: the sentences
of the ranked passages that best answer the question, each with its [n] citation."""

import asyncio
from dataclasses import dataclass

import numpy as np

from graph.deps import Deps
from graph.state import Citation, Passage

MIN_SIMILARITY = 0.3
MAX_SENTENCES = 3


@dataclass(frozen=True)
class ExtractiveAnswer:
    """Sentences with their passage numbers (1-based)."""

    sentences: list[tuple[str, int]]
    citations: list[Citation]

    @property
    def text(self) -> str:
        return " ".join(f"{sentence} [{n}]" for sentence, n in self.sentences)


def _select(deps: Deps, question: str, passages: list[Passage]) -> ExtractiveAnswer | None:
    query = deps.corpus.embed_query(question)
    stored = deps.corpus.sentence_vectors([p["id"] for p in passages])
    scored: list[tuple[float, int, int, str]] = []
    for n, passage in enumerate(passages, start=1):
        sentences, vectors = stored.get(passage["id"], ([], np.zeros((0, query.size))))
        for position, (sentence, sim) in enumerate(zip(sentences, vectors @ query, strict=True)):
            scored.append((float(sim), n, position, sentence))
    best = sorted((s for s in scored if s[0] >= MIN_SIMILARITY), reverse=True)[:MAX_SENTENCES]
    if not best:
        return None
    # Present in reading order within a passage, passages in rank order.
    best.sort(key=lambda s: (s[1], s[2]))
    citations: dict[int, Citation] = {}
    for _, n, _, sentence in best:
        p = passages[n - 1]
        citations.setdefault(
            n, Citation(n=n, id=p["id"], source=p["source"], snippet=sentence[:300])
        )
    return ExtractiveAnswer([(s, n) for _, n, _, s in best], list(citations.values()))


async def extractive_answer(
    deps: Deps, question: str, passages: list[Passage]
) -> ExtractiveAnswer | None:
    """The best sentences (similarity at or above `MIN_SIMILARITY`), or None when none is."""
    if not passages:
        return None
    return await asyncio.to_thread(_select, deps, question, passages)
