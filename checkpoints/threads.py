"""Thread records (tenant, creation time) in the store; deletion also removes checkpoints."""

import uuid
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig

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


async def copy_thread(p: Persistence, tenant: str, thread_id: str) -> dict[str, Any]:
    """A new thread of the tenant's with the same metadata, checkpoints (same ids, same parents,
    so history and branches read the same) and pending writes; runs are not copied."""
    source = await get_thread(p, tenant, thread_id)
    record = await create_thread(p, tenant, source.get("metadata"))
    target = record["thread_id"]
    tuples = [t async for t in p.saver.alist({"configurable": {"thread_id": thread_id}})]
    for saved in reversed(tuples):  # oldest first: each parent exists before its children
        configurable = saved.config["configurable"]
        parent = (saved.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        config: RunnableConfig = {
            "configurable": {"thread_id": target, "checkpoint_ns": configurable["checkpoint_ns"]}
            | ({"checkpoint_id": parent} if parent else {})
        }
        checkpoint = saved.checkpoint
        written = await p.saver.aput(
            config, checkpoint, saved.metadata, checkpoint["channel_versions"]
        )
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in saved.pending_writes or ():
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, writes in by_task.items():
            await p.saver.aput_writes(written, writes, task_id)
    record["message_count"] = source.get("message_count", 0)
    record["updated_at"] = source.get("updated_at")
    await p.store.aput(thread_namespace(tenant), target, record)
    return record


async def delete_thread(p: Persistence, tenant: str, thread_id: str) -> None:
    """Removes the thread's crons, runs, event logs, checkpoints, writes and blobs, then its
    record."""
    await get_thread(p, tenant, thread_id)
    await p.crons.delete_for_thread(thread_id)
    await p.runs.delete_thread(thread_id)
    await p.saver.adelete_thread(thread_id)
    await p.store.adelete(thread_namespace(tenant), thread_id)


# Characters of a thread's first question kept as its title.
TITLE_CHARS = 120


async def touch_thread(
    p: Persistence, tenant: str, thread_id: str, message_count: int, question: str | None = None
) -> None:
    """Records a thread's last activity and message count, and its first (redacted) `question`
    as its title, for listing."""
    item = await p.store.aget(thread_namespace(tenant), thread_id)
    if item is not None:
        record = dict(item.value) | {
            "updated_at": datetime.now(UTC).isoformat(),
            "message_count": message_count,
        }
        if question and not record.get("title"):
            record["title"] = " ".join(question.split())[:TITLE_CHARS]
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
