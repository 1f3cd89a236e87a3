"""Runs on a thread: start (streamed, waited for, or in the background), follow, cancel, resume."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import Keel, KeelDep, TenantDep, ThreadIdPath
from api.errors import MalformedLastEventId, RunFailed, error_responses
from api.ratelimit import enforce_token_quota
from api.schemas import RunInfo, RunRequest, RunResult, iso_utc
from api.streaming import parse_last_event_id, to_sse
from checkpoints.runs import TERMINAL_EVENTS, Run
from checkpoints.threads import get_thread
from graph.errors import InvalidInput
from integrations import metrics

router = APIRouter(prefix="/v1/threads/{thread_id}/runs", tags=["runs"])
# Starting or resuming a run spends LLM tokens: refused once the tenant's daily quota is used.
QUOTA = [Depends(enforce_token_quota)]
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "the run's events"}
}
# Starting a run: a bad body, an unknown thread, or a run in progress on it (strategy reject).
START_ERRORS = error_responses(400, 404, 409)
# Waiting for a result: the run was cancelled (409) or failed retryably (503).
RESULT_ERRORS = error_responses(409, 503)
NOT_FOUND = error_responses(404)
# When a draining replica ends a stream early: reconnect (with Last-Event-ID) after this long.
RETRY_MS = 1000
# Set on results not answered at full service: no_rerank, cached or documents_only.
DEGRADED_HEADER = "X-Keel-Degraded"


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping")


def _info(run: Run) -> RunInfo:
    return RunInfo(
        run_id=run.run_id,
        thread_id=run.thread_id,
        status=run.status,
        multitask_strategy=run.strategy,
        attempts=run.attempts,
        error=run.error,
        created_at=iso_utc(run.created_at),
        updated_at=iso_utc(run.updated_at),
    )


def _stream(keel: Keel, run: Run, after: int, cancel_on_disconnect: bool) -> EventSourceResponse:
    requested = time.perf_counter()

    async def events() -> AsyncIterator[ServerSentEvent]:
        finished, first, last = False, True, ""
        metrics.SSE_ACTIVE.inc()
        try:
            async for seq, name, data in keel.runs.follow(run, after):
                if first:
                    metrics.FIRST_EVENT.observe(time.perf_counter() - requested)
                    first = False
                last = name
                yield to_sse(run.run_id, seq, name, data)
            finished = True
            if last not in TERMINAL_EVENTS:  # this replica drained: resume elsewhere
                yield ServerSentEvent(comment="replica draining; reconnect", retry=RETRY_MS)
        finally:
            metrics.SSE_ACTIVE.dec()
            if cancel_on_disconnect and not finished:
                # The client went away mid-run and asked for the run to go with it.
                asyncio.get_running_loop().create_task(keel.runs.cancel(run))

    return EventSourceResponse(events(), ping=keel.settings.sse_ping_s, ping_message_factory=_ping)


async def _result(keel: Keel, run: Run, response: Response) -> RunResult:
    name, data = await keel.runs.outcome(run)
    if name == "run.error":
        raise RunFailed(data["code"], data["message"], data["retryable"])
    result = RunResult(**data)
    if result.service_level != "full":
        response.headers[DEGRADED_HEADER] = result.service_level
    return result


async def _submit(keel: Keel, tenant: str, thread_id: str, body: RunRequest) -> Run:
    return await keel.runs.submit(
        tenant,
        thread_id,
        body.message,
        body.context.model_dump(),
        multitask_strategy=body.multitask_strategy,
        durability=body.durability,
    )


async def _run(keel: Keel, tenant: str, thread_id: str, run_id: str) -> Run:
    await get_thread(keel.persistence, tenant, thread_id)
    return await keel.persistence.runs.get(run_id, tenant=tenant, thread_id=thread_id)


@router.post(
    "/stream",
    response_class=EventSourceResponse,
    responses={**SSE_RESPONSES, **START_ERRORS},
    dependencies=QUOTA,
)
async def stream(
    thread_id: ThreadIdPath,
    body: RunRequest,
    keel: KeelDep,
    tenant: TenantDep,
) -> EventSourceResponse:
    """Starts a run and streams its events (`run.started` ... `run.finished` / `run.error`).
    The run goes on if the client disconnects, unless `on_disconnect` is `cancel`."""
    await get_thread(keel.persistence, tenant, thread_id)
    run = await _submit(keel, tenant, thread_id, body)
    return _stream(keel, run, 0, body.on_disconnect == "cancel")


@router.post("/wait", responses={**START_ERRORS, **RESULT_ERRORS}, dependencies=QUOTA)
async def wait(
    thread_id: ThreadIdPath,
    body: RunRequest,
    keel: KeelDep,
    tenant: TenantDep,
    response: Response,
) -> RunResult:
    """Starts a run and returns its result without streaming."""
    await get_thread(keel.persistence, tenant, thread_id)
    run = await _submit(keel, tenant, thread_id, body)
    return await _result(keel, run, response)


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=START_ERRORS, dependencies=QUOTA)
async def create(
    thread_id: ThreadIdPath, body: RunRequest, keel: KeelDep, tenant: TenantDep
) -> RunInfo:
    """Starts a background run and returns its id at once."""
    await get_thread(keel.persistence, tenant, thread_id)
    return _info(await _submit(keel, tenant, thread_id, body))


@router.get("", responses=NOT_FOUND)
async def list_runs(
    thread_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunInfo]:
    """The thread's runs, newest first."""
    await get_thread(keel.persistence, tenant, thread_id)
    return [_info(r) for r in await keel.persistence.runs.list_for_thread(thread_id, limit)]


