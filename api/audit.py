"""The audit trail: one JSON object per line on the `keel.audit` logger.

Events: `auth_failed`, `not_found` / `cross_tenant` (a thread or run that is missing for the caller,
and whether it exists for another tenant), `thread_deleted`, `documents_ingested`,
`document_deleted`, `rate_limited`. Lines carry ids, tenants and reasons only: never credentials,
message text, JWT subjects or client addresses.
"""

import logging
import sys
from typing import Any

from fastapi import Request

from runtime.logs import JsonFormatter

log = logging.getLogger("keel.audit")


def configure() -> None:
    """Writes audit lines as JSON to stderr whatever the log format, once."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def emit(event: str, **fields: Any) -> None:
    """Logs one audit event (fields that are None are left out)."""
    extra = {"audit": event} | {k: v for k, v in fields.items() if v is not None}
    log.info(event, extra=extra)


def _where(request: Request) -> dict[str, Any]:
    return {"method": request.method, "path": request.url.path}


def tenant_of(request: Request) -> str | None:
    """The tenant resolved for this request, if any."""
    return getattr(request.state, "tenant", None)


def auth_failed(request: Request, reason: str, method: str | None) -> None:
    """A request without valid credentials (reason: missing, invalid_key, expired, ...)."""
    emit("auth_failed", reason=reason, auth_method=method, **_where(request))


def rate_limited(request: Request, tenant: str | None, kind: str, retry_after_s: float) -> None:
    """A request refused by a rate limit or quota (no tenant: failed credential checks)."""
    emit(
        "rate_limited",
        tenant=tenant,
        limit=kind,
        retry_after_s=round(retry_after_s, 2),
        **_where(request),
    )


def action(request: Request, event: str, **fields: Any) -> None:
    """A state-changing action (thread deletion, document ingestion or deletion)."""
    emit(event, tenant=tenant_of(request), **fields, **_where(request))


async def not_found(request: Request) -> None:
    """Records a 404 on a thread or run; `cross_tenant` when it belongs to another tenant.

    The check is two indexed lookups in the runs table (by run id, else any run of the thread),
    so a thread of another tenant that never had a run is logged as a plain `not_found`.
    """
    params = request.path_params
    thread_id, run_id = params.get("thread_id"), params.get("run_id")
    tenant = tenant_of(request)
    if thread_id is None or tenant is None:
        return
    owner: str | None = None
    try:
        runs = request.app.state.keel.persistence.runs
        if run_id is not None:
            try:
                owner = (await runs.get(run_id)).tenant
            except Exception:
                owner = None
        if owner is None:
            found = await runs.list_for_thread(thread_id, 1)
            owner = found[0].tenant if found else None
    except Exception:  # the audit must never turn a 404 into a 500
        owner = None
    cross = owner is not None and owner != tenant
    emit(
        "cross_tenant" if cross else "not_found",
        tenant=tenant,
        owner_tenant=owner if cross else None,
        thread_id=thread_id,
        run_id=run_id,
        **_where(request),
    )
