"""Thread search for the Agent Server API: ids, metadata containment, status, order, pagination.

On Postgres one SQL query over the store's (prefix, key) primary key, with each thread's status
from its latest run (`keel_runs_thread` index); the embedded backends filter in memory."""

import json
from typing import Any, Literal

from checkpoints import Persistence
from checkpoints.containment import contains
from checkpoints.threads import thread_namespace

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
SortBy = Literal["thread_id", "status", "created_at", "updated_at"]
# A thread's status from its latest run's status (no run: idle).
RUN_TO_THREAD = {
    "pending": "busy",
    "running": "busy",
    "failed": "error",
    "interrupted": "interrupted",
}

_PG_SEARCH = """
SELECT value, status FROM (
    SELECT s.value, s.updated_at,
        CASE r.status WHEN 'pending' THEN 'busy' WHEN 'running' THEN 'busy'
            WHEN 'failed' THEN 'error' WHEN 'interrupted' THEN 'interrupted'
            ELSE 'idle' END AS status
    FROM store s
    LEFT JOIN LATERAL (
        SELECT status FROM keel_runs WHERE thread_id = s.key ORDER BY created_at DESC LIMIT 1
    ) r ON true
    WHERE s.prefix = %s AND s.value->'metadata' @> %s::jsonb
        AND (%s::text[] IS NULL OR s.key = ANY(%s::text[]))
) t
WHERE %s::text IS NULL OR status = %s::text
ORDER BY {column} {order}, value->>'thread_id'
LIMIT %s OFFSET %s
"""
# What each `sort_by` orders by, in the query above (created_at is ISO text: it sorts as time).
_PG_ORDER = {
    "thread_id": "value->>'thread_id'",
    "status": "status",
    "created_at": "value->>'created_at'",
    "updated_at": "updated_at",
}


async def thread_status(p: Persistence, thread_id: str) -> ThreadStatus:
    """The thread's status, from its latest run."""
    runs = await p.runs.list_for_thread(thread_id, 1)
    return RUN_TO_THREAD.get(runs[0].status, "idle") if runs else "idle"  # type: ignore[return-value]


async def search_threads(
    p: Persistence,
    tenant: str,
    metadata: dict[str, Any],
    status: ThreadStatus | None,
    limit: int,
    offset: int,
    sort_by: SortBy = "updated_at",
    ascending: bool = False,
    ids: list[str] | None = None,
) -> list[tuple[dict[str, Any], ThreadStatus]]:
    """The tenant's threads among `ids` (all when None) whose metadata contains `metadata`, with
    `status` when given, ordered by `sort_by` (the most recently active first by default; ties
    by thread id), `limit` after `offset`."""
    prefix = ".".join(thread_namespace(tenant))
    if p.kind == "postgres":
        query = _PG_SEARCH.format(column=_PG_ORDER[sort_by], order="ASC" if ascending else "DESC")
        params = (prefix, json.dumps(metadata), ids, ids, status, status, limit, offset)
        async with p.runs.transaction() as conn:
            rows = await (await conn.execute(query, params)).fetchall()
        return [(row["value"], row["status"]) for row in rows]
    wanted = None if ids is None else set(ids)
    found: list[tuple[dict[str, Any], ThreadStatus, Any]] = []
    for item in await p.store.asearch(thread_namespace(tenant), limit=100_000):
        record = dict(item.value)
        if wanted is not None and record["thread_id"] not in wanted:
            continue
        if not contains(record.get("metadata") or {}, metadata):
            continue
        record_status = await thread_status(p, record["thread_id"])
        if status is None or record_status == status:
            keys = {
                "thread_id": record["thread_id"],
                "status": record_status,
                "created_at": record["created_at"],
                "updated_at": item.updated_at,
            }
            found.append((record, record_status, keys[sort_by]))
    found.sort(key=lambda f: f[0]["thread_id"])  # ties in thread id order, whichever the order
    found.sort(key=lambda f: f[2], reverse=not ascending)
    return [(record, found_status) for record, found_status, _ in found[offset : offset + limit]]
