"""Trimming a thread's checkpoints: discard those after a checkpoint (rollback) or keep the newest N.

Checkpoint ids are time-ordered (uuid6), so "after" and "newest" are string comparisons, as in
LangGraph's own savers. Postgres blobs are shared across checkpoints by channel version; a blob goes
only when no remaining checkpoint of the thread refers to it.
"""

from typing import Any

from langchain_core.runnables import RunnableConfig

from checkpoints import Persistence

_PG_ORPHAN_BLOBS = """DELETE FROM checkpoint_blobs b WHERE b.thread_id = %s AND NOT EXISTS (
    SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
    AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)"""


async def _delete_where(p: Persistence, thread_id: str, op: str, checkpoint_id: str) -> None:
    """Deletes the thread's checkpoints (and their writes) whose id compares `op` to the given one."""
    saver: Any = p.saver
    if p.kind == "postgres":
        async with saver.conn.connection() as conn, conn.transaction():
            for table in ("checkpoint_writes", "checkpoints"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE thread_id = %s AND checkpoint_id {op} %s",
                    (thread_id, checkpoint_id),
                )
            await conn.execute(_PG_ORPHAN_BLOBS, (thread_id,))
    elif p.kind == "sqlite":
        with saver.cursor() as cursor:  # one transaction, committed on exit
            for table in ("writes", "checkpoints"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id {op} ?",
                    (thread_id, checkpoint_id),
                )
    else:
        keep = (
            (lambda cid: cid <= checkpoint_id) if op == ">" else (lambda cid: cid >= checkpoint_id)
        )
        for checkpoints in saver.storage.get(thread_id, {}).values():
            for cid in [c for c in checkpoints if not keep(c)]:
                del checkpoints[cid]
        for key in [k for k in saver.writes if k[0] == thread_id and not keep(k[2])]:
            del saver.writes[key]


async def discard_after(p: Persistence, thread_id: str, checkpoint_id: str | None) -> None:
    """Removes every checkpoint newer than `checkpoint_id` (all of them when it is None)."""
    await _delete_where(p, thread_id, ">", checkpoint_id or "")


async def keep_latest(p: Persistence, thread_id: str, keep: int) -> None:
    """Keeps only the thread's newest `keep` checkpoints."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    ids = [
        t.config["configurable"]["checkpoint_id"] async for t in p.saver.alist(config, limit=keep)
    ]
    if len(ids) == keep:
        await _delete_where(p, thread_id, "<", ids[-1])