@router.get("/{run_id}", responses=NOT_FOUND)
async def read(
    thread_id: ThreadIdPath, run_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep
) -> RunInfo:
    """A run's status: pending, running, succeeded, failed, cancelled or interrupted."""
    return _info(await _run(keel, tenant, thread_id, run_id))


@router.get("/{run_id}/wait", responses={**NOT_FOUND, **RESULT_ERRORS})
async def join(
    thread_id: ThreadIdPath,
    run_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    response: Response,
) -> RunResult:
    """Waits for a run's result."""
    return await _result(keel, await _run(keel, tenant, thread_id, run_id), response)


@router.get(
    "/{run_id}/stream",
    response_class=EventSourceResponse,
    responses={**SSE_RESPONSES, **error_responses(400, 404)},
)
async def follow(
    thread_id: ThreadIdPath,
    run_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
) -> EventSourceResponse:
    """Replays the events after `Last-Event-ID` exactly, then the live rest, from any replica."""
    run = await _run(keel, tenant, thread_id, run_id)
    try:
        after = parse_last_event_id(run_id, last_event_id)
    except MalformedLastEventId:
        metrics.STREAM_RESUMES.labels("invalid").inc()
        raise
    if after:
        metrics.STREAM_RESUMES.labels("pruned" if run.events_pruned else "resumed").inc()
    return _stream(keel, run, after, False)


@router.post("/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED, responses=NOT_FOUND)
async def cancel(
    thread_id: ThreadIdPath, run_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep
) -> RunInfo:
    """Stops a run on whichever replica runs it; the thread stays usable."""
    return _info(await keel.runs.cancel(await _run(keel, tenant, thread_id, run_id)))


@router.post(
    "/{run_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    responses=NOT_FOUND,
    dependencies=QUOTA,
)
async def resume(
    thread_id: ThreadIdPath, run_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep
) -> RunInfo:
    """Continues an interrupted (or failed) run from its last checkpoint."""
    run = await _run(keel, tenant, thread_id, run_id)
    if run.status not in ("interrupted", "failed"):
        raise InvalidInput(f"run {run_id} is {run.status}; only interrupted or failed runs resume")
    return _info(await keel.runs.resume(run))
