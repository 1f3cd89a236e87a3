"""The graph's typed state, input and output schemas."""

from typing import Annotated, Any, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # pydantic derives JSON schemas from it on 3.11


class Passage(TypedDict):
    """One retrieved chunk with the scores each stage gave it."""

    id: str
    doc_id: str
    source: str
    title: str
    text: str
    score: float
    dense_rank: int | None
    lexical_rank: int | None
    # The first stage's raw scores (BM25; the document head's cosine), None where a list missed it.
    lexical_score: NotRequired[float | None]
    dense_score: NotRequired[float | None]
    # The chunk's heading path in its document ("" when none).
    section: NotRequired[str]


class Citation(TypedDict):
    """A passage the answer cites as [n]."""

    n: int
    id: str
    source: str
    snippet: str
    # The heading path of the cited chunk ("" when none); added when the run finishes.
    section: NotRequired[str]


class GuardVerdict(TypedDict):
    """What the guard saw in the user's message."""

    blocked: bool
    reason: str | None
    redactions: dict[str, int]
    injection: bool


class CacheVerdict(TypedDict):
    """Whether the answer came from the cache."""

    hit: bool
    # exact | semantic | fallback (a near question's, the LLM being down) | disabled | None (a miss)
    kind: str | None
    similarity: float | None
    # On a miss: the false-hit guard rule that turned down the nearest similar-enough question.
    rejected: NotRequired[str]


class Usage(TypedDict):
    """Tokens spent by the LLM in this turn."""

    input_tokens: int
    output_tokens: int


class InputState(TypedDict):
    """What starts a turn: new messages (the API passes the raw text through Context)."""

    messages: Annotated[list[AnyMessage], add_messages]


class OutputState(TypedDict):
    """What a turn returns."""

    answer: str
    citations: list[Citation]
    cached: bool
    # False when the documents held nothing relevant and the answer says so: not a failure.
    found: bool
    degraded: list[str]
    usage: Usage


class State(InputState):
    """The whole state of a thread. Per-turn fields are reset by the guard at each turn."""

    question: NotRequired[str]
    guard: NotRequired[GuardVerdict]
    cache: NotRequired[CacheVerdict]
    passages: NotRequired[list[Passage]]
    answer: NotRequired[str]
    citations: NotRequired[list[Citation]]
    cached: NotRequired[bool]
    found: NotRequired[bool]
    degraded: NotRequired[list[str]]
    usage: NotRequired[Usage]
    model: NotRequired[str | None]
    fallback: NotRequired[dict[str, Any] | None]
    # Ids of retrieved passages that matched an injection rule (stripped, flagged or blocking).
    injected_passages: NotRequired[list[str]]
    # PII replaced in the answer, streamed tokens and citation snippets, by entity type.
    output_redactions: NotRequired[dict[str, int]]
    # Text the client already saw when generation broke mid-stream: the next model continues it.
    partial_answer: NotRequired[str]
