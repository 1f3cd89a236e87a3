"""guard: redacts PII from the user's message before anything stores it; detects injection."""

import uuid
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage
from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.prompts import REFUSAL
from graph.state import State
from nodes.injection_model import load_model
from nodes.injection_rules import detect_injection


async def screen_question(deps: Deps, text: str) -> str | None:
    """The rule the question matches, else "classifier" when the injection classifier flags it
    (on the question's vector, which retrieval shares), else None."""
    rule = detect_injection(text)
    if rule is not None or not text.strip():
        return rule
    vector = await deps.corpora.query_vector(text)
    return "classifier" if load_model().flags(text, vector) else None


def _incoming(state: State, context: Context) -> tuple[str, str]:
    """The raw user text and the id its message gets (Studio passes it in `messages`)."""
    if context.user_message is not None:
        return context.user_message, str(uuid.uuid4())
    last = state["messages"][-1] if state.get("messages") else None
    if not isinstance(last, HumanMessage):
        return "", str(uuid.uuid4())
    return last.text, last.id or str(uuid.uuid4())


def _trimmed(state: State, keep: int) -> list[RemoveMessage]:
    """Drops the oldest messages so that the thread holds `keep` after this turn's answer."""
    history = state.get("messages", [])
    if not keep:
        return []
    excess = len(history) + 2 - keep
    return [RemoveMessage(id=m.id) for m in history[:excess] if m.id] if excess > 0 else []


def make_guard(deps: Deps):
    """The guard node: redact, detect injection, block per policy, reset per-turn fields."""

    async def guard(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        raw, message_id = _incoming(state, run_context(runtime.context))
        redaction = deps.redactor.redact(raw)
        rule = await screen_question(deps, redaction.text)
        blocked = rule is not None and deps.settings.guard_policy == "block"
        if not redaction.text.strip():
            blocked, rule = True, "empty"
        update: dict[str, Any] = {
            "messages": [
                *_trimmed(state, deps.settings.history_max_messages),
                HumanMessage(redaction.text, id=message_id),
            ],
            "question": redaction.text,
            "guard": {
                "blocked": blocked,
                "reason": f"injection:{rule}" if rule and rule != "empty" else rule,
                "redactions": redaction.counts,
                "injection": rule not in (None, "empty"),
            },
            "cache": {"hit": False, "kind": None, "similarity": None},
            "passages": [],
            "answer": "",
            "citations": [],
            "cached": False,
            "found": True,
            "degraded": [],
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "model": None,
            "fallback": None,
            "injected_passages": [],
            "output_redactions": {},
            "partial_answer": "",
        }
        if blocked:
            update["answer"] = REFUSAL
            update["messages"].append(AIMessage(REFUSAL))
        return update

    return guard
