"""Runs in the Agent Server's shape, on keel's run manager: rows in `keel_runs`, events from the
durable log (so `join_stream` with `Last-Event-ID` resumes exactly, on any replica)."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import audit
from api.agent.assistants import knobs_of, load_assistant
from api.agent.schemas import RunBatch, RunCreate, RunKnobs
from api.agent.threads import redacted
from api.deps import Keel, KeelDep, TenantDep, ThreadIdPath
from api.ratelimit import enforce_token_quota
from api.streaming import parse_last_event_id
from checkpoints.runs import TERMINAL_EVENTS, Run
from checkpoints.threads import create_thread, delete_thread, get_thread
from graph.builder import NODES
from graph.errors import InvalidInput, NotFound
from runtime.agent_events import PREFIX, STREAM_MODES
from runtime.agent_runs import run_body
from runtime.control import RunControl

router = APIRouter(tags=["agent: runs"])
QUOTA = [Depends(enforce_token_quota)]


def _message(body: RunCreate) -> str | None:
    """The text of the input's last user message: a keel run answers one user message. No
    input: the run continues the thread (or follows its command)."""
    if body.input is None:
        return None
    if body.command is not None:
        raise InvalidInput("a run takes an input or a command, not both")
    messages = body.input.get("messages")
    if isinstance(messages, dict):
        messages = [messages]
    for message in reversed(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict):
            continue
        if message.get("role", message.get("type")) not in ("user", "human"):
            continue
        content = message.get("content")
        if isinstance(content, list):
            parts = [c.get("text", "") for c in content if isinstance(c, dict)]
            content = "".join(p for p in parts if isinstance(p, str))
        if isinstance(content, str) and content.strip():
            return content
    raise InvalidInput('input must hold "messages" with a user message')


def _modes(body: RunCreate) -> list[str]:
    modes = [body.stream_mode] if isinstance(body.stream_mode, str) else body.stream_mode
    unknown = [m for m in modes if m not in STREAM_MODES]
    if unknown:
        raise InvalidInput(f"unsupported stream_mode {unknown}: keel serves {list(STREAM_MODES)}")
    return list(dict.fromkeys(modes))


def _nodes(names: str | list[str] | None, what: str, allowed: tuple[str, ...]) -> list[str] | None:
    """Node names checked against `allowed` ("*": all of them)."""
    if names is None:
        return None
    listed = [names] if isinstance(names, str) else names
    if "*" in listed:
        return list(allowed)
    unknown = sorted(set(listed) - set(allowed))
    if unknown:
        raise InvalidInput(f"{what} names nodes {unknown}; it may name {list(allowed)}")
    return listed


async def _control(keel: Keel, thread_id: str, body: RunCreate, has_message: bool) -> RunControl:
    """The run's command, fork checkpoint and breakpoints, checked; a run with neither a
    message nor a command needs a checkpoint to continue from."""
    control: RunControl = {}
    if body.command is not None:
        command = body.command.model_dump(exclude_none=True)
        for key in ("update", "goto"):  # an empty update or goto writes nothing
            if key in command and not command[key]:
                del command[key]
        if not command:
            raise InvalidInput("command sets none of resume, update, goto")
        if "update" in command:
            command["update"] = redacted(keel, command["update"])
        if "goto" in command:
            command["goto"] = _nodes(command["goto"], "command.goto", NODES)
        control["command"] = command
    checkpoint_id = (body.checkpoint and body.checkpoint.checkpoint_id) or body.checkpoint_id
    if checkpoint_id:
        configurable = {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}
        if await keel.persistence.saver.aget_tuple({"configurable": configurable}) is None:
            raise NotFound(f"checkpoint {checkpoint_id} not found")
        control["checkpoint_id"] = checkpoint_id
    elif not has_message and body.command is None:
        head = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        if await keel.persistence.saver.aget_tuple(head) is None:  # type: ignore[arg-type]
            raise InvalidInput("the thread has nothing to continue: send input.messages")
    # The guard reads the user's message from the run itself (only its redacted form is ever
    # stored): a run cannot stop before it and leave the message to a later run.
    before = _nodes(body.interrupt_before, "interrupt_before", NODES[1:])
    after = _nodes(body.interrupt_after, "interrupt_after", NODES)
    if before:
        control["interrupt_before"] = before
    if after:
        control["interrupt_after"] = after
    return control


def _knobs(assistant: dict[str, Any], body: RunCreate) -> dict[str, Any]:
    """The run's knobs: the defaults, then its assistant's, then the run's own."""
    context = body.context if body.context.model_fields_set else None
    own = knobs_of(body.config, context) or {}
    return RunKnobs.model_validate({**assistant["context"], **own}).model_dump()


