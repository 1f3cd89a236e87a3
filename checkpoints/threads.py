"""Thread records (tenant, creation time) in the store; deletion also removes checkpoints."""

import uuid
from datetime import UTC, datetime
from typing import Any

from checkpoints import Persistence
from graph.errors import NotFound


def _namespace(tenant: str) -> tuple[str, ...]:
    return ("keel", "threads", tenant)


async def create_thread(
    p: Persistence, tenant: str, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Creates a thread record and returns it."""
    record: dict[str, Any] = {
        "thread_id": uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(),
        "updated_at": None,
        "message_count": 0,
        "metadata": metadata or {},
    }
    await p.store.aput(_namespace(tenant), record["thread_id"], record)
    return record


async def get_thread(p: Persistence, tenant: str, thread_id: str) -> dict[str, Any]:
    """The thread's record; `NotFound` when it does not exist for this tenant."""
    item = await p.store.aget(_namespace(tenant), thread_id)
    if item is None:
        raise NotFound(f"thread {thread_id} not found")
    return dict(item.value)


async def delete_thread(p: Persistence, tenant: str, thread_id: str) -> None:
    """Removes the thread's runs, event logs, checkpoints, writes and blobs, then its record."""
    await get_thread(p, tenant, thread_id)
    await p.runs.delete_thread(thread_id)
    await p.saver.adelete_thread(thread_id)
    await p.store.adelete(_namespace(tenant), thread_id)


async def touch_thread(p: Persistence, tenant: str, thread_id: str, message_count: int) -> None:
    """Records a thread's last activity and message count (for listing)."""
    item = await p.store.aget(_namespace(tenant), thread_id)
    if item is not None:
        record = dict(item.value) | {
            "updated_at": datetime.now(UTC).isoformat(),
            "message_count": message_count,
        }
        await p.store.aput(_namespace(tenant), thread_id, record)


async def list_threads(
    p: Persistence, tenant: str, limit: int, offset: int
) -> list[dict[str, Any]]:
    """A page of the tenant's threads, most recently updated first."""
    items = await p.store.asearch(_namespace(tenant), limit=10_000)
    records = sorted(
        (dict(i.value) for i in items),
        key=lambda r: r.get("updated_at") or r["created_at"],
        reverse=True,
    )
    return records[offset : offset + limit]
