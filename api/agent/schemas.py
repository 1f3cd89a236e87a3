"""Request bodies of the Agent Server API (the fields the official SDKs send)."""

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
)

from api.schemas import THREAD_ID_PATTERN, _check_storable
from checkpoints.thread_search import SortBy, ThreadStatus

# The SDKs add fields over time: unknown ones are ignored, as the reference server does; known
# ones are typed strictly (`false` is no offset, `"5"` no top_k).


def _storable(value: Any) -> Any:
    _check_storable(value)
    return value


# JSON that Postgres' jsonb can hold (no NUL, valid UTF-8): else 422, not a database error.
Storable = Annotated[dict[str, Any], AfterValidator(_storable)]
Offset = Annotated[int, Field(ge=0, le=100_000)]
_LENIENT = ConfigDict(extra="ignore", strict=True)


# A name, a description: text the store can hold, of a bounded length.
StorableText = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_storable)]
AssistantUuid = Annotated[
    str, Field(pattern=r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
]


class RunKnobs(BaseModel):
    """The run knobs of `graph.context.Context` a client may set (the assistant's context
    schema); other context fields are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    top_k: int = Field(default=5, ge=1, le=20)
    candidates: int = Field(default=40, ge=1, le=200)
    use_cache: bool = True
    rerank: bool = True
    model: str | None = Field(default=None, max_length=200)
    retrieval: Literal["hybrid", "dense", "lexical"] = "hybrid"
    history_turns: int = Field(default=4, ge=0, le=50)


class RunConfig(BaseModel):
    """A `config` (of an assistant or a run): keel reads the knobs in its `configurable`."""

    model_config = _LENIENT

    configurable: RunKnobs | None = None


class AssistantCreate(BaseModel):
    """`POST /assistants`: a configured variant of a graph (its config or context knobs)."""

    model_config = _LENIENT

    graph_id: str = Field(max_length=200)
    assistant_id: AssistantUuid | None = None
    config: RunConfig | None = None
    context: RunKnobs | None = None
    metadata: Storable | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    name: StorableText | None = None
    description: StorableText | None = None


class AssistantPatch(BaseModel):
    """`PATCH /assistants/{assistant_id}`: a new version; metadata is merged, the rest replaced."""

    model_config = _LENIENT

    graph_id: str | None = Field(default=None, max_length=200)
    config: RunConfig | None = None
    context: RunKnobs | None = None
    metadata: Storable | None = None
    name: StorableText | None = None
    description: StorableText | None = None


class AssistantVersions(BaseModel):
    """`POST /assistants/{assistant_id}/versions`."""

    model_config = _LENIENT

    metadata: Storable | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: Offset = 0


class AssistantLatest(BaseModel):
    """`POST /assistants/{assistant_id}/latest`."""

    model_config = _LENIENT

    version: int = Field(ge=1, le=2_000_000_000)


class AssistantSearch(BaseModel):
    """`POST /assistants/search` and `/assistants/count`."""

    model_config = _LENIENT

    metadata: Storable | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: Offset = 0
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[str] | None = Field(default=None, max_length=20)


class ThreadTtlBody(BaseModel):
    """A thread's `ttl`: `ttl` minutes after its last activity, `strategy` applies."""

    model_config = ConfigDict(extra="forbid", strict=True)

    strategy: Literal["delete", "keep_latest"] = "delete"
    ttl: Annotated[float, Field(gt=0, le=10_000_000, strict=False)]


class ThreadCreate(BaseModel):
    """`POST /threads`."""

    model_config = _LENIENT

    thread_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    metadata: Storable | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    ttl: ThreadTtlBody | None = None


class ThreadPatch(BaseModel):
    """`PATCH /threads/{thread_id}`: metadata merged into the thread's; a new `ttl`."""

    model_config = _LENIENT

    metadata: Storable = Field(default_factory=dict)
    ttl: ThreadTtlBody | None = None


class ThreadPrune(BaseModel):
    """`POST /threads/prune`: the tenant's threads among `thread_ids` deleted, or trimmed to
    their latest checkpoint (`keep_latest`)."""

    model_config = _LENIENT

    thread_ids: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] = Field(
        max_length=1000
    )
    strategy: Literal["delete", "keep_latest"] = "delete"


