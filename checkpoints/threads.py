"""Thread records (tenant, creation time) in the store; deletion also removes checkpoints."""

import uuid
from datetime import UTC, datetime
from typing import Any

from checkpoints import Persistence
from graph.errors import NotFound, ThreadExists


def thread_namespace(tenant: str) -> tuple[str, ...]:
    """Where the tenant's thread records live in the store."""
    return ("keel", "threads", tenant)


async def create_thread(
    p: Persistence,
    tenant: str,
    metadata: dict[str, Any] | None = None,
    thread_id: str | None = None,
) -> dict[str, Any]:
    """Creates a thread record (with `thread_id` when the caller picks it) and returns it;
    `Conflict` when that id is taken, by this tenant or any other."""
    if thread_id is not None and await thread_taken(p, thread_id):
        raise ThreadExists(f"thread {thread_id} already exists")
    record: dict[str, Any] = {
        "thread_id": thread_id or uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(),
        "updated_at": None,
        "message_count": 0,
        "metadata": metadata or {},
    }
    await p.store.aput(thread_namespace(tenant), record["thread_id"], record)
    return record


async def thread_taken(p: Persistence, thread_id: str) -> bool:
    """Whether any tenant has a thread record, a run or a checkpoint under `thread_id` (the
    checkpoints and runs are keyed by thread id alone, so ids must be unique across tenants)."""
    found = await p.store.asearch(("keel", "threads"), filter={"thread_id": thread_id}, limit=1)
    if found or await p.runs.list_for_thread(thread_id, 1):
        return True
    return await p.saver.aget_tuple({"configurable": {"thread_id": thread_id}}) is not None


async def patch_thread(
    p: Persistence, tenant: str, thread_id: str, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Merges `metadata` into the thread's and returns the updated record."""
    record = await get_thread(p, tenant, thread_id)
    record["metadata"] = {**record.get("metadata", {}), **metadata}
    await p.store.aput(thread_namespace(tenant), thread_id, record)
    return record


async def get_thread(p: Persistence, tenant: str, thread_id: str) -> dict[str, Any]:
    """The thread's record; `NotFound` when it does not exist for this tenant."""
    item = await p.store.aget(thread_namespace(tenant), thread_id)
    if item is None:
        raise NotFound(f"thread {thread_id} not found")
    return dict(item.value)


async def delete_thread(p: Persistence, tenant: str, thread_id: str) -> None:
    """Removes the thread's runs, event logs, checkpoints, writes and blobs, then its record."""
    await get_thread(p, tenant, thread_id)
    await p.runs.delete_thread(thread_id)
    await p.saver.adelete_thread(thread_id)
    await p.store.adelete(thread_namespace(tenant), thread_id)


async def touch_thread(p: Persistence, tenant: str, thread_id: str, message_count: int) -> None:
    """Records a thread's last activity and message count (for listing)."""
    item = await p.store.aget(thread_namespace(tenant), thread_id)
    if item is not None:
        record = dict(item.value) | {
            "updated_at": datetime.now(UTC).isoformat(),
            "message_count": message_count,
        }
        await p.store.aput(thread_namespace(tenant), thread_id, record)


async def list_threads(
    p: Persistence, tenant: str, limit: int, offset: int
) -> list[dict[str, Any]]:
    """A page of the tenant's threads, most recently updated first."""
    items = await p.store.asearch(thread_namespace(tenant), limit=10_000)
    records = sorted(
        (dict(i.value) for i in items),
        key=lambda r: r.get("updated_at") or r["created_at"],
        reverse=True,
    )
    return records[offset : offset + limit]
