"""Threads: create, read (messages and last answer), history (checkpoints), delete."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from langchain_core.messages import BaseMessage

from api import audit
from api.deps import KeelDep, TenantDep, ThreadIdPath
from api.errors import error_responses
from api.schemas import CheckpointInfo, Message, Thread, ThreadCreate, ThreadPage, ThreadState
from checkpoints.threads import (
    create_thread,
    delete_thread,
    get_thread,
    list_threads,
    readable,
)

router = APIRouter(prefix="/v1/threads", tags=["threads"])
NOT_FOUND = error_responses(404)


def _message(message: BaseMessage) -> Message:
    role = {"human": "user", "ai": "assistant"}.get(message.type, message.type)
    citations = message.response_metadata.get("citations", []) if role == "assistant" else []
    return Message(id=message.id, role=role, content=message.text, citations=citations)


@router.post("", status_code=status.HTTP_201_CREATED, responses=error_responses(400))
async def create(keel: KeelDep, tenant: TenantDep, body: ThreadCreate | None = None) -> Thread:
    """Creates an empty thread."""
    record = await create_thread(keel.persistence, tenant, (body or ThreadCreate()).metadata)
    return Thread(**record)


@router.get("")
async def list_all(
    keel: KeelDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$")] = None,
) -> ThreadPage:
    """The tenant's threads, most recently active first, with message counts."""
    offset = int(cursor or 0)
    records = await list_threads(keel.persistence, tenant, limit + 1, offset)
    more = len(records) > limit
    return ThreadPage(
        threads=[Thread(**readable(keel.persistence, r)) for r in records[:limit]],
        next_cursor=str(offset + limit) if more else None,
    )


@router.get("/{thread_id}", responses=NOT_FOUND)
async def read(thread_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep) -> ThreadState:
    """The thread's (redacted) messages and its last answer."""
    record = await get_thread(keel.persistence, tenant, thread_id)
    values: dict[str, Any] = (
        await keel.graph.aget_state({"configurable": {"thread_id": thread_id}})
    ).values
    return ThreadState(
        **readable(keel.persistence, record),
        messages=[_message(m) for m in values.get("messages", [])],
        answer=values.get("answer"),
        citations=values.get("citations", []),
        found=values.get("found", True),
        degraded=values.get("degraded", []),
    )


@router.get("/{thread_id}/history", responses=NOT_FOUND)
async def history(
    thread_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CheckpointInfo]:
    """The thread's checkpoints, newest first."""
    await get_thread(keel.persistence, tenant, thread_id)
    out = []
    async for snapshot in keel.graph.aget_state_history(
        {"configurable": {"thread_id": thread_id}}, limit=limit
    ):
        parent = (snapshot.parent_config or {}).get("configurable", {})
        out.append(
            CheckpointInfo(
                checkpoint_id=snapshot.config["configurable"]["checkpoint_id"],
                parent_checkpoint_id=parent.get("checkpoint_id"),
                step=snapshot.metadata.get("step") if snapshot.metadata else None,
                source=snapshot.metadata.get("source") if snapshot.metadata else None,
                created_at=snapshot.created_at,
                next=list(snapshot.next),
            )
        )
    return out


@router.delete("/{thread_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete(
    thread_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep, request: Request
) -> Response:
    """Deletes the thread and all its checkpoints."""
    await delete_thread(keel.persistence, tenant, thread_id)
    audit.action(request, "thread_deleted", thread_id=thread_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
