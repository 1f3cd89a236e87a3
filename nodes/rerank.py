"""rerank: a second, more expensive scoring of the fused candidates through the `Reranker` slot."""

import asyncio
import time
from typing import Any

from langgraph.runtime import Runtime

from graph.context import Context, run_context, time_left
from graph.deps import Deps
from graph.state import State
from integrations import tracing


def make_rerank(deps: Deps):
    """The rerank node; the builder gives it a time budget and skips it (degraded) on failure."""

    async def rerank(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
        if not context.rerank:
            return {}
        candidates = state.get("passages", [])
        reranker = type(deps.reranker).__name__
        started = time.perf_counter()
        with tracing.span(
            f"rerank {reranker}",
            {"keel.rerank.model": reranker, "keel.rerank.candidates": len(candidates)},
        ):
            # The node's own timeout is its budget; the run's deadline may cut it shorter.
            passages = await asyncio.wait_for(
                asyncio.to_thread(
                    deps.reranker.rerank,
                    state["question"],
                    candidates,
                    deps.corpora.get(context.tenant),
                ),
                time_left(context, deps.settings.rerank_timeout_s),
            )
        # A `custom` stream-mode event for Agent Server clients (see docs/api/langgraph.md).
        runtime.stream_writer(
            {
                "node": "rerank",
                "event": "reranked",
                "reranker": reranker,
                "candidates": len(candidates),
                "top_ids": [p["id"] for p in passages[: context.top_k]],
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )
        return {"passages": passages}

    return rerank
