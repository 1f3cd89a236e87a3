"""retrieve: hybrid first stage, dense (document heads in Chroma) + lexical (BM25 over chunks),
fused by normalised score (`convex_fusion`)."""

import asyncio
import time
from typing import Any

import numpy as np
from langgraph.runtime import Runtime

from corpus import Corpus
from graph.context import Context, run_context, time_left
from graph.deps import Deps
from graph.errors import StoreUnavailable
from graph.state import Passage, State
from integrations import tracing

# Score-based fusion beat rank fusion on SciFact train (see `convex_fusion`); the dense share:
DENSE_WEIGHT = 0.4
# A dense hit (a document) scores at most this many of its chunks beside those BM25 found.
DENSE_CHUNKS = 8
# Each list is normalised over its best this many (what a turn retrieves by default), however
# deep it goes: an eval's 100 candidates then rank as a turn's 40 do. Over whole lists of 100,
# SciFact train nDCG@10 among 67k distractor chunks fell to 0.712; over the best 40, 0.719.
FUSION_DEPTH = 40


def convex_fusion(
    scored: dict[str, list[tuple[str, float]]],
    weights: dict[str, float] | None = None,
    depth: int = FUSION_DEPTH,
) -> list[tuple[str, float]]:
    """Fuses scored lists (best first): each list's scores are min-max normalised to [0, 1]
    over its best `depth` (lower ones get 0), then summed with weights (an id a list did not
    return gets 0 from it; equal scores all get 1). Best first.

    Unlike rank fusion it keeps how far apart scores are: a clear BM25 winner stays ahead."""
    fused: dict[str, float] = {}
    for name, items in scored.items():
        if not items:
            continue
        weight = (weights or {}).get(name, 1.0)
        values = sorted((score for _, score in items), reverse=True)[:depth]
        low, span = values[-1], values[0] - values[-1]
        for item, score in items:
            # A list whose scores are all equal (e.g. a single hit) counts fully for each item.
            share = max(score - low, 0.0) / span if span > 0 else 1.0
            fused[item] = fused.get(item, 0.0) + weight * share
    return sorted(fused.items(), key=lambda kv: -kv[1])


def dense_chunks(
    documents: list[tuple[str, float, int]], lexical: list[tuple[str, float]]
) -> list[tuple[str, float]]:
    """Dense hits are documents (one head vector each, with their chunk counts): a document's
    score goes to its chunks, those BM25 found first, then its first `DENSE_CHUNKS` in order."""
    found: dict[str, list[str]] = {}
    for chunk_id, _ in lexical:
        found.setdefault(chunk_id.rsplit("#", 1)[0], []).append(chunk_id)
    out: list[tuple[str, float]] = []
    for doc_id, score, chunks in documents:
        first = (f"{doc_id}#{n}" for n in range(min(chunks, DENSE_CHUNKS)))
        out += [(chunk_id, score) for chunk_id in dict.fromkeys([*found.get(doc_id, []), *first])]
    return out


def first_stage(
    corpus: Corpus, question: str, vector: np.ndarray | None, candidates: int, mode: str
) -> list[Passage]:
    """The best `candidates` chunks for `question` by `mode` (dense, lexical or hybrid), with
    each list's rank and raw score. A store failure raises `StoreUnavailable`."""
    try:
        corpus.refresh()
        lexical = corpus.lexical_search(question, candidates) if mode != "dense" else []
        documents = corpus.dense_search(vector, candidates) if vector is not None else []
        dense = dense_chunks(documents, lexical)
        if mode == "hybrid":
            fused = convex_fusion(
                {"dense": dense, "lexical": lexical},
                {"dense": DENSE_WEIGHT, "lexical": 1.0 - DENSE_WEIGHT},
            )
        else:
            fused = dense if mode == "dense" else lexical
        top = fused[:candidates]
        stored = corpus.chunks([chunk_id for chunk_id, _ in top])
    except Exception as exc:
        raise StoreUnavailable(f"corpus: {exc}") from exc
    dense_rank = {c: n for n, (c, _) in enumerate(dense, start=1)}
    lexical_rank = {c: n for n, (c, _) in enumerate(lexical, start=1)}
    dense_score, lexical_score = dict(dense), dict(lexical)
    passages = []
    for chunk_id, score in top:
        chunk = stored.get(chunk_id)
        if chunk is None:  # deleted, or an interrupted ingestion's leftover in an index
            continue
        passages.append(
            Passage(
                id=chunk_id,
                doc_id=chunk.doc_id,
                source=chunk.source,
                title=chunk.title,
                section=chunk.section,
                text=chunk.text,
                score=round(score, 6),
                dense_rank=dense_rank.get(chunk_id),
                lexical_rank=lexical_rank.get(chunk_id),
                dense_score=dense_score.get(chunk_id),
                lexical_score=lexical_score.get(chunk_id),
            )
        )
    return passages


def make_retrieve(deps: Deps):
    """The retrieve node. A store failure raises `StoreUnavailable` (handled by fallback)."""

    async def retrieve(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
        question = state["question"]
        # The vector cache_lookup used, if any (started when the run was submitted).
        vector = (
            await deps.corpora.query_vector(question) if context.retrieval != "lexical" else None
        )
        collection = deps.settings.collection
        started = time.perf_counter()
        with tracing.span(
            f"retrieval {collection}",
            {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.data_source.id": collection,
                "gen_ai.retrieval.top_k": context.candidates,
                "keel.retrieval.mode": context.retrieval,
            },
        ) as span:
            passages = await asyncio.wait_for(
                asyncio.to_thread(
                    first_stage,
                    deps.corpora.get(context.tenant),
                    question,
                    vector,
                    context.candidates,
                    context.retrieval,
                ),
                time_left(context, deps.settings.run_deadline_s),
            )
            span.set_attribute("keel.retrieval.passages", len(passages))
        # A `custom` stream-mode event for Agent Server clients (see docs/api/langgraph.md).
        runtime.stream_writer(
            {
                "node": "retrieve",
                "event": "retrieved",
                "mode": context.retrieval,
                "candidates": len(passages),
                "dense": sum(p["dense_rank"] is not None for p in passages),
                "lexical": sum(p["lexical_rank"] is not None for p in passages),
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )
        return {"passages": passages}

    return retrieve
