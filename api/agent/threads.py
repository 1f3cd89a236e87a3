"""Threads: create, read, search, count, patch, delete, state (get, at a checkpoint, update)
and history, over keel's thread records and checkpointer."""

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Path, Query, Request, Response, status
from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.types import StateSnapshot

from api import audit
from api.agent.schemas import (
    CheckpointRef,
    HistoryRequest,
    StateCheckpointRequest,
    StateUpdate,
    ThreadCreate,
    ThreadField,
    ThreadPatch,
    ThreadPrune,
    ThreadSearch,
    ThreadTtlBody,
)
from api.deps import Keel, KeelDep, TenantDep, ThreadIdPath
from checkpoints.thread_search import ThreadStatus, search_threads, thread_status
from checkpoints.threads import (
    ThreadTtl,
    copy_thread,
    create_thread,
    delete_thread,
    get_thread,
    patch_thread,
    prune_thread,
    ttl_view,
)
from graph.errors import InvalidInput, NotFound

router = APIRouter(prefix="/threads", tags=["agent: threads"])
SubgraphsQuery = Annotated[
    Literal["true", "false", "True", "False"],
    Query(description="accepted; keel's graph has no subgraphs"),
]


def thread_body(record: dict[str, Any], thread_status: ThreadStatus) -> dict[str, Any]:
    """A thread record in the Agent Server's shape."""
    return {
        "thread_id": record["thread_id"],
        "created_at": record["created_at"],
        "updated_at": record.get("updated_at") or record["created_at"],
        "metadata": record.get("metadata") or {},
        "status": thread_status,
        "interrupts": {},
    }


def _checkpoint(config: RunnableConfig | None) -> dict[str, Any] | None:
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("checkpoint_id"):
        return None
    return {
        "thread_id": configurable["thread_id"],
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable["checkpoint_id"],
    }


def state_body(snapshot: StateSnapshot) -> dict[str, Any]:
    """A checkpoint in the Agent Server's `ThreadState` shape."""
    checkpoint, parent = _checkpoint(snapshot.config), _checkpoint(snapshot.parent_config)
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "tasks": [
            {
                "id": task.id,
                "name": task.name,
                "path": list(task.path),
                "error": task.error,
                "interrupts": [{"id": i.id, "value": i.value} for i in task.interrupts],
                "checkpoint": None,
                "state": None,
                "result": task.result,
            }
            for task in snapshot.tasks
        ],
        "metadata": snapshot.metadata,
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
        "interrupts": [{"id": i.id, "value": i.value} for i in snapshot.interrupts],
        "checkpoint_id": checkpoint and checkpoint["checkpoint_id"],
        "parent_checkpoint_id": parent and parent["checkpoint_id"],
    }


async def _values(keel: Keel, thread_id: str) -> dict[str, Any]:
    """The thread's current state values (empty before its first run)."""
    return (await keel.graph.aget_state(_config(thread_id))).values


