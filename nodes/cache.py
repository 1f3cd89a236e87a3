"""cache_lookup: answers per tenant, stamped with the corpus version, absolute TTL.

An exact match (normalised text) is tried first, then the nearest earlier questions of the same
scope (tenant, corpus version, answer settings) by embedding, each checked by the false-hit
guard. Keys and stored questions are the guard node's redacted text."""

import asyncio
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.errors import StoreUnavailable
from graph.state import CacheVerdict, Passage, State
from integrations.hit_guard import refusal
from nodes.citations import answer_message


def normalize_question(text: str) -> str:
    """Case, spacing and trailing punctuation do not make a different question."""
    return re.sub(r"\s+", " ", text).strip().lower().rstrip("?!. ")


def answer_settings(deps: Deps, context: Context) -> dict[str, Any]:
    """The settings that change an answer (every knob but `use_cache`); part of the cache key."""
    models = [getattr(m, "model_name", type(m).__name__) for m in deps.llm.models]
    return {
        "top_k": context.top_k,
        "candidates": context.candidates,
        "history_turns": context.history_turns,
        "rerank": context.rerank,
        "retrieval": context.retrieval,
        "model": context.model or models,
    }


def _digest(material: list[Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


async def cache_keys(deps: Deps, context: Context, question: str) -> tuple[str, str]:
    """The exact key (tenant + normalised question + corpus version + answer settings) and the
    semantic scope (the same without the question), hashed, from one corpus-version read."""
    corpus = deps.corpora.get(context.tenant)
    version = corpus.fresh_version()
    if version is None:
        version = await asyncio.to_thread(corpus.version)
    scope = [context.tenant, version, answer_settings(deps, context)]
    return _digest([context.tenant, normalize_question(question), *scope[1:]]), _digest(scope)


async def semantic_hit(
    deps: Deps,
    context: Context,
    question: str,
    scope: str,
    floor: float,
    grounded: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[dict[str, Any] | None, CacheVerdict]:
    """The nearest earlier question at least `floor` similar that passes the false-hit guard
    (and whose answer `grounded` accepts, when given), and its answer; on a miss, a verdict
    saying which candidate the guard (or `grounded`: "ungrounded") turned down."""
    settings = deps.settings
    # The nearest questions are searched once per run: the fallback's looser pass reuses them.
    memo_key = f"candidates:{scope}:{question}"
    candidates = context.memo.get(memo_key)
    if candidates is None:
        vector = await deps.corpora.query_vector(question)
        candidates = await deps.cache.similar(scope, vector, settings.cache_candidates)
        context.memo[memo_key] = candidates
    verdict: CacheVerdict = {"hit": False, "kind": None, "similarity": None}
    for candidate in candidates:
        similarity = round(candidate.similarity, 4)
        reason = refusal(
            question,
            candidate.question,
            candidate.similarity,
            floor,
            settings.cache_guard_rules,
            min(floor, settings.cache_same_words_similarity),
        )
        if reason == "similarity":  # candidates come best first
            break
        answer = await deps.cache.get(candidate.key) if reason is None else None
        if answer is not None and grounded is not None and not grounded(answer):
            answer, reason = None, "ungrounded"
        if answer is not None:
            return answer, {"hit": True, "kind": "semantic", "similarity": similarity}
        if reason is not None and "rejected" not in verdict:
            verdict["rejected"] = reason
            verdict["similarity"] = similarity
    return None, verdict


async def near_answer(
    deps: Deps, context: Context, question: str, passages: list[Passage]
) -> tuple[dict[str, Any], CacheVerdict] | None:
    """The degradation ladder's "cached" rung, tried only when the LLM is unavailable: the
    answer to an earlier question at least `cache_fallback_similarity` similar (looser than
    `cache_similarity`), still passing the false-hit guard, and citing at least one passage this
    run retrieved. Only undegraded answers are ever cached. None when there is none or the
    store is down."""
    if not (context.use_cache and deps.settings.cache_semantic):
        return None
    retrieved = {p["id"] for p in passages}

    def grounded(answer: dict[str, Any]) -> bool:
        return any(c.get("id") in retrieved for c in answer.get("citations", []))

    try:
        _, scope = await cache_keys(deps, context, question)
        floor = deps.settings.cache_fallback_similarity
        answer, verdict = await semantic_hit(deps, context, question, scope, floor, grounded)
    except StoreUnavailable:
        return None
    if answer is None:
        return None
    return answer, {"hit": True, "kind": "fallback", "similarity": verdict["similarity"]}


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
                floor = deps.settings.cache_similarity
                hit, verdict = await semantic_hit(deps, context, question, scope, floor)
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
            "messages": [answer_message(hit["answer"], hit["citations"])],
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
            vector = await deps.corpora.query_vector(question)
            await deps.cache.add_question(scope, key, question, vector, ttl)
    except StoreUnavailable:
        pass
