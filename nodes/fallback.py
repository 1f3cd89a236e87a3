"""fallback: the next provider in the chain, else an extractive answer with citations, else an
honest "not found". It always records why in `degraded` and `fallback`."""

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.errors import ProviderError
from graph.prompts import NOT_FOUND
from graph.state import State
from nodes.citations import check_citations
from nodes.extractive import extractive_answer
from nodes.generate import blocked_by_passages, build_prompt, model_name, stream_chat
from nodes.output_guard import StreamRedactor, merge_counts, redact_citations, screen_passages


def make_fallback(deps: Deps):
    """The fallback node."""

    async def fallback(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
        degraded = list(state.get("degraded", []))
        reason = degraded[-1] if degraded else "no_passages"
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
        if reason.startswith("generate") and passages:
            for model in deps.chat_models[1:]:
                guard = StreamRedactor(deps.redactor)
                try:
                    history = state["messages"][:-1][-2 * context.history_turns :]
                    answer, usage = await stream_chat(
                        model,
                        build_prompt(question, passages, history),
                        runtime,
                        "fallback",
                        guard,
                    )
                except ProviderError as exc:
                    degraded.append(f"fallback {model_name(model)}: {exc}")
                    continue
                checked = check_citations(answer, passages)
                citations, snippet_counts = redact_citations(deps.redactor, checked.citations)
                return {
                    **screened,
                    "answer": checked.answer,
                    "citations": citations,
                    "usage": usage,
                    "model": model_name(model),
                    "degraded": [*degraded, *checked.degraded],
                    "fallback": {"reason": reason, "mode": "provider"},
                    "output_redactions": merge_counts(guard.counts, snippet_counts),
                    "messages": [AIMessage(checked.answer)],
                }
        extract = await extractive_answer(
            deps, deps.corpora.get(context.tenant), question, passages
        )
        redactions: dict[str, int] = {}
        if extract is not None:
            for sentence, n in extract.sentences:
                runtime.stream_writer({"token": f"{sentence} [{n}] ", "node": "fallback"})
            answer, citations, mode = extract.text, extract.citations, "extractive"
            redactions = extract.redactions
        else:
            runtime.stream_writer({"token": NOT_FOUND, "node": "fallback"})
            answer, citations, mode = NOT_FOUND, [], "not_found"
        if not degraded:
            degraded.append(reason)
        return {
            **screened,
            "answer": answer,
            "citations": citations,
            "model": "extractive",
            "degraded": degraded,
            "fallback": {"reason": reason, "mode": mode},
            "output_redactions": redactions,
            "messages": [AIMessage(answer)],
        }

    return fallback
