"""Thread search for the Agent Server API: metadata containment, status, pagination.

On Postgres one SQL query over the store's (prefix, key) primary key, with each thread's status
from its latest run (`keel_runs_thread` index); the embedded backends filter in memory."""

import json
from typing import Any, Literal

from checkpoints import Persistence
from checkpoints.containment import contains
from checkpoints.threads import thread_namespace

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
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
) t
WHERE %s::text IS NULL OR status = %s::text
ORDER BY updated_at {order}, value->>'thread_id'
LIMIT %s OFFSET %s
"""


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
    ascending: bool = False,
) -> list[tuple[dict[str, Any], ThreadStatus]]:
    """The tenant's threads whose metadata contains `metadata`, with `status` when given, most
    recently active first (or oldest first with `ascending`), `limit` after `offset`."""
    prefix = ".".join(thread_namespace(tenant))
    if p.kind == "postgres":
        query = _PG_SEARCH.format(order="ASC" if ascending else "DESC")
        params = (prefix, json.dumps(metadata), status, status, limit, offset)
        async with p.runs.transaction() as conn:
            rows = await (await conn.execute(query, params)).fetchall()
        return [(row["value"], row["status"]) for row in rows]
    items = await p.store.asearch(thread_namespace(tenant), limit=100_000)
    found = []
    for item in sorted(items, key=lambda i: i.updated_at, reverse=not ascending):
        record = dict(item.value)
        if not contains(record.get("metadata") or {}, metadata):
            continue
        record_status = await thread_status(p, record["thread_id"])
        if status is None or record_status == status:
            found.append((record, record_status))
    return found[offset : offset + limit]
