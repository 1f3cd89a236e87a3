"""Request bodies of the Agent Server API (the fields the official SDKs send)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The SDKs add fields over time; unknown ones are ignored as the reference server does.
_LENIENT = ConfigDict(extra="ignore")


class AssistantSearch(BaseModel):
    """`POST /assistants/search` and `/assistants/count`."""

    model_config = _LENIENT

    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class ThreadCreate(BaseModel):
    """`POST /threads`."""

    model_config = _LENIENT

    thread_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadPatch(BaseModel):
    """`PATCH /threads/{thread_id}`: metadata merged into the thread's."""

    model_config = _LENIENT

    metadata: dict[str, Any] = Field(default_factory=dict)


class ThreadSearch(BaseModel):
    """`POST /threads/search` and `/threads/count`."""

    model_config = _LENIENT

    metadata: dict[str, Any] | None = None
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_order: Literal["asc", "desc"] = "desc"


class CheckpointRef(BaseModel):
    """A checkpoint of a thread, as the SDKs name it."""

    model_config = _LENIENT

    checkpoint_id: str | None = None
    checkpoint_ns: str = ""


class HistoryRequest(BaseModel):
    """`POST /threads/{thread_id}/history`."""

    model_config = _LENIENT

    limit: int = Field(default=10, ge=1, le=1000)
    before: CheckpointRef | str | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None


class StateCheckpointRequest(BaseModel):
    """`POST /threads/{thread_id}/state/checkpoint`."""

    model_config = _LENIENT

    checkpoint: CheckpointRef
    subgraphs: bool = False


class StateUpdate(BaseModel):
    """`POST /threads/{thread_id}/state`: values written as if `as_node` returned them."""

    model_config = _LENIENT

    values: dict[str, Any] | list[dict[str, Any]] | None = None
    as_node: str | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None
