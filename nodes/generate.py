"""generate: an OpenAI-compatible chat model that streams tokens and cites passages as [n];
with no model configured, the extractive answerer (sentence by sentence), or an honest "not
found" when no sentence is relevant."""

import asyncio
import re
from typing import Any

import numpy as np
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
from integrations.text import split_sentences
from nodes.cache import store_answer
from nodes.citations import answer_message, check_citations
from nodes.extractive import OnSentence, extractive_answer
from nodes.grounding import Evidence, GroundingGate
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


def grounding_gate(deps: Deps, context: Context, passages: list[Passage]) -> GroundingGate | None:
    """A gate judging a streamed answer against `passages` (`nodes.grounding`), None with
    `KEEL_GROUNDING_CHECK` off; their sentence vectors are read (or embedded and stored) while
    the model starts."""
    if not deps.settings.grounding_check:
        return None
    corpus = deps.corpora.get(context.tenant)
    ids = [p["id"] for p in passages]

    def embed(texts: list[str]) -> np.ndarray:
        return np.vstack([corpus.embed_query(text) for text in texts])

    def evidence() -> Evidence:
        found = corpus.sentence_vectors(ids)
        out: list[tuple[list[str], np.ndarray]] = []
        for p in passages:
            if p["id"] in found:
                out.append(found[p["id"]])
            else:  # not in the store (yet): judged by its own text
                sentences = split_sentences(p["text"])
                out.append((sentences, embed(sentences) if sentences else np.zeros((0, 1))))
        return out

    return GroundingGate(embed, asyncio.ensure_future(asyncio.to_thread(evidence)))


async def stream_chat(
    deps: Deps,
    model: BaseChatModel,
    prompt: list[BaseMessage],
    runtime: Runtime[Context],
    node: str,
    guard: StreamRedactor | None = None,
    continues: str = "",
    hedge: BaseChatModel | None = None,
    gate: GroundingGate | None = None,
) -> tuple[str, dict[str, int], BaseChatModel]:
    """Streams a model's answer as `token` events through the LLM chain's retries, timeouts and
    breakers, redacted by `guard` and held back by `gate` until judged grounded when given (the
    answer returned is then what left: redacted, and only the grounded part).
    `continues` is text the client already has, which this answer continues (no double space);
    `hedge` may race a late first token. Returns the text, token usage and the model that
    answered.
    Raises `ProviderError` (its `partial` holds what the client has seen) on any failure."""
    parts: list[str] = []
    trim = [continues[-1:].isspace()]  # until the first text arrives

    def emit(piece: str) -> None:
        parts.append(piece)
        runtime.stream_writer({"token": piece, "node": node})

    def release(pieces: list[str]) -> None:
        for piece in pieces:
            gate.feed(piece) if gate else emit(piece)

    def send(text: str) -> None:
        if trim[0]:
            text = text.lstrip()
            trim[0] = not text
        release(guard.feed(text) if guard else [text])

    context = run_context(runtime.context)
    drain = asyncio.ensure_future(gate.run(emit)) if gate else None
    try:
        # A stopped answer is replaced whole: reading on would only keep the model busy.
        stopped = (lambda: gate.failed) if gate else None
        usage, answered = await deps.llm.stream(
            model, prompt, send, context.deadline_at, hedge, stopped
        )
        if guard:
            release(guard.flush())
        if gate and drain:
            gate.close()
            await drain
    except ProviderError as exc:
        exc.partial = "".join(parts)  # what is held back never leaves
        raise
    finally:
        if drain and not drain.done():
            drain.cancel()
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


def sentence_writer(runtime: Runtime[Context], node: str, replace: bool = False) -> OnSentence:
    """Streams each extractive sentence as one `token` event carrying the citation it adds;
    with `replace`, the first one also carries `replace: true` (the client drops the text it
    has of this answer)."""
    first = [replace]

    def write(text: str, citation: Citation) -> None:
        event = {"token": f"{text} ", "node": node, "citation": citation}
        runtime.stream_writer({**event, "replace": True} if first[0] else event)
        first[0] = False

    return write


def not_found(runtime: Runtime[Context], node: str, replace: bool = False) -> dict[str, Any]:
    """The honest answer when the documents hold nothing relevant: not a failure (`found` is
    False, nothing is added to `degraded`); `replace` as in `sentence_writer`."""
    event = {"token": NOT_FOUND, "node": node}
    runtime.stream_writer({**event, "replace": True} if replace else event)
    return {
        "answer": NOT_FOUND,
        "citations": [],
        "found": False,
        "messages": [answer_message(NOT_FOUND, [])],
    }


async def ungrounded(
    deps: Deps,
    context: Context,
    state: State,
    passages: list[Passage],
    gate: GroundingGate,
    runtime: Runtime[Context],
    node: str,
    replace: bool,
) -> dict[str, Any]:
    """The update that replaces a generated answer the grounding gate stopped: the extractive
    answer, else "not found", with `ungrounded_answer: <why>` in `degraded`. With `replace` (the
    client has text of the answer already), its first token carries `replace: true`."""
    metrics.UNGROUNDED_ANSWERS.inc()
    extract = await extractive_answer(
        deps, context, state["question"], passages, sentence_writer(runtime, node, replace)
    )
    update = (
        not_found(runtime, node, replace)
        if extract is None
        else {
            "answer": extract.text,
            "citations": extract.citations,
            "output_redactions": extract.redactions,
            "messages": [answer_message(extract.text, extract.citations)],
        }
    )
    return {
        **update,
        "model": "extractive",
        "degraded": [*state.get("degraded", []), f"ungrounded_answer: {gate.reason}"],
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
            gate = grounding_gate(deps, context, passages)
            prompt = build_prompt(question, passages, history, prompt_budget(deps))
            text, usage, model = await stream_chat(
                deps, chain[0], prompt, runtime, "generate", guard, hedge=hedge, gate=gate
            )
            if guard.followed:
                return followed_instruction(state, screen, runtime)
            if gate and gate.failed:
                return {
                    **screened,
                    **await ungrounded(
                        deps,
                        context,
                        state,
                        passages,
                        gate,
                        runtime,
                        "generate",
                        bool(gate.released),
                    ),
                    "usage": usage,
                }
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