def _config(thread_id: str, checkpoint: CheckpointRef | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint is not None and checkpoint.checkpoint_id:
        configurable["checkpoint_id"] = checkpoint.checkpoint_id
    return {"configurable": configurable}


async def _state(keel: Keel, thread_id: str, checkpoint: CheckpointRef | None) -> dict[str, Any]:
    config = _config(thread_id, checkpoint)
    if checkpoint is not None and checkpoint.checkpoint_id:
        if await keel.persistence.saver.aget_tuple(config) is None:
            raise NotFound(f"checkpoint {checkpoint.checkpoint_id} not found")
    return state_body(await keel.graph.aget_state(config))


@router.post("", responses={409: {"description": "the thread id is taken"}})
async def create(keel: KeelDep, tenant: TenantDep, body: ThreadCreate | None = None) -> Any:
    """Creates a thread (with the caller's `thread_id` if given); `if_exists=do_nothing` returns
    the tenant's existing thread instead of 409."""
    body = body or ThreadCreate()
    if body.thread_id is not None and body.if_exists == "do_nothing":
        try:
            record = await get_thread(keel.persistence, tenant, body.thread_id)
            return thread_body(record, await thread_status(keel.persistence, body.thread_id))
        except NotFound:
            pass
    record = await create_thread(
        keel.persistence, tenant, body.metadata, body.thread_id, _ttl(body.ttl)
    )
    return thread_body(record, "idle")


def _ttl(body: ThreadTtlBody | None) -> ThreadTtl | None:
    return None if body is None else ThreadTtl(strategy=body.strategy, ttl=body.ttl)


@router.post("/prune")
async def prune(body: ThreadPrune, keel: KeelDep, tenant: TenantDep) -> dict[str, int]:
    """Deletes the tenant's threads among `thread_ids` (`keep_latest`: keeps each one with only
    its latest checkpoint); ids the tenant does not have, and busy threads, are skipped."""
    pruned = 0
    for thread_id in dict.fromkeys(body.thread_ids):
        pruned += await prune_thread(keel.persistence, tenant, thread_id, body.strategy)
    return {"pruned_count": pruned}


def _refuse_unserved(body: ThreadSearch) -> None:
    refused = [f for f in ("values", "extract") if getattr(body, f)]
    if refused:
        raise InvalidInput(f"keel's thread search does not serve {', '.join(refused)}")


@router.post("/search")
async def search(
    keel: KeelDep, tenant: TenantDep, body: ThreadSearch | None = None
) -> list[dict[str, Any]]:
    """The tenant's threads matching ids, metadata and status, in `sort_by` order (the most
    recently active first by default), each with its current values (as `GET /threads/{id}`),
    only the `select` fields when given."""
    body = body or ThreadSearch()
    _refuse_unserved(body)
    found = await search_threads(
        keel.persistence,
        tenant,
        body.metadata or {},
        body.status,
        body.limit,
        body.offset,
        body.sort_by,
        ascending=body.sort_order == "asc",
        ids=body.ids,
    )
    fields = set(body.select or get_args(ThreadField))
    threads = []
    for record, found_status in found:
        thread = thread_body(record, found_status)
        if "values" in fields:  # one checkpoint read per thread: only when asked for
            thread["values"] = await _values(keel, record["thread_id"])
        threads.append({k: v for k, v in thread.items() if k in fields})
    return threads


@router.post("/count")
async def count(keel: KeelDep, tenant: TenantDep, body: ThreadSearch | None = None) -> int:
    """How many of the tenant's threads match ids, metadata and status."""
    body = body or ThreadSearch()
    _refuse_unserved(body)
    found = await search_threads(
        keel.persistence, tenant, body.metadata or {}, body.status, 1_000_000, 0, ids=body.ids
    )
    return len(found)


@router.get("/{thread_id}")
async def read(
    thread_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    include: Annotated[str | None, Query(max_length=200, description="comma-separated")] = None,
) -> Any:
    """The thread, with its current values (`include=ttl`: and its TTL, null without one)."""
    record = await get_thread(keel.persistence, tenant, thread_id)
    body = thread_body(record, await thread_status(keel.persistence, thread_id))
    body["values"] = await _values(keel, thread_id)
    if include and "ttl" in include.split(","):
        body["ttl"] = ttl_view(record)
    return body


@router.patch("/{thread_id}")
async def patch(
    thread_id: ThreadIdPath, body: ThreadPatch, keel: KeelDep, tenant: TenantDep
) -> Any:
    """Merges metadata into the thread's; sets its `ttl` (a TTL restarts on every change)."""
    record = await patch_thread(keel.persistence, tenant, thread_id, body.metadata, _ttl(body.ttl))
    return thread_body(record, await thread_status(keel.persistence, thread_id))


@router.post("/{thread_id}/copy")
async def copy(thread_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep) -> Any:
    """A new thread with the same metadata and checkpoints (same ids, so its history and
    branches read the same), for the same tenant; runs are not copied."""
    return thread_body(await copy_thread(keel.persistence, tenant, thread_id), "idle")


@router.delete("/{thread_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(
    thread_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep, request: Request
) -> Response:
    """Deletes the thread, its runs, event logs and checkpoints."""
    await delete_thread(keel.persistence, tenant, thread_id)
    audit.action(request, "thread_deleted", thread_id=thread_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{thread_id}/state")
async def state(
    thread_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep, subgraphs: SubgraphsQuery = "false"
) -> Any:
    """The thread's latest checkpoint (keel's graph has no subgraphs to include)."""
    await get_thread(keel.persistence, tenant, thread_id)
    return await _state(keel, thread_id, None)


@router.post("/{thread_id}/state/checkpoint")
async def state_at_checkpoint_post(
    thread_id: ThreadIdPath, body: StateCheckpointRequest, keel: KeelDep, tenant: TenantDep
) -> Any:
    """The thread at a given checkpoint."""
    await get_thread(keel.persistence, tenant, thread_id)
    return await _state(keel, thread_id, body.checkpoint)


@router.get("/{thread_id}/state/{checkpoint_id}")
async def state_at_checkpoint(
    thread_id: ThreadIdPath,
    checkpoint_id: Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{1,64}$")],
    keel: KeelDep,
    tenant: TenantDep,
    subgraphs: SubgraphsQuery = "false",
) -> Any:
    """The thread at a given checkpoint."""
    await get_thread(keel.persistence, tenant, thread_id)
    return await _state(keel, thread_id, CheckpointRef(checkpoint_id=checkpoint_id))


def redacted(keel: Keel, values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the text of its messages redacted, as the guard does for a run's input."""
    messages = values.get("messages")
    if not isinstance(messages, list):
        return values
    redact = keel.deps.redactor.redact
    cleaned = []
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message = {**message, "content": redact(message["content"]).text}
        cleaned.append(message)
    return {**values, "messages": cleaned}


@router.post("/{thread_id}/state")
async def update_state(
    thread_id: ThreadIdPath, body: StateUpdate, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """Writes values to the thread as if `as_node` had returned them (a new checkpoint)."""
    await get_thread(keel.persistence, tenant, thread_id)
    if isinstance(body.values, list):
        raise InvalidInput("state updates take one values object")
    reference = body.checkpoint or (
        CheckpointRef(checkpoint_id=body.checkpoint_id) if body.checkpoint_id else None
    )
    try:
        config = await keel.graph.aupdate_state(
            _config(thread_id, reference),
            redacted(keel, body.values) if body.values is not None else None,
            as_node=body.as_node,
        )
    except (ValueError, KeyError, TypeError, InvalidUpdateError) as exc:
        # langgraph rejects an unknown node or an ambiguous update this way.
        raise InvalidInput(f"state update rejected: {exc}") from None
    return {"checkpoint": _checkpoint(config)}


@router.get("/{thread_id}/history")
async def history_get(
    thread_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    before: Annotated[str | None, Query(pattern=r"^[0-9a-fA-F-]{1,64}$")] = None,
) -> list[dict[str, Any]]:
    """The thread's checkpoints, newest first."""
    body = HistoryRequest(limit=limit, before=before)
    return await _history(keel, tenant, thread_id, body)


@router.post("/{thread_id}/history")
async def history(
    thread_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep, body: HistoryRequest | None = None
) -> list[dict[str, Any]]:
    """The thread's checkpoints, newest first: filtered by metadata, before a checkpoint."""
    return await _history(keel, tenant, thread_id, body or HistoryRequest())


async def _history(
    keel: Keel, tenant: str, thread_id: str, body: HistoryRequest
) -> list[dict[str, Any]]:
    await get_thread(keel.persistence, tenant, thread_id)
    before = body.before
    if isinstance(before, str):
        before = CheckpointRef(checkpoint_id=before)
    # One checkpoint more than asked: each checkpoint's writes are its parent's task results.
    snapshots = [
        snapshot
        async for snapshot in keel.graph.aget_state_history(
            _config(thread_id, body.checkpoint),
            filter=body.metadata,
            before=_config(thread_id, before) if before else None,
            limit=body.limit + 1,
        )
    ]
    out = []
    for snapshot, parent in zip(snapshots[: body.limit], [*snapshots[1:], None], strict=False):
        state = state_body(snapshot)
        writes = {
            t.name: t.result for t in (parent.tasks if parent else ()) if t.result is not None
        }
        state["metadata"] = {**(snapshot.metadata or {}), "writes": writes or None}
        out.append(state)
    return out