ThreadField = Literal[
    "thread_id",
    "created_at",
    "updated_at",
    "metadata",
    "config",
    "context",
    "status",
    "values",
    "interrupts",
]


class ThreadSearch(BaseModel):
    """`POST /threads/search` and `/threads/count`."""

    model_config = _LENIENT

    ids: list[Annotated[str, Field(pattern=THREAD_ID_PATTERN)]] | None = Field(
        default=None, max_length=1000
    )
    metadata: Storable | None = None
    status: ThreadStatus | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: Offset = 0
    # keel's default order: the most recently active first.
    sort_by: SortBy = "updated_at"
    sort_order: Literal["asc", "desc"] = "desc"
    # The fields each result keeps (all when absent); keel's threads have no config or context.
    select: list[ThreadField] | None = Field(default=None, max_length=10)
    # Accepted by the SDKs, not served: a search that sets them is refused (422), not answered
    # as if they were absent.
    values: Storable | None = None
    extract: Storable | None = None


# Node names (validated against the graph's by the runs router), or "*" for every node.
NodeNames = (
    Annotated[str, Field(max_length=100)]
    | Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=20)]
)

# LangGraph checkpoint ids are UUIDs; anything else can name no checkpoint.
CheckpointId = Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{1,64}$")]


# A store namespace label: what LangGraph's stores accept (no dots: they join labels with them).
StoreLabel = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[^.\x00]+$"), AfterValidator(_storable)
]
StoreNamespace = Annotated[list[StoreLabel], Field(max_length=20)]
StoreKey = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_storable)]
# A cron schedule or timezone name: text the database can hold.
CronText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_storable)]


def _exactly_false(value: Any) -> Any:
    if value is not False:  # a Literal would take 0 for False
        raise ValueError("index is false or a list of field paths")
    return value


NoIndex = Annotated[Literal[False], BeforeValidator(_exactly_false)]
# A field path of an item's value (LangGraph's syntax: `a.b`, `list[*]`, `$` for all of it).
IndexPath = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_storable)]


class StorePut(BaseModel):
    """`PUT /store/items`: `ttl` in minutes, at least one (the store keeps whole minutes; None:
    kept until deleted)."""

    model_config = _LENIENT

    namespace: Annotated[StoreNamespace, Field(min_length=1)]
    key: StoreKey
    value: Storable
    # The value's field paths embedded for semantic search (`false`: none; absent: the
    # server's `KEEL_STORE_INDEX_FIELDS`).
    index: NoIndex | Annotated[list[IndexPath], Field(max_length=20)] | None = None
    ttl: Annotated[float, Field(ge=1, le=10_000_000)] | None = None


class StoreDelete(BaseModel):
    """`DELETE /store/items`."""

    model_config = _LENIENT

    namespace: Annotated[StoreNamespace, Field(min_length=1)]
    key: StoreKey


class StoreSearch(BaseModel):
    """`POST /store/items/search`: items under a namespace prefix whose values match `filter`
    (field equality, or `$eq` `$ne` `$gt` `$gte` `$lt` `$lte` operators), newest first."""

    model_config = _LENIENT

    namespace_prefix: StoreNamespace = Field(default_factory=list)
    filter: Storable | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: Offset = 0
    query: str | None = Field(default=None, max_length=2000)
    refresh_ttl: bool | None = None


class StoreNamespaces(BaseModel):
    """`POST /store/namespaces`: the namespaces under `prefix` ending with `suffix` ("*" matches
    any one label), cut at `max_depth` labels."""

    model_config = _LENIENT

    prefix: StoreNamespace | None = None
    suffix: StoreNamespace | None = None
    max_depth: int | None = Field(default=None, ge=1, le=20)
    limit: int = Field(default=100, ge=1, le=1000)
    offset: Offset = 0


