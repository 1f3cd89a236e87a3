"""guard: redacts PII from the user's message before anything stores it; detects injection."""

import re
import uuid
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.runtime import Runtime

from graph.context import Context, run_context
from graph.deps import Deps
from graph.prompts import REFUSAL
from graph.state import State

# Direct prompt-injection and system-prompt exfiltration, as configurable rules (name, pattern).
INJECTION_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        (
            "override",
            r"\b(ignore|disregard|forget|override)\b.{0,40}"
            r"\b(previous|prior|above|earlier|all|your)\b.{0,30}"
            r"\b(instructions?|rules|prompts?|guidelines|directions)",
        ),
        (
            "exfiltrate",
            r"\b(reveal|show|print|repeat|output|tell me|what is|what are)\b.{0,40}"
            r"\b(system|hidden|initial|original)\s+(prompt|instructions?|message)",
        ),
        (
            "role_hijack",
            r"\b(you are now|act as|pretend to be|from now on you)\b.{0,40}"
            r"\b(dan|jailbr\w+|unfiltered|unrestricted|no (rules|restrictions|limits))",
        ),
        ("delimiter", r"(</?\s*(system|assistant)\s*>|\[/?(INST|SYS)\]|<\|im_start\|>)"),
    )
)


def detect_injection(text: str) -> str | None:
    """The name of the first injection rule the text matches, if any."""
    for name, pattern in INJECTION_RULES:
        if pattern.search(text):
            return name
    return None


def _incoming(state: State, context: Context) -> tuple[str, str]:
    """The raw user text and the id its message gets (Studio passes it in `messages`)."""
    if context.user_message is not None:
        return context.user_message, str(uuid.uuid4())
    last = state["messages"][-1] if state.get("messages") else None
    if not isinstance(last, HumanMessage):
        return "", str(uuid.uuid4())
    return last.text, last.id or str(uuid.uuid4())


def make_guard(deps: Deps):
    """The guard node: redact, detect injection, block per policy, reset per-turn fields."""

    async def guard(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        raw, message_id = _incoming(state, run_context(runtime.context))
        redaction = deps.redactor.redact(raw)
        rule = detect_injection(redaction.text)
        blocked = rule is not None and deps.settings.guard_policy == "block"
        if not redaction.text.strip():
            blocked, rule = True, "empty"
        update: dict[str, Any] = {
            "messages": [HumanMessage(redaction.text, id=message_id)],
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
            "degraded": [],
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "model": None,
            "fallback": None,
        }
        if blocked:
            update["answer"] = REFUSAL
            update["messages"].append(AIMessage(REFUSAL))
        return update

    return guard
