"""`GET /threads/{thread_id}/stream`: every run of a thread in one SSE stream, the one running
now and each one after it, resumable exactly by `Last-Event-ID` (`<run_id>:<seq>`), from the
durable event log, on any replica."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.agent.runs import SSE_RESPONSES, sse_frame, sse_ping
from api.deps import Keel, KeelDep, TenantDep, ThreadIdPath
from checkpoints.runs import ACTIVE, TERMINAL_EVENTS, Run
from checkpoints.threads import get_thread
from graph.errors import InvalidInput, NotFound

router = APIRouter(tags=["agent: threads"])
ThreadStreamMode = Literal["run_modes", "lifecycle"]
# How often a stream with no run to follow looks for the thread's next one.
NEXT_RUN_POLL_S = 0.25
# The runs looked at for the next one (a thread's runs run one at a time).
RUNS_SCANNED = 1000


def _modes(stream_mode: list[str] | None, stream_modes: str | None) -> set[str]:
    """The thread stream modes asked for: the SDKs send `stream_mode` (repeated), the
    reference server reads `stream_modes` (comma-separated); `run_modes` when neither."""
    asked = [*(stream_mode or []), *(stream_modes.split(",") if stream_modes else [])]
    modes = {m.strip() for m in asked if m.strip()} or {"run_modes"}
    if "state_update" in modes:
        raise InvalidInput("keel streams no state_update events: use run_modes or lifecycle")
    unknown = sorted(modes - set(get_args(ThreadStreamMode)))
    if unknown:
        raise InvalidInput(f"unknown thread stream_mode {unknown}: use run_modes or lifecycle")
    return modes


async def _oldest_first(keel: Keel, thread_id: str) -> list[Run]:
    runs = await keel.persistence.runs.list_for_thread(thread_id, RUNS_SCANNED)
    return runs[::-1]


async def _start(
    keel: Keel, thread_id: str, last_event_id: str | None
) -> tuple[list[str], int, set[str]]:
    """The runs already begun that the stream starts with, the sequence number to resume the
    first one after, and every run id the thread has now (later runs are new): from
    `Last-Event-ID`, its run and every later one; else its pending and running runs, from
    their start."""
    runs = await _oldest_first(keel, thread_id)
    ids = [r.run_id for r in runs]
    if not last_event_id or last_event_id in ("-1", "0"):  # "from the start" (JS SDK, Redis)
        return [r.run_id for r in runs if r.status in ACTIVE], 0, set(ids)
    run_id, _, seq = last_event_id.partition(":")
    if run_id not in ids or not seq.isdigit() or len(seq) > 9:
        raise InvalidInput(
            f"Last-Event-ID {last_event_id[:80]!r} names no event of this thread's runs"
        )
    return ids[ids.index(run_id) :], int(seq), set(ids)


def _run_done(run_id: str, seq: int) -> ServerSentEvent:
    data = json.dumps({"status": "run_done", "run_id": run_id})
    return ServerSentEvent(data=data, event="metadata", id=f"{run_id}:{seq}")


async def _frames(
    keel: Keel,
    tenant: str,
    thread_id: str,
    start: tuple[list[str], int, set[str]],
    modes: set[str],
) -> AsyncIterator[ServerSentEvent]:
    queued, after, seen = start
    everything = "run_modes" in modes
    while not keel.runs.closed:
        if not queued:
            await asyncio.sleep(NEXT_RUN_POLL_S)
            try:  # a deleted thread ends its stream
                await get_thread(keel.persistence, tenant, thread_id)
            except NotFound:
                return
            fresh = [r.run_id for r in await _oldest_first(keel, thread_id)]
            queued = [run_id for run_id in fresh if run_id not in seen]
            seen.update(queued)
            continue
        try:
            run = await keel.persistence.runs.get(queued.pop(0))
        except NotFound:  # deleted since it was listed
            after = 0
            continue
        async for seq, name, data in keel.runs.follow(run, after):
            # lifecycle: a run's start (its `metadata` frame) and its end only.
            if everything or name == "run.started":
                frame = sse_frame(run.run_id, seq, name, data)
                if frame is not None:
                    yield frame
            if name in TERMINAL_EVENTS:
                yield _run_done(run.run_id, seq)
        after = 0


@router.get(
    "/threads/{thread_id}/stream",
    response_class=EventSourceResponse,
    responses=SSE_RESPONSES,
)
async def join_thread_stream(
    thread_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
    stream_mode: Annotated[list[str] | None, Query(max_length=3)] = None,
    stream_modes: Annotated[str | None, Query(max_length=100)] = None,
) -> EventSourceResponse:
    """The thread's runs as one stream: the running one and each later one, each run's frames
    (the modes it was started with; `lifecycle`: only its `metadata` frames) and then
    `metadata` `{"status": "run_done", "run_id"}`; `Last-Event-ID` resumes exactly."""
    await get_thread(keel.persistence, tenant, thread_id)
    modes = _modes(stream_mode, stream_modes)
    start = await _start(keel, thread_id, last_event_id)
    frames: AsyncIterator[Any] = _frames(keel, tenant, thread_id, start, modes)
    return EventSourceResponse(frames, ping=keel.settings.sse_ping_s, ping_message_factory=sse_ping)
