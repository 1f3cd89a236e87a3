"""Runs on a thread: start (streamed, waited for, or in the background), follow, cancel, resume."""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import Keel, KeelDep, TenantDep, ThreadIdPath
from api.errors import MalformedLastEventId, RunFailed, error_responses
from api.ratelimit import enforce_token_quota
from api.schemas import RunInfo, RunRequest, RunResult
from api.streaming import to_sse
from checkpoints.runs import Run
from checkpoints.threads import get_thread
from graph.errors import InvalidInput

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
T = TypeVar("T")


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
        created_at=run.created_at,
        updated_at=run.updated_at,
    )


def _stream(keel: Keel, run: Run, after: int, cancel_on_disconnect: bool) -> EventSourceResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        finished = False
        try:
            async for seq, name, data in _until_drained(keel, keel.runs.follow(run, after)):
                yield to_sse(run.run_id, seq, name, data)
            finished = True
            if keel.runs.drained.is_set():
                # Handed off, not ended: the client reconnects with Last-Event-ID elsewhere.
                yield ServerSentEvent(retry=keel.settings.drain_retry_ms, comment="draining")
        finally:
            if cancel_on_disconnect and not finished:
                # The client went away mid-run and asked for the run to go with it.
                asyncio.get_running_loop().create_task(keel.runs.cancel(run))

    return EventSourceResponse(events(), ping=keel.settings.sse_ping_s, ping_message_factory=_ping)


async def _until_drained(keel: Keel, source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Yields from `source` until it ends or this replica has drained."""
    drained = asyncio.ensure_future(keel.runs.drained.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(source))
            await asyncio.wait({step, drained}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
                return
            try:
                yield step.result()
            except StopAsyncIteration:
                return
    finally:
        drained.cancel()
        await source.aclose()  # type: ignore[attr-defined]


async def _result(keel: Keel, run: Run) -> RunResult:
    name, data = await keel.runs.outcome(run)
    if name == "run.error":
        raise RunFailed(data["code"], data["message"], data["retryable"])
    return RunResult(**data)


async def _submit(keel: Keel, tenant: str, thread_id: str, body: RunRequest) -> Run:
    return await keel.runs.submit(
        tenant,
        thread_id,
        body.message,
        body.context.model_dump(),
        multitask_strategy=body.multitask_strategy,
        durability=body.durability,
    )


def parse_last_event_id(run_id: str, value: str | None) -> int:
    """The sequence number in `Last-Event-ID: <run_id>:<seq>` (0 when absent)."""
    if value is None or value == "":
        return 0
    prefix, _, seq = value.partition(":")
    if prefix != run_id or not seq.isdigit() or len(seq) > 9:
        raise MalformedLastEventId(
            f"malformed Last-Event-ID {value[:80]!r}: expected '{run_id}:<seq>'"
        )
    return int(seq)


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
) -> RunResult:
    """Starts a run and returns its result without streaming."""
    await get_thread(keel.persistence, tenant, thread_id)
    run = await _submit(keel, tenant, thread_id, body)
    return await _result(keel, run)


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
) -> RunResult:
    """Waits for a run's result."""
    return await _result(keel, await _run(keel, tenant, thread_id, run_id))


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
    after = parse_last_event_id(run_id, last_event_id)
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
