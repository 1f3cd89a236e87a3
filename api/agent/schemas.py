"""Request bodies of the Agent Server API (the fields the official SDKs send)."""

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.schemas import _check_storable

# The SDKs add fields over time: unknown ones are ignored, as the reference server does; known
# ones are typed strictly (`false` is no offset, `"5"` no top_k).


def _storable(value: Any) -> Any:
    _check_storable(value)
    return value


# JSON that Postgres' jsonb can hold (no NUL, valid UTF-8): else 422, not a database error.
Storable = Annotated[dict[str, Any], AfterValidator(_storable)]
Offset = Annotated[int, Field(ge=0, le=100_000)]
_LENIENT = ConfigDict(extra="ignore", strict=True)


class AssistantSearch(BaseModel):
    """`POST /assistants/search` and `/assistants/count`."""

    model_config = _LENIENT

    metadata: Storable | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: Offset = 0


class ThreadCreate(BaseModel):
    """`POST /threads`."""

    model_config = _LENIENT

    thread_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    metadata: Storable | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadPatch(BaseModel):
    """`PATCH /threads/{thread_id}`: metadata merged into the thread's."""

    model_config = _LENIENT

    metadata: Storable = Field(default_factory=dict)


class ThreadSearch(BaseModel):
    """`POST /threads/search` and `/threads/count`."""

    model_config = _LENIENT

    metadata: Storable | None = None
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: Offset = 0
    sort_order: Literal["asc", "desc"] = "desc"


# LangGraph checkpoint ids are UUIDs; anything else can name no checkpoint.
CheckpointId = Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{1,64}$")]


class CheckpointRef(BaseModel):
    """A checkpoint of a thread, as the SDKs name it."""

    model_config = _LENIENT

    checkpoint_id: CheckpointId | None = None
    checkpoint_ns: str = Field(default="", max_length=200, pattern=r"^[^\x00]*$")


class HistoryRequest(BaseModel):
    """`POST /threads/{thread_id}/history`."""

    model_config = _LENIENT

    limit: int = Field(default=10, ge=1, le=1000)
    before: CheckpointRef | CheckpointId | None = None
    metadata: Storable | None = None
    checkpoint: CheckpointRef | None = None


class StateCheckpointRequest(BaseModel):
    """`POST /threads/{thread_id}/state/checkpoint`."""

    model_config = _LENIENT

    checkpoint: CheckpointRef
    subgraphs: bool = False


class StateUpdate(BaseModel):
    """`POST /threads/{thread_id}/state`: values written as if `as_node` returned them."""

    model_config = _LENIENT

    values: Storable | list[Storable] | None = None
    as_node: str | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: CheckpointId | None = None


class RunKnobs(BaseModel):
    """The run knobs of `graph.context.Context` a client may set (the assistant's context
    schema); other context fields are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    top_k: int = Field(default=5, ge=1, le=20)
    candidates: int = Field(default=40, ge=1, le=200)
    use_cache: bool = True
    rerank: bool = True
    model: str | None = Field(default=None, max_length=200)


class RunCreate(BaseModel):
    """`POST /threads/{thread_id}/runs[/stream|/wait]` and the stateless `/runs/...`."""

    model_config = _LENIENT

    assistant_id: str = "keel"
    input: Storable | None = None
    stream_mode: str | list[str] = "values"
    context: RunKnobs = Field(default_factory=RunKnobs)
    metadata: Storable | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = None
    on_disconnect: Literal["continue", "cancel"] = "continue"
    if_not_exists: Literal["create", "reject"] = "reject"
    durability: Literal["sync", "async", "exit"] | None = None
    stream_resumable: bool = False
    # Accepted by the SDKs, not served by keel: a request that sets one is refused (422).
    command: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_id: CheckpointId | None = None
    interrupt_before: str | list[str] | None = None
    interrupt_after: str | list[str] | None = None
    webhook: str | None = None
    subgraphs: bool = False
