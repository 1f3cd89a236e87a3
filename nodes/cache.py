"""cache_lookup: exact-match answers per tenant, stamped with the corpus version, absolute TTL."""

import asyncio
import hashlib
import json
import re
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.errors import StoreUnavailable
from graph.state import State


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


async def cache_key(deps: Deps, context: Context, question: str) -> str:
    """tenant + normalised question + corpus version + answer settings, hashed."""
    version = await asyncio.to_thread(deps.corpora.get(context.tenant).version)
    material = [
        context.tenant,
        normalize_question(question),
        version,
        answer_settings(deps, context),
    ]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def make_cache_lookup(deps: Deps):
    """The cache_lookup node. A store outage is a miss (marked degraded), never a failed run."""

    async def cache_lookup(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
        if not context.use_cache:
            return {"cache": {"hit": False, "kind": "disabled", "similarity": None}}
        try:
            hit = await deps.cache.get(await cache_key(deps, context, state["question"]))
        except StoreUnavailable as exc:
            return {
                "cache": {"hit": False, "kind": None, "similarity": None},
                "degraded": [*state.get("degraded", []), f"cache_unavailable: {exc}"],
            }
        if hit is None:
            return {"cache": {"hit": False, "kind": None, "similarity": None}}
        return {
            "cache": {"hit": True, "kind": "exact", "similarity": 1.0},
            "answer": hit["answer"],
            "citations": hit["citations"],
            "cached": True,
            "messages": [AIMessage(hit["answer"])],
        }

    return cache_lookup


async def store_answer(deps: Deps, context: Context, state: State, answer: dict[str, Any]) -> None:
    """Writes a successful answer back; failures only cost the cache entry."""
    if not context.use_cache:
        return
    try:
        key = await cache_key(deps, context, state["question"])
        await deps.cache.put(key, answer, deps.settings.cache_ttl_s)
    except StoreUnavailable:
        pass
