"""cache_lookup: answers per tenant, stamped with the corpus version, absolute TTL.

An exact match (normalised text) is tried first, then the nearest earlier questions of the same
scope (tenant, corpus version, answer settings) by embedding, each checked by the false-hit
guard. Keys and stored questions are the guard node's redacted text."""

import asyncio
import hashlib
import json
import re
from typing import Any

import numpy as np
from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.errors import StoreUnavailable
from graph.state import CacheVerdict, State
from integrations.hit_guard import refusal


def normalize_question(text: str) -> str:
    """Case, spacing and trailing punctuation do not make a different question."""
    return re.sub(r"\s+", " ", text).strip().lower().rstrip("?!. ")


def answer_settings(deps: Deps, context: Context) -> dict[str, Any]:
    """The settings that change an answer; part of the cache key."""
    models = [getattr(m, "model_name", type(m).__name__) for m in deps.llm.models]
    return {
        "top_k": context.top_k,
        "rerank": context.rerank,
        "retrieval": context.retrieval,
        "model": context.model or models,
    }


def _digest(material: list[Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


async def cache_keys(deps: Deps, context: Context, question: str) -> tuple[str, str]:
    """The exact key (tenant + normalised question + corpus version + answer settings) and the
    semantic scope (the same without the question), hashed, from one corpus-version read."""
    version = await asyncio.to_thread(deps.corpora.get(context.tenant).version)
    scope = [context.tenant, version, answer_settings(deps, context)]
    return _digest([context.tenant, normalize_question(question), *scope[1:]]), _digest(scope)


async def question_vector(deps: Deps, context: Context, question: str) -> np.ndarray:
    """The question's embedding, computed once per run and kept in the run's memo (not in
    checkpointed state); after a resume the memo is empty and it is computed again."""
    memo_key = f"vector:{question}"
    vector: np.ndarray | None = context.memo.get(memo_key)
    if vector is None:
        corpus = deps.corpora.get(context.tenant)
        vector = await asyncio.to_thread(corpus.embed_query, question)
        context.memo[memo_key] = vector
    return vector


async def semantic_hit(
    deps: Deps, context: Context, question: str, scope: str
) -> tuple[dict[str, Any] | None, CacheVerdict]:
    """The nearest earlier question that is similar enough and passes the false-hit guard, and
    its answer; a verdict saying which candidate the guard turned down otherwise."""
    settings = deps.settings
    vector = await question_vector(deps, context, question)
    candidates = await deps.cache.similar(scope, vector, settings.cache_candidates)
    verdict: CacheVerdict = {"hit": False, "kind": None, "similarity": None}
    for candidate in candidates:
        reason = refusal(
            question,
            candidate.question,
            candidate.similarity,
            settings.cache_similarity,
            settings.cache_guard_rules,
        )
        if reason == "similarity":  # candidates come best first
            break
        if reason is not None:
            if "rejected" not in verdict:
                verdict["rejected"] = reason
                verdict["similarity"] = round(candidate.similarity, 4)
            continue
        answer = await deps.cache.get(candidate.key)
        if answer is not None:
            similarity = round(candidate.similarity, 4)
            return answer, {"hit": True, "kind": "semantic", "similarity": similarity}
    return None, verdict


def make_cache_lookup(deps: Deps):
    """The cache_lookup node. A store outage is a miss (marked degraded), never a failed run."""

    async def cache_lookup(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
        if not context.use_cache:
            return {"cache": {"hit": False, "kind": "disabled", "similarity": None}}
        question = state["question"]
        verdict: CacheVerdict = {"hit": True, "kind": "exact", "similarity": 1.0}
        try:
            key, scope = await cache_keys(deps, context, question)
            hit = await deps.cache.get(key)
            if hit is None and deps.settings.cache_semantic:
                hit, verdict = await semantic_hit(deps, context, question, scope)
        except StoreUnavailable as exc:
            return {
                "cache": {"hit": False, "kind": None, "similarity": None},
                "degraded": [*state.get("degraded", []), f"cache_unavailable: {exc}"],
            }
        if hit is None:
            if deps.settings.cache_semantic:
                return {"cache": verdict}
            return {"cache": {"hit": False, "kind": None, "similarity": None}}
        return {
            "cache": verdict,
            "answer": hit["answer"],
            "citations": hit["citations"],
            "cached": True,
            "messages": [AIMessage(hit["answer"])],
        }

    return cache_lookup


async def store_answer(deps: Deps, context: Context, state: State, answer: dict[str, Any]) -> None:
    """Writes a successful answer back, and its question for semantic lookups; failures only
    cost the cache entry. Callers never pass a degraded answer."""
    if not context.use_cache:
        return
    question, ttl = state["question"], deps.settings.cache_ttl_s
    try:
        key, scope = await cache_keys(deps, context, question)
        await deps.cache.put(key, answer, ttl)
        if deps.settings.cache_semantic:
            vector = await question_vector(deps, context, question)
            await deps.cache.add_question(scope, key, question, vector, ttl)
    except StoreUnavailable:
        pass
