"""generate: an OpenAI-compatible chat model that streams tokens and cites passages as [n];
with no model configured, the extractive answerer."""

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.errors import ProviderError
from graph.prompts import PASSAGE_REFUSAL, PASSAGES_TEMPLATE, SYSTEM_PROMPT
from graph.state import Passage, State
from nodes.cache import store_answer
from nodes.citations import check_citations
from nodes.extractive import extractive_answer
from nodes.output_guard import (
    PassageScreen,
    StreamRedactor,
    merge_counts,
    redact_citations,
    screen_passages,
)


def build_prompt(
    question: str, passages: list[Passage], history: list[AnyMessage]
) -> list[BaseMessage]:
    """System rules, earlier turns, then the passages fenced as data and the question."""
    numbered = "\n\n".join(
        f"[{n}] ({p['source']}{' — ' + p['title'] if p['title'] else ''})\n{p['text']}"
        for n, p in enumerate(passages, start=1)
    )
    return [
        SystemMessage(SYSTEM_PROMPT),
        *history,
        HumanMessage(PASSAGES_TEMPLATE.format(passages=numbered, question=question)),
    ]


async def stream_chat(
    model: BaseChatModel,
    prompt: list[BaseMessage],
    runtime: Runtime[Context],
    node: str,
    guard: StreamRedactor | None = None,
) -> tuple[str, dict[str, int]]:
    """Streams a model's answer as `token` events, redacted by `guard` when given (the answer
    returned is then the redacted one); raises `ProviderError` on any failure."""
    parts: list[str] = []
    usage = {"input_tokens": 0, "output_tokens": 0}

    def send(pieces: list[str]) -> None:
        for piece in pieces:
            parts.append(piece)
            runtime.stream_writer({"token": piece, "node": node})

    try:
        async for chunk in model.astream(prompt):
            if chunk.text:
                send(guard.feed(chunk.text) if guard else [chunk.text])
            if chunk.usage_metadata:
                usage["input_tokens"] += chunk.usage_metadata.get("input_tokens", 0)
                usage["output_tokens"] += chunk.usage_metadata.get("output_tokens", 0)
    except Exception as exc:
        raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
    if guard:
        send(guard.flush())
    answer = "".join(parts).strip()
    if not answer:
        raise ProviderError("the model returned an empty answer")
    return answer, usage


def blocked_by_passages(screen: PassageScreen, state: State, runtime: Runtime[Context], node: str):
    """The update that refuses to answer from passages that try to instruct the model."""
    runtime.stream_writer({"token": PASSAGE_REFUSAL, "node": node})
    return {
        "answer": PASSAGE_REFUSAL,
        "citations": [],
        "passages": [],
        "model": None,
        "degraded": [*state.get("degraded", []), "injection_in_passages"],
        "injected_passages": screen.injected,
        "messages": [AIMessage(PASSAGE_REFUSAL)],
    }


def model_name(model: BaseChatModel) -> str:
    """A model's name for summaries and cache keys."""
    return str(
        getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
    )


def make_generate(deps: Deps):
    """The generate node. Provider errors propagate to the builder's handler (-> fallback)."""

    async def generate(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = run_context(runtime.context)
        screen = screen_passages(
            state.get("passages", []), deps.settings.guard_passage_policy, context.top_k
        )
        if screen.blocked:
            return blocked_by_passages(screen, state, runtime, "generate")
        screened = {"passages": screen.passages, "injected_passages": screen.injected}
        passages = screen.passages[: context.top_k]
        question = state["question"]
        flags: list[str] = []
        if deps.chat_models:
            model = deps.chat_models[0]
            history = state["messages"][:-1][-2 * context.history_turns :]
            guard = StreamRedactor(deps.redactor)
            answer, usage = await stream_chat(
                model, build_prompt(question, passages, history), runtime, "generate", guard
            )
            checked = check_citations(answer, passages)
            answer, flags = checked.answer, checked.degraded
            citations, snippet_counts = redact_citations(deps.redactor, checked.citations)
            redactions = merge_counts(guard.counts, snippet_counts)
            name = model_name(model)
        else:
            extract = await extractive_answer(
                deps, deps.corpora.get(context.tenant), question, passages
            )
            if extract is None:
                return {
                    **screened,
                    "degraded": [*state.get("degraded", []), "no_relevant_passage"],
                }
            for sentence, n in extract.sentences:
                runtime.stream_writer({"token": f"{sentence} [{n}] ", "node": "generate"})
            answer, citations, name = extract.text, extract.citations, "extractive"
            redactions = extract.redactions
            usage = {"input_tokens": 0, "output_tokens": 0}
        if not state.get("degraded"):
            await store_answer(deps, context, state, {"answer": answer, "citations": citations})
        return {
            **screened,
            "answer": answer,
            "citations": citations,
            "usage": usage,
            "model": name,
            "output_redactions": redactions,
            "messages": [AIMessage(answer)],
            "degraded": [*state.get("degraded", []), *flags],
        }

    return generate