@dataclass(frozen=True)
class _Plan:
    """A run checked and ready to submit."""

    assistant_id: str
    knobs: dict[str, Any]
    message: str | None
    control: RunControl
    modes: list[str]


async def _plan(keel: Keel, tenant: str, thread_id: str, body: RunCreate) -> _Plan:
    """Everything about the run `body` asks for checked (4xx), nothing submitted yet."""
    assistant = await load_assistant(keel, tenant, body.assistant_id)
    knobs = _knobs(assistant, body)
    message = _message(body)
    control = await _control(keel, thread_id, body, message is not None)
    modes = _modes(body)
    keel.runs.check(message, knobs, body.webhook)
    return _Plan(assistant["assistant_id"], knobs, message, control, modes)


async def _submit(
    keel: Keel,
    tenant: str,
    thread_id: str,
    body: RunCreate,
    plan: _Plan,
    on_completion: Literal["delete", "keep"],
) -> Run:
    return await keel.runs.submit(
        tenant,
        thread_id,
        plan.message,
        plan.knobs,
        multitask_strategy=body.multitask_strategy,
        durability=body.durability,
        stream_modes=plan.modes,
        subgraphs=body.stream_subgraphs,
        metadata=body.metadata,
        assistant_id=plan.assistant_id,
        control=plan.control,
        webhook=body.webhook,
        on_completion=on_completion,
    )


async def start_run(keel: Keel, tenant: str, thread_id: str, body: RunCreate) -> Run:
    """Starts a run of `body` on the thread (created when missing and `if_not_exists` says so):
    the one run start of this dialect and of the agent protocols (MCP, A2A)."""
    try:
        await get_thread(keel.persistence, tenant, thread_id)
        exists = True
    except NotFound:
        if body.if_not_exists != "create":
            raise
        exists = False
    plan = await _plan(keel, tenant, thread_id, body)
    if not exists:
        await create_thread(keel.persistence, tenant, None, thread_id)
    return await _submit(keel, tenant, thread_id, body, plan, "keep")


async def _start_stateless(keel: Keel, tenant: str, bodies: list[RunCreate]) -> list[Run]:
    """Background runs each on a new thread of its own, deleted once the run has ended (unless
    `on_completion` is `keep`); every run is checked before any is submitted."""
    thread_ids = [uuid.uuid4().hex for _ in bodies]
    plans = [await _plan(keel, tenant, t, b) for t, b in zip(thread_ids, bodies, strict=True)]
    runs = []
    for thread_id, body, plan in zip(thread_ids, bodies, plans, strict=True):
        await create_thread(keel.persistence, tenant, {"stateless": True}, thread_id)
        runs.append(await _submit(keel, tenant, thread_id, body, plan, body.on_completion))
    return runs


def sse_frame(run_id: str, seq: int, name: str, data: dict[str, Any]) -> ServerSentEvent | None:
    """A logged event as the SDKs expect it, or None for keel's own events."""
    sse_id = f"{run_id}:{seq}"
    if name == "run.started":
        return ServerSentEvent(
            data=json.dumps({"run_id": run_id, "attempt": 1}), event="metadata", id=sse_id
        )
    if name == "run.error":
        error = {"error": data["code"], "message": data["message"]}
        return ServerSentEvent(data=json.dumps(error), event="error", id=sse_id)
    if name.startswith(PREFIX):
        mode = name.removeprefix(PREFIX)
        event = "|".join([mode, *data["ns"]])
        return ServerSentEvent(data=json.dumps(data["data"]), event=event, id=sse_id)
    return None


def sse_ping() -> ServerSentEvent:
    """The keep-alive comment between frames."""
    return ServerSentEvent(comment="heartbeat")


