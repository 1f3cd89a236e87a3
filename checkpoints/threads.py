"""Thread records (tenant, creation time, TTL) in the store; deletion also removes checkpoints."""

import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from langchain_core.runnables import RunnableConfig

from checkpoints import Persistence
from checkpoints.crypto import open_text, seal_text
from checkpoints.retention import keep_latest
from graph.errors import Conflict, NotFound, ThreadExists

TtlStrategy = Literal["delete", "keep_latest"]


class ThreadTtl(TypedDict):
    """A thread's time to live: `ttl` minutes after its last activity (creation, a change, a
    run's end), `strategy` applies: `delete` the thread, or `keep_latest` checkpoint only."""

    strategy: TtlStrategy
    ttl: float


def _expiry(ttl: ThreadTtl, now: float | None = None) -> str:
    """When a thread with `ttl` expires, as zero-padded epoch milliseconds: text that orders
    as the number does, in the Postgres store's text comparison and SQLite's alike."""
    at = (time.time() if now is None else now) + ttl["ttl"] * 60
    return f"{int(at * 1000):015d}"


def ttl_view(record: dict[str, Any]) -> dict[str, Any] | None:
    """The thread's TTL as `GET /threads/{id}?include=ttl` shows it (None without one)."""
    ttl = record.get("ttl")
    if not ttl:
        return None
    expires = datetime.fromtimestamp(int(record["expires_at"]) / 1000, UTC).isoformat()
    return {"strategy": ttl["strategy"], "ttl": ttl["ttl"], "expires_at": expires}


def thread_namespace(tenant: str) -> tuple[str, ...]:
    """Where the tenant's thread records live in the store."""
    return ("keel", "threads", tenant)


async def create_thread(
    p: Persistence,
    tenant: str,
    metadata: dict[str, Any] | None = None,
    thread_id: str | None = None,
    ttl: ThreadTtl | None = None,
) -> dict[str, Any]:
    """Creates a thread record (with `thread_id` when the caller picks it, and `ttl`) and
    returns it; `Conflict` when that id is taken, by this tenant or any other."""
    if thread_id is not None and await thread_taken(p, thread_id):
        raise ThreadExists(f"thread {thread_id} already exists")
    record: dict[str, Any] = {
        "thread_id": thread_id or uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(),
        "updated_at": None,
        "message_count": 0,
        "metadata": metadata or {},
    }
    if ttl is not None:
        record |= {"ttl": dict(ttl), "expires_at": _expiry(ttl)}
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
    p: Persistence,
    tenant: str,
    thread_id: str,
    metadata: dict[str, Any],
    ttl: ThreadTtl | None = None,
) -> dict[str, Any]:
    """Merges `metadata` into the thread's, sets its `ttl` when given (a change counts as
    activity: a TTL the thread has starts again) and returns the updated record."""
    record = await get_thread(p, tenant, thread_id)
    record["metadata"] = {**record.get("metadata", {}), **metadata}
    ttl = ttl or record.get("ttl")
    if ttl:
        record |= {"ttl": dict(ttl), "expires_at": _expiry(ttl)}
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
            record["title"] = seal_text(p.serde, " ".join(question.split())[:TITLE_CHARS])
        if record.get("ttl"):
            record["expires_at"] = _expiry(record["ttl"])
        await p.store.aput(thread_namespace(tenant), thread_id, record)


def readable(p: Persistence, record: dict[str, Any]) -> dict[str, Any]:
    """The record as a client reads it: its title unsealed (records are stored, and copied,
    with the title sealed when an encryption key is set)."""
    if record.get("title"):
        return record | {"title": open_text(p.serde, record["title"])}
    return record


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


async def prune_thread(p: Persistence, tenant: str, thread_id: str, strategy: TtlStrategy) -> bool:
    """Deletes the tenant's thread, or keeps only its latest checkpoint (`keep_latest`);
    False when the tenant has no such thread or a run of it is pending or running (a busy
    thread is left alone, to be pruned later)."""
    try:
        await get_thread(p, tenant, thread_id)
    except NotFound:
        return False
    runs = await p.runs.list_for_thread(thread_id, 1)
    if runs and runs[0].status in ("pending", "running"):
        return False
    if strategy == "keep_latest":
        await keep_latest(p, thread_id, 1)
        return True
    try:
        await delete_thread(p, tenant, thread_id)
    except (NotFound, Conflict):  # deleted meanwhile, or a run just started
        return False
    return True


async def sweep_expired_threads(p: Persistence, limit: int = 100) -> int:
    """Applies their TTL strategy to up to `limit` threads (of any tenant) whose TTL has passed;
    a `keep_latest` thread's TTL then starts again; a busy one waits for its run's end (which
    restarts its TTL). Returns how many were swept."""
    now = f"{int(time.time() * 1000):015d}"
    expired = await p.store.asearch(
        ("keel", "threads"), filter={"expires_at": {"$lt": now}}, limit=limit
    )
    swept = 0
    for item in expired:
        tenant, record = item.namespace[2], dict(item.value)
        ttl: ThreadTtl = record["ttl"]
        pruned = await prune_thread(p, tenant, item.key, ttl["strategy"])
        swept += pruned
        if pruned and ttl["strategy"] == "keep_latest":
            await _restart_ttl(p, tenant, item.key)
    return swept


async def _restart_ttl(p: Persistence, tenant: str, thread_id: str) -> None:
    item = await p.store.aget(thread_namespace(tenant), thread_id)
    if item is not None and item.value.get("ttl"):
        record = dict(item.value) | {"expires_at": _expiry(item.value["ttl"])}
        await p.store.aput(thread_namespace(tenant), thread_id, record)
