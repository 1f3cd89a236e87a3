"""fallback: the next provider in the chain, else (the LLM down, nothing sent yet) the cached
answer to a near question, else an extractive answer with citations, else an honest "not found".
It always records why in `degraded` and `fallback`."""

import time
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.errors import ProviderError, StoreUnavailable
from graph.state import State
from integrations.llm import model_name
from nodes.cache import near_answer
from nodes.citations import answer_message, check_citations
from nodes.extractive import extractive_answer
from nodes.generate import (
    blocked_by_passages,
    build_prompt,
    earlier_turns,
    grounding_gate,
    not_found,
    prompt_budget,
    sentence_writer,
    stream_chat,
    ungrounded,
)
from nodes.output_guard import StreamRedactor, merge_counts, redact_citations, screen_passages


def make_fallback(deps: Deps):
    """The fallback node."""

    async def fallback(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
        degraded = list(state.get("degraded", []))
        reason = degraded[-1] if degraded else "no_passages"
        if reason.startswith("retrieve:"):
            # The last rung: with no documents there is nothing grounded to answer from.
            raise StoreUnavailable(f"retrieval is unavailable ({reason}); retry later")
        # Screened again: generate's own screening is lost with its update when it fails.
        screen = screen_passages(
            state.get("passages", []), deps.settings.guard_passage_policy, context.top_k
        )
        if screen.blocked:
            update = blocked_by_passages(screen, state, runtime, "fallback")
            return {**update, "fallback": {"reason": reason, "mode": "blocked"}}
        screened = {"passages": screen.passages, "injected_passages": screen.injected}
        passages = screen.passages[: context.top_k]
        question = state["question"]
        partial = state.get("partial_answer", "")
        out_of_time = context.deadline_at is not None and time.time() >= context.deadline_at
        if reason.startswith("generate") and passages and not out_of_time:
            history = earlier_turns(state, context.history_turns)
            prompt = build_prompt(question, passages, history, prompt_budget(deps))
            if partial:  # continue what the client has seen, on one next model at most
                prompt = [*prompt, AIMessage(partial)]
            for model in deps.llm.chain_for(context.model)[1 : 2 if partial else None]:
                guard = StreamRedactor(deps.redactor)
                gate = grounding_gate(deps, context, passages)
                try:
                    text, usage, _ = await stream_chat(
                        deps, model, prompt, runtime, "fallback", guard, partial, gate=gate
                    )
                except ProviderError as exc:
                    degraded.append(f"fallback {model_name(model)}: {exc}")
                    continue
                if gate and gate.failed:
                    shown = bool(partial or gate.released)
                    update = await ungrounded(
                        deps,
                        context,
                        {**state, "degraded": degraded},
                        passages,
                        gate,
                        runtime,
                        "fallback",
                        shown,
                    )
                    mode = "not_found" if update.get("found") is False else "extractive"
                    return {
                        **screened,
                        **update,
                        "usage": usage,
                        "fallback": {"reason": reason, "mode": mode},
                    }
                checked = check_citations((partial + text).strip(), passages)
                citations, snippet_counts = redact_citations(deps.redactor, checked.citations)
                return {
                    **screened,
                    "answer": checked.answer,
                    "citations": citations,
                    "usage": usage,
                    "model": model_name(model),
                    "degraded": [*degraded, *checked.degraded],
                    "fallback": {"reason": reason, "mode": "continued" if partial else "provider"},
                    "output_redactions": merge_counts(guard.counts, snippet_counts),
                    "messages": [answer_message(checked.answer, citations)],
                }
        if reason.startswith("generate") and not partial:
            # The LLM is unavailable and the client has seen no text: the "cached" rung.
            near = await near_answer(deps, context, question, passages)
            if near is not None:
                hit, verdict = near
                return {
                    **screened,
                    "answer": hit["answer"],
                    "citations": hit["citations"],
                    "cached": True,
                    "cache": verdict,
                    "model": None,
                    "degraded": [*degraded, f"cached_answer: similarity {verdict['similarity']}"],
                    "fallback": {
                        "reason": reason,
                        "mode": "cached",
                        "similarity": verdict["similarity"],
                    },
                    "messages": [answer_message(hit["answer"], hit["citations"])],
                }
        extract = await extractive_answer(
            deps, context, question, passages, sentence_writer(runtime, "fallback")
        )
        if extract is None:
            update = not_found(runtime, "fallback")
            mode = "not_found"
        else:
            update = {
                "answer": extract.text,
                "citations": extract.citations,
                "output_redactions": extract.redactions,
                "messages": [answer_message(extract.text, extract.citations)],
            }
            mode = "extractive"
        return {
            **screened,
            **update,
            "model": "extractive",
            # Nothing retrieved is no failure: `degraded` names failures only.
            "degraded": degraded,
            "fallback": {"reason": reason, "mode": mode},
        }

    return fallback