class CronCreate(BaseModel):
    """`POST /runs/crons` and `/threads/{thread_id}/runs/crons`: a run on a schedule (five
    cron fields, in `timezone`, UTC by default), until `end_time`."""

    model_config = _LENIENT

    schedule: CronText
    assistant_id: str = Field(default="keel", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    input: Storable | None = None
    config: RunConfig | None = None
    context: RunKnobs | None = None
    metadata: Storable | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = None
    stream_mode: str | list[str] = "values"
    durability: Literal["sync", "async", "exit"] | None = None
    end_time: Annotated[AwareDatetime, Field(strict=False)] | None = None
    enabled: bool = True
    timezone: CronText | None = None
    on_run_completed: Literal["keep", "delete"] | None = None
    # Accepted by the SDKs, not served on crons: a request that sets them is refused (422).
    webhook: str | None = None
    interrupt_before: NodeNames | None = None
    interrupt_after: NodeNames | None = None


class CronPatch(BaseModel):
    """`PATCH /runs/crons/{cron_id}`: the given fields replace the cron's (metadata is merged;
    `end_time: null` clears it); the cron is checked again as a whole."""

    model_config = _LENIENT

    schedule: CronText | None = None
    input: Storable | None = None
    config: RunConfig | None = None
    context: RunKnobs | None = None
    metadata: Storable | None = None
    stream_mode: str | list[str] | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    end_time: Annotated[AwareDatetime, Field(strict=False)] | None = None
    enabled: bool | None = None
    timezone: CronText | None = None
    on_run_completed: Literal["keep", "delete"] | None = None
    webhook: str | None = None
    interrupt_before: NodeNames | None = None
    interrupt_after: NodeNames | None = None


class CronSearch(BaseModel):
    """`POST /runs/crons/search` and `/runs/crons/count`."""

    model_config = _LENIENT

    assistant_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    thread_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    enabled: bool | None = None
    metadata: Storable | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: Offset = 0
    sort_by: Literal[
        "cron_id",
        "assistant_id",
        "thread_id",
        "created_at",
        "updated_at",
        "next_run_date",
        "end_time",
    ] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[str] | None = Field(default=None, max_length=20)


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


class RunCommand(BaseModel):
    """A run's `command`: resume a stopped thread, write to its state, go to nodes."""

    model_config = _LENIENT

    resume: Annotated[Any, AfterValidator(_storable)] = None
    update: Storable | None = None
    goto: NodeNames | None = None


class RunCreate(BaseModel):
    """`POST /threads/{thread_id}/runs[/stream|/wait]` and the stateless `/runs/...`."""

    model_config = _LENIENT

    assistant_id: str = Field(default="keel", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    input: Storable | None = None
    stream_mode: str | list[str] = "values"
    context: RunKnobs = Field(default_factory=RunKnobs)
    metadata: Storable | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = None
    on_disconnect: Literal["continue", "cancel"] = "continue"
    if_not_exists: Literal["create", "reject"] = "reject"
    durability: Literal["sync", "async", "exit"] | None = None
    stream_resumable: bool = False
    config: RunConfig | None = None
    command: RunCommand | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: CheckpointId | None = None
    interrupt_before: NodeNames | None = None
    interrupt_after: NodeNames | None = None
    # Posted the run once it has ended (http(s) only; see runtime/webhooks.py).
    webhook: str | None = Field(default=None, max_length=2000)
    stream_subgraphs: bool = False
    # Stateless runs only: what becomes of their thread once they have ended.
    on_completion: Literal["delete", "keep"] = "delete"


class RunBatch(RootModel[list[RunCreate]]):
    """`POST /runs/batch`: stateless background runs, as `POST /runs` takes them."""

    root: list[RunCreate] = Field(min_length=1, max_length=100)