def _stream(
    keel: Keel,
    run: Run,
    after: int,
    cancel_on_disconnect: bool,
    tenant_to_clean: str | None = None,
) -> EventSourceResponse:
    async def frames() -> AsyncIterator[ServerSentEvent]:
        finished = False
        try:
            async for seq, name, data in keel.runs.follow(run, after):
                frame = sse_frame(run.run_id, seq, name, data)
                if frame is not None:
                    yield frame
                finished = name in TERMINAL_EVENTS
        finally:
            if cancel_on_disconnect and not finished:
                # The client went away mid-run and asked for the run to go with it.
                asyncio.get_running_loop().create_task(keel.runs.cancel(run))
        if tenant_to_clean is not None:
            await delete_thread(keel.persistence, tenant_to_clean, run.thread_id)

    location = f"/threads/{run.thread_id}/runs/{run.run_id}"
    return EventSourceResponse(
        frames(),
        ping=keel.settings.sse_ping_s,
        ping_message_factory=sse_ping,
        headers={"Location": f"{location}/stream", "Content-Location": location},
    )


async def _result(keel: Keel, run: Run) -> dict[str, Any]:
    """The thread's values after the run, or `{"__error__": ...}` when it failed."""
    name, data = await keel.runs.outcome(run)
    if name == "run.error":
        return {"__error__": {"error": data["code"], "message": data["message"]}}
    state = await keel.graph.aget_state({"configurable": {"thread_id": run.thread_id}})
    return dict(state.values)


async def _run(keel: Keel, tenant: str, thread_id: str, run_id: str) -> Run:
    await get_thread(keel.persistence, tenant, thread_id)
    return await keel.persistence.runs.get(run_id, tenant=tenant, thread_id=thread_id)


SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "the run's frames"}
}


@router.post(
    "/threads/{thread_id}/runs/stream",
    dependencies=QUOTA,
    response_class=EventSourceResponse,
    responses=SSE_RESPONSES,
)
async def stream(
    thread_id: ThreadIdPath, body: RunCreate, keel: KeelDep, tenant: TenantDep
) -> EventSourceResponse:
    """Starts a run and streams its requested modes: `metadata` first, `error` on failure."""
    run = await start_run(keel, tenant, thread_id, body)
    return _stream(keel, run, 0, body.on_disconnect == "cancel")


