"""The extractive answerer, shared by generate (no model configured) and fallback: the sentences
of the ranked passages that best answer the question, each with its [n] citation."""

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from graph.deps import Deps
from graph.state import Citation, Passage
from integrations.corpus import Corpus

MIN_SIMILARITY = 0.3
MAX_SENTENCES = 3


@dataclass(frozen=True)
class ExtractiveAnswer:
    """Sentences with their passage numbers (1-based)."""

    sentences: list[tuple[str, int]]
    citations: list[Citation]
    redactions: dict[str, int] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(f"{sentence} [{n}]" for sentence, n in self.sentences)


def _select(
    deps: Deps, corpus: Corpus, question: str, passages: list[Passage]
) -> ExtractiveAnswer | None:
    query = corpus.embed_query(question)
    stored = corpus.sentence_vectors([p["id"] for p in passages])
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
    # The output guard: sentences leave redacted, as answer tokens and as citation snippets.
    counts: Counter[str] = Counter()
    chosen: list[tuple[str, int]] = []
    for _, n, _, sentence in best:
        redaction = deps.redactor.redact(sentence)
        counts.update(redaction.counts)
        chosen.append((redaction.text, n))
    citations: dict[int, Citation] = {}
    for sentence, n in chosen:
        p = passages[n - 1]
        citations.setdefault(
            n, Citation(n=n, id=p["id"], source=p["source"], snippet=sentence[:300])
        )
    return ExtractiveAnswer(chosen, list(citations.values()), dict(counts))


async def extractive_answer(
    deps: Deps, corpus: Corpus, question: str, passages: list[Passage]
) -> ExtractiveAnswer | None:
    """The best sentences (similarity at or above `MIN_SIMILARITY`), or None when none is."""
    if not passages:
        return None
    return await asyncio.to_thread(_select, deps, corpus, question, passages)
