"""Per-run knobs, passed as LangGraph's `context_schema` and read through `Runtime`."""

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic.json_schema import SkipJsonSchema

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Context:
    """What a caller may tune for one run. Never checkpointed.

    The knobs: `top_k` passages cited, `candidates` retrieved for the reranker, `retrieval`
    picks the first stage (both retrievers fused, the default, or one alone), `use_cache`,
    `rerank`, `model` (one the server allows), `history_turns` earlier turns the answer sees.
    The server sets the fields its JSON schema skips (Studio and the SDKs see only the knobs):
    `tenant`; `user_message`, the raw user text, so that only the guard's redacted form is ever
    written to a checkpoint; `deadline_at`, the run's total deadline, shared by retrieve, rerank
    and generate; `memo`, per-run values nodes share without checkpointing them.
    """

    top_k: int = 5
    candidates: int = 40
    retrieval: Literal["hybrid", "dense", "lexical"] = "hybrid"
    use_cache: bool = True
    rerank: bool = True
    model: str | None = None
    history_turns: int = 4
    tenant: SkipJsonSchema[str] = DEFAULT_TENANT
    user_message: SkipJsonSchema[str | None] = None
    deadline_at: SkipJsonSchema[float | None] = None  # epoch seconds, set when the run starts
    # The cache candidates: lost on a resume after a crash, so a reader recomputes what it
    # does not find.
    memo: SkipJsonSchema[dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)


def time_left(context: Context, budget_s: float) -> float:
    """Seconds a step may take: its own budget, cut to what remains of the run's deadline."""
    if context.deadline_at is None:
        return budget_s
    return max(0.0, min(budget_s, context.deadline_at - time.time()))


def run_context(context: Context | dict | None) -> Context:
    """The run's Context; Studio and other callers may send none or a plain dict."""
    if context is None:
        return Context()
    if isinstance(context, dict):
        return Context(**context)
    return context