@router.post("/threads/{thread_id}/runs/wait", dependencies=QUOTA)
async def wait(
    thread_id: ThreadIdPath, body: RunCreate, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """Starts a run and returns the thread's values when it ends."""
    return await _result(keel, await start_run(keel, tenant, thread_id, body))


@router.post("/threads/{thread_id}/runs", dependencies=QUOTA)
async def create(
    thread_id: ThreadIdPath, body: RunCreate, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """Starts a background run."""
    return run_body(await start_run(keel, tenant, thread_id, body))


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    thread_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    status: Annotated[
        Literal["pending", "running", "success", "error", "interrupted"] | None, Query()
    ] = None,
    select: Annotated[list[str] | None, Query(max_length=20)] = None,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first, with `status` when given (`select`: all fields)."""
    await get_thread(keel.persistence, tenant, thread_id)
    runs = await keel.persistence.runs.list_for_thread(thread_id, 100_000)
    bodies = [run_body(r) for r in runs]
    matching = [b for b in bodies if status is None or b["status"] == status]
    return matching[offset : offset + limit]


@router.get("/threads/{thread_id}/runs/{run_id}")
async def read(
    thread_id: ThreadIdPath, run_id: ThreadIdPath, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """A run."""
    return run_body(await _run(keel, tenant, thread_id, run_id))


# The Python SDK sends true/false, the JS SDK 1/0.
CancelOnDisconnect = Annotated[Literal["true", "false", "1", "0"], Query()]
DISCONNECT_POLL_S = 0.5


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join(
    thread_id: ThreadIdPath,
    run_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    request: Request,
    cancel_on_disconnect: CancelOnDisconnect = "false",
) -> dict[str, Any]:
    """Waits for a run and returns the thread's values; with `cancel_on_disconnect`, a client
    that goes away first takes the run with it."""
    run = await _run(keel, tenant, thread_id, run_id)
    if cancel_on_disconnect in ("false", "0"):
        return await _result(keel, run)
    result = asyncio.ensure_future(_result(keel, run))
    while not result.done():
        await asyncio.wait({result}, timeout=DISCONNECT_POLL_S)
        if not result.done() and await request.is_disconnected():
            result.cancel()
            await keel.runs.cancel(run)
            return {}  # nobody is left to read it
    return result.result()


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    response_class=EventSourceResponse,
    responses=SSE_RESPONSES,
)
async def join_stream(
    thread_id: ThreadIdPath,
    run_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
    cancel_on_disconnect: CancelOnDisconnect = "false",
    stream_mode: Annotated[list[str] | None, Query(max_length=10)] = None,
    namespace: Annotated[list[str] | None, Query(max_length=10)] = None,
    checkpoint_id: Annotated[str | None, Query(max_length=200)] = None,
) -> EventSourceResponse:
    """The run's frames after `Last-Event-ID` exactly, then the live rest, from any replica.
    The frames are the modes the run was started with: `stream_mode`, `namespace` and
    `checkpoint_id` (sent by the SDKs) do not narrow them."""
    run = await _run(keel, tenant, thread_id, run_id)
    # "-1" (the JS SDK's) and "0" (a Redis stream's first id) both replay the whole run.
    after = 0 if last_event_id in ("-1", "0") else parse_last_event_id(run_id, last_event_id)
    return _stream(keel, run, after, cancel_on_disconnect in ("true", "1"))


@router.post(
    "/threads/{thread_id}/runs/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses={204: {"description": "with `wait`: the run has stopped"}},
    response_class=Response,
)
async def cancel(
    thread_id: ThreadIdPath,
    run_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    wait: Annotated[Literal["true", "false", "1", "0"], Query()] = "false",
    action: Annotated[Literal["interrupt", "rollback"], Query()] = "interrupt",
) -> Response:
    """Stops a run on whichever replica runs it (`rollback` also drops its checkpoints);
    with `wait`, answers once it has stopped."""
    run = await _run(keel, tenant, thread_id, run_id)
    run = await keel.runs.cancel(run, "rollback" if action == "rollback" else "cancel")
    if wait in ("true", "1"):
        await keel.runs.outcome(run)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.delete(
    "/threads/{thread_id}/runs/{run_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete(
    thread_id: ThreadIdPath,
    run_id: ThreadIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    request: Request,
) -> Response:
    """Removes an ended run and its event log (409 while it runs: cancel it first)."""
    await keel.persistence.runs.delete(await _run(keel, tenant, thread_id, run_id))
    audit.action(request, "run_deleted", thread_id=thread_id, run_id=run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/runs/stream",
    dependencies=QUOTA,
    response_class=EventSourceResponse,
    responses=SSE_RESPONSES,
)
async def stream_stateless(
    body: RunCreate, keel: KeelDep, tenant: TenantDep
) -> EventSourceResponse:
    """A run on a thread of its own, deleted once the stream has ended (unless
    `on_completion` is `keep`)."""
    thread = await create_thread(keel.persistence, tenant, {"stateless": True})
    run = await start_run(keel, tenant, thread["thread_id"], body)
    clean = tenant if body.on_completion != "keep" else None
    return _stream(keel, run, 0, body.on_disconnect == "cancel", tenant_to_clean=clean)


@router.post("/runs/wait", dependencies=QUOTA)
async def wait_stateless(body: RunCreate, keel: KeelDep, tenant: TenantDep) -> dict[str, Any]:
    """A run on a thread of its own: its values, then the thread is deleted (unless
    `on_completion` is `keep`)."""
    thread = await create_thread(keel.persistence, tenant, {"stateless": True})
    try:
        return await _result(keel, await start_run(keel, tenant, thread["thread_id"], body))
    finally:
        if body.on_completion != "keep":
            await delete_thread(keel.persistence, tenant, thread["thread_id"])


@router.post("/runs", dependencies=QUOTA)
async def create_stateless(body: RunCreate, keel: KeelDep, tenant: TenantDep) -> dict[str, Any]:
    """A background run on a thread of its own, deleted once the run has ended (unless
    `on_completion` is `keep`)."""
    return run_body((await _start_stateless(keel, tenant, [body]))[0])


@router.post("/runs/batch", dependencies=QUOTA)
async def create_batch(body: RunBatch, keel: KeelDep, tenant: TenantDep) -> list[dict[str, Any]]:
    """Background runs, each as `POST /runs` would start it; every one is checked before any
    starts (one bad run: 4xx, and none starts)."""
    return [run_body(run) for run in await _start_stateless(keel, tenant, body.root)]
