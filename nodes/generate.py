"""generate: an OpenAI-compatible chat model that streams tokens and cites passages as [n];
with no model configured, the extractive answerer (sentence by sentence), or an honest "not
found" when no sentence is relevant."""

import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.errors import ProviderError
from graph.prompts import (
    FOLLOWED_REFUSAL,
    NOT_FOUND,
    PASSAGE_REFUSAL,
    PASSAGES_TEMPLATE,
    SYSTEM_PROMPT,
)
from graph.state import Citation, Passage, State
from integrations import metrics
from integrations.llm import model_name
from nodes.cache import store_answer
from nodes.citations import answer_message, check_citations
from nodes.extractive import OnSentence, extractive_answer
from nodes.output_guard import (
    PassageScreen,
    StreamRedactor,
    instruction_targets,
    merge_counts,
    redact_citations,
    screen_passages,
)

# A passage cannot close the fence it is quoted in, nor open a turn of its own.
_FENCE = re.compile(r"<\s*/?\s*passages\s*>|<\|im_(start|end)\|>", re.IGNORECASE)


def quoted(text: str) -> str:
    """A passage's text as data: fence tags and chat-turn markers inside it are defused."""
    return _FENCE.sub(lambda m: m.group(0).replace("<", "[").replace(">", "]"), text)


def earlier_turns(state: State, turns: int) -> list[AnyMessage]:
    """The last `turns` question-answer pairs before the current question (none for 0)."""
    before = state["messages"][:-1]
    return before[max(0, len(before) - 2 * turns) :]


def build_prompt(
    question: str,
    passages: list[Passage],
    history: list[AnyMessage],
    budget_tokens: int | None = None,
) -> list[BaseMessage]:
    """System rules, earlier turns, then the passages fenced as data and the question.

    With `budget_tokens`, the lowest-ranked passages (then the oldest turns) are left out until
    the prompt's estimated size fits: the model never sees a context it cannot hold."""
    while True:
        numbered = "\n\n".join(
            f"[{n}] ({' — '.join(x for x in (p['source'], p['title'], p.get('section')) if x)})"
            f"\n{quoted(p['text'])}"
            for n, p in enumerate(passages, start=1)
        )
        prompt: list[BaseMessage] = [
            SystemMessage(SYSTEM_PROMPT),
            *history,
            HumanMessage(PASSAGES_TEMPLATE.format(passages=numbered, question=question)),
        ]
        if budget_tokens is None or estimate_tokens(prompt) <= budget_tokens:
            return prompt
        if len(passages) > 1:
            passages = passages[:-1]
        elif history:
            history = history[1:]
        elif passages:
            passages = [
                {**passages[0], "text": passages[0]["text"][: len(passages[0]["text"]) // 2]}
            ]
        else:
            return prompt


def estimate_tokens(messages: list[BaseMessage]) -> int:
    """A deliberately high estimate of a prompt's tokens (UTF-8 bytes / 3, plus per-message
    overhead): BPE tokenizers average about 4 bytes a token on English text."""
    return sum(len(str(m.content).encode()) // 3 + 8 for m in messages)


def prompt_budget(deps: Deps) -> int:
    """Tokens a prompt may take: the model's window minus the reserved answer."""
    return deps.settings.llm_context_window - deps.settings.llm_max_tokens


async def stream_chat(
    deps: Deps,
    model: BaseChatModel,
    prompt: list[BaseMessage],
    runtime: Runtime[Context],
    node: str,
    guard: StreamRedactor | None = None,
    continues: str = "",
    hedge: BaseChatModel | None = None,
) -> tuple[str, dict[str, int], BaseChatModel]:
    """Streams a model's answer as `token` events through the LLM chain's retries, timeouts and
    breakers, redacted by `guard` when given (the answer returned is then the redacted one).
    `continues` is text the client already has, which this answer continues (no double space);
    `hedge` may race a late first token. Returns the text, token usage and the model that
    answered.
    Raises `ProviderError` (its `partial` holds what the client has seen) on any failure."""
    parts: list[str] = []
    trim = [continues[-1:].isspace()]  # until the first text arrives

    def send(text: str) -> None:
        if trim[0]:
            text = text.lstrip()
            trim[0] = not text
        for piece in guard.feed(text) if guard else [text]:
            parts.append(piece)
            runtime.stream_writer({"token": piece, "node": node})

    context = run_context(runtime.context)
    try:
        usage, answered = await deps.llm.stream(model, prompt, send, context.deadline_at, hedge)
    except ProviderError as exc:
        exc.partial = "".join(parts)
        raise
    if guard:
        for piece in guard.flush():
            parts.append(piece)
            runtime.stream_writer({"token": piece, "node": node})
    return "".join(parts), usage, answered


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
        "messages": [answer_message(PASSAGE_REFUSAL, [])],
    }


def sentence_writer(runtime: Runtime[Context], node: str) -> OnSentence:
    """Streams each extractive sentence as one `token` event carrying the citation it adds."""

    def write(text: str, citation: Citation) -> None:
        runtime.stream_writer({"token": f"{text} ", "node": node, "citation": citation})

    return write


def not_found(runtime: Runtime[Context], node: str) -> dict[str, Any]:
    """The honest answer when the documents hold nothing relevant: not a failure (`found` is
    False, nothing is added to `degraded`)."""
    runtime.stream_writer({"token": NOT_FOUND, "node": node})
    return {
        "answer": NOT_FOUND,
        "citations": [],
        "found": False,
        "messages": [answer_message(NOT_FOUND, [])],
    }


def followed_instruction(state: State, screen: PassageScreen, runtime: Runtime[Context]):
    """The update that withholds an answer which did what a passage told it to (the stream was
    stopped before any of that text left)."""
    metrics.FOLLOWED_INSTRUCTIONS.inc()
    runtime.stream_writer({"token": FOLLOWED_REFUSAL, "node": "generate"})
    return {
        "passages": screen.passages,
        "injected_passages": screen.injected,
        "answer": FOLLOWED_REFUSAL,
        "citations": [],
        "model": None,
        "degraded": [*state.get("degraded", []), "injection_followed"],
        "messages": [answer_message(FOLLOWED_REFUSAL, [])],
    }


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
        if deps.llm.models:
            chain = deps.llm.chain_for(context.model)
            hedge = chain[1] if deps.settings.llm_hedge and len(chain) > 1 else None
            history = earlier_turns(state, context.history_turns)
            guard = StreamRedactor(deps.redactor, targets=instruction_targets(passages))
            prompt = build_prompt(question, passages, history, prompt_budget(deps))
            text, usage, model = await stream_chat(
                deps, chain[0], prompt, runtime, "generate", guard, hedge=hedge
            )
            if guard.followed:
                return followed_instruction(state, screen, runtime)
            checked = check_citations(text.strip(), passages)
            answer, flags = checked.answer, checked.degraded
            citations, snippet_counts = redact_citations(deps.redactor, checked.citations)
            redactions = merge_counts(guard.counts, snippet_counts)
            name = model_name(model)
        else:
            extract = await extractive_answer(
                deps, context, question, passages, sentence_writer(runtime, "generate")
            )
            if extract is None:  # nothing is cached: a later document may answer it
                return {**screened, **not_found(runtime, "generate"), "model": "extractive"}
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
            "messages": [answer_message(answer, citations)],
            "degraded": [*state.get("degraded", []), *flags],
        }

    return generate
