"""Runs on a thread: streamed over SSE, or waited for."""

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import KeelDep, TenantDep, ThreadIdPath
from api.errors import RunFailed
from api.schemas import RunRequest, RunResult
from api.streaming import TurnRun
from checkpoints.threads import get_thread

router = APIRouter(prefix="/v1/threads/{thread_id}/runs", tags=["runs"])


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping")


@router.post(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the run's events"}},
)
async def stream(
    thread_id: ThreadIdPath, body: RunRequest, keel: KeelDep, tenant: TenantDep
) -> EventSourceResponse:
    """Runs one turn and streams its events (`run.started` ... `run.finished` / `run.error`)."""
    await get_thread(keel.persistence, tenant, thread_id)
    turn = TurnRun(keel, tenant, thread_id, body)

    async def sse() -> AsyncIterator[ServerSentEvent]:
        async for event in turn.events():
            yield ServerSentEvent(data=json.dumps(event.data), event=event.event, id=event.id)

    return EventSourceResponse(sse(), ping=keel.settings.sse_ping_s, ping_message_factory=_ping)


@router.post("/wait")
async def wait(
    thread_id: ThreadIdPath, body: RunRequest, keel: KeelDep, tenant: TenantDep
) -> RunResult:
    """Runs one turn and returns its result without streaming."""
    await get_thread(keel.persistence, tenant, thread_id)
    turn = TurnRun(keel, tenant, thread_id, body)
    async for event in turn.events():
        if event.event == "run.finished":
            return RunResult(**event.data)
        if event.event == "run.error":
            raise RunFailed(event.data["code"], event.data["message"], event.data["retryable"])
    raise RunFailed("internal_error", "the run ended without a result", retryable=True)
