"""Request and response bodies."""

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

THREAD_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable code and a human-readable message."""

    code: str = Field(description="e.g. invalid_request, not_found, unauthorized, rate_limited")
    message: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class Readiness(BaseModel):
    """Readiness and the outcome of each dependency's check ("ok" or "error: <type>")."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


class RunContext(BaseModel):
    """Per-run knobs a client may set (a subset of `graph.context.Context`)."""

    # Strict: `"rerank": 0` or `"top_k": "5"` is a client bug to report, not a value to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    top_k: int = Field(default=5, ge=1, le=20)
    candidates: int = Field(default=40, ge=1, le=200)
    use_cache: bool = True
    rerank: bool = True
    model: str | None = Field(default=None, max_length=200)
    retrieval: Literal["hybrid", "dense", "lexical"] = "hybrid"
    history_turns: int = Field(default=4, ge=0, le=50)


class RunRequest(BaseModel):
    """A user message for a thread, and how the run should behave."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=100_000)
    context: RunContext = Field(default_factory=RunContext)
    durability: Literal["sync", "async", "exit"] | None = Field(
        default=None,
        description="checkpoint writes: sync (safest), async (default), exit (fastest)",
    )
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = Field(
        default=None, description="when the thread already has a run in progress; default reject"
    )
    on_disconnect: Literal["continue", "cancel"] = "continue"


class ThreadCreate(BaseModel):
    """Optional metadata for a new thread."""

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="any JSON object; its strings may not contain NUL characters",
    )

    @field_validator("metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_storable(value)
        return value


def _check_storable(value: Any) -> None:
    """Raises `ValueError` for what the stores cannot hold: strings with a NUL character or a
    lone surrogate (not UTF-8; Postgres jsonb), integers beyond 64 bits (the embedded stores'
    JSON)."""
    items: list[Any] = [value]
    while items:
        item = items.pop()
        if isinstance(item, dict):
            items += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            items += item
        elif isinstance(item, int) and not -(2**63) <= item < 2**63:
            raise ValueError("integers must fit in 64 bits")
        elif isinstance(item, str):
            if "\x00" in item:
                raise ValueError("strings may not contain NUL characters")
            try:
                item.encode()
            except UnicodeEncodeError:
                raise ValueError("strings must be valid UTF-8 (no lone surrogates)") from None


class Thread(BaseModel):
    """A thread record."""

    thread_id: str
    created_at: str
    updated_at: str | None = None
    message_count: int = 0
    title: str | None = Field(
        default=None, description="the thread's first question (redacted), once it has one"
    )
    metadata: dict[str, Any]


class ThreadPage(BaseModel):
    """A page of threads; pass `next_cursor` as `cursor` for the next one."""

    threads: list[Thread]
    next_cursor: str | None


def iso_utc(epoch_s: float) -> str:
    """Epoch seconds (how the run store keeps time) as ISO 8601 UTC, the API's one time format."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


class RunInfo(BaseModel):
    """A run's status."""

    run_id: str
    thread_id: str
    status: str
    multitask_strategy: str
    attempts: int
    error: str | None
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str = Field(description="ISO 8601, UTC")


class Message(BaseModel):
    """One message of a thread, as stored (redacted)."""

    id: str | None
    role: str
    content: str
    citations: list[dict[str, Any]] = Field(
        default_factory=list, description="an assistant message's citations: what its [n] cite"
    )


class ThreadState(Thread):
    """A thread with its messages and last answer."""

    messages: list[Message]
    answer: str | None
    citations: list[dict[str, Any]]
    found: bool = Field(default=True, description="false when the last answer found nothing")
    degraded: list[str]


class CheckpointInfo(BaseModel):
    """One checkpoint of a thread's history."""

    checkpoint_id: str
    parent_checkpoint_id: str | None
    step: int | None
    source: str | None
    created_at: str | None
    next: list[str]


class RunResult(BaseModel):
    """The outcome of a run (also the data of `run.finished`)."""

    run_id: str
    thread_id: str
    answer: str
    citations: list[dict[str, Any]]
    cached: bool
    found: bool = Field(
        default=True,
        description="false when the documents hold nothing relevant and the answer says so "
        "(not a failure: `degraded` lists failures only)",
    )
    degraded: list[str]
    usage: dict[str, int]
    model: str | None = None
    service_level: Literal["full", "no_rerank", "cached", "documents_only"] = Field(
        default="full", description="the degradation ladder's rung that answered"
    )
    cache: dict[str, Any] | None = None  # on a cache hit: kind (exact/semantic), similarity


class SkippedFile(BaseModel):
    """A file an ingestion passed over."""

    path: str = Field(description="the file's name as uploaded")
    reason: str = Field(description="why: no text found, unreadable, unsupported type")


class IngestResult(BaseModel):
    """What an ingestion did."""

    documents: int
    chunks_added: int
    documents_unchanged: int
    documents_replaced: int
    corpus_version: int
    doc_ids: list[str]
    outcomes: dict[str, Literal["added", "replaced", "unchanged"]] = Field(
        default_factory=dict, description="what happened to each document, by id"
    )
    skipped: list[SkippedFile] = Field(
        default_factory=list, description="files not ingested (no text, unreadable), and why"
    )


class DocumentInfo(BaseModel):
    """One stored document."""

    id: str
    source: str
    title: str
    chunks: int
    ingested_at: str = Field(description="ISO 8601, UTC")
    flagged_chunks: int = Field(
        0,
        description="chunks that carry instructions aimed at the assistant (injection rules, "
        "at ingestion); the passage screen keeps them out of prompts",
    )


class DocumentPage(BaseModel):
    """A page of the tenant's documents, by id; `next_cursor` fetches the next one."""

    documents: list[DocumentInfo]
    next_cursor: str | None
