"""A2A (Agent2Agent protocol 0.3, JSON-RPC binding) at `/a2a/{assistant_id}`, with each
assistant's agent card at `/.well-known/agent-card.json?assistant_id=...`.

A task is a run and its context a thread: `message/send` and `message/stream` start a run as
`/runs/wait` and `/runs/stream` do (a message naming a `contextId` continues that thread),
`tasks/get` reads it, `tasks/cancel` stops it. A run stopped at a breakpoint (message metadata
`interrupt_before`/`interrupt_after`, as on the Agent Server's run creation) is `input-required`;
a follow-up message naming the task continues it, as a run on the thread recorded under the same
task. The card and the endpoint are authenticated like every other route: another tenant's
assistant, thread or task is simply not found."""

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.agent import jsonrpc
from api.agent.answers import answer_fields, answer_text
from api.agent.assistants import AssistantIdPath, load_assistant
from api.agent.runs import start_run
from api.agent.schemas import NodeNames, RunCreate
from api.deps import Keel, KeelDep, TenantDep
from api.ratelimit import enforce_token_quota
from api.schemas import THREAD_ID_PATTERN
from checkpoints.runs import TERMINAL_EVENTS, Run
from checkpoints.threads import create_thread, get_thread
from graph.errors import KeelError, NotFound
from runtime.agent_runs import iso

router = APIRouter(tags=["agent: a2a"])
PROTOCOL_VERSION = "0.3.0"
TASK_KEY = "a2a_task_id"  # run metadata: the task a continuing run belongs to
# JSON-RPC and A2A error codes.
METHOD_NOT_FOUND, INVALID_PARAMS = -32601, -32602
TASK_NOT_FOUND, TASK_NOT_CANCELABLE = -32001, -32002
STATES = {"pending": "submitted", "running": "working", "succeeded": "completed"}
STATES |= {"failed": "failed", "cancelled": "canceled", "interrupted": "failed"}
FINAL = frozenset({"completed", "failed", "canceled", "rejected", "input-required"})


class RpcError(Exception):
    """A JSON-RPC error answered in the response body."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Part(BaseModel):
    """A message part; keel reads the text parts."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["text", "data", "file"]
    text: str | None = None


class Message(BaseModel):
    """The user's message."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user"]
    parts: list[Part] = Field(min_length=1, max_length=100)
    message_id: str = Field(alias="messageId", min_length=1, max_length=200)
    context_id: str | None = Field(default=None, alias="contextId", pattern=THREAD_ID_PATTERN)
    task_id: str | None = Field(default=None, alias="taskId", pattern=THREAD_ID_PATTERN)
    kind: Literal["message"] = "message"
    metadata: dict[str, Any] | None = None


class Breakpoints(BaseModel):
    """Message metadata keel reads: where the run stops (then `input-required`)."""

    interrupt_before: NodeNames | None = None
    interrupt_after: NodeNames | None = None


class SendParams(BaseModel):
    """`message/send` and `message/stream`."""

    model_config = ConfigDict(extra="allow")

    message: Message
    configuration: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class TaskParams(BaseModel):
    """`tasks/get` and `tasks/cancel`."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=THREAD_ID_PATTERN)
    history_length: int | None = Field(default=None, alias="historyLength", ge=0)


def _params(model: type[BaseModel], params: dict[str, Any]) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise RpcError(INVALID_PARAMS, problems[:1000]) from None


def agent_card(assistant: dict[str, Any], url: str) -> dict[str, Any]:
    """The assistant's agent card (A2A 0.3): one skill, answering from the documents."""
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "name": assistant["name"],
        "description": assistant.get("description")
        or "answers questions from its documents, with citations",
        "url": url,
        "preferredTransport": "JSONRPC",
        "version": str(assistant["version"]),
        "capabilities": {"streaming": True, "pushNotifications": False},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain", "application/json"],
        "skills": [
            {
                "id": "answer",
                "name": "Cited answers",
                "description": "answers a question from the documents, citing the passages "
                "it used; a message in the same context is a follow-up",
                "tags": ["rag", "qa", "citations"],
            }
        ],
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        },
        "security": [{"apiKey": []}, {"bearer": []}],
    }


def _agent_message(task: str, context: str, text: str) -> dict[str, Any]:
    return {
        "kind": "message",
        "role": "agent",
        "messageId": f"{task}-status",
        "taskId": task,
        "contextId": context,
        "parts": [{"kind": "text", "text": text}],
    }


def _state(run: Run) -> str:
    if run.status == "interrupted" and run.result is not None:
        return "input-required"  # stopped at a breakpoint: a follow-up continues it
    return STATES[run.status]


def task_body(task_id: str, run: Run) -> dict[str, Any]:
    """The task `task_id` as its latest run `run` leaves it."""
    state = _state(run)
    status: dict[str, Any] = {"state": state, "timestamp": iso(run.updated_at)}
    task: dict[str, Any] = {
        "kind": "task",
        "id": task_id,
        "contextId": run.thread_id,
        "status": status,
        "artifacts": [],
        "metadata": {"run_id": run.run_id, "assistant_id": run.request.get("assistant_id")},
    }
    if state == "completed" and run.result is not None:
        task["artifacts"] = [_artifact(task_id, run, run.result)]
    elif state == "input-required":
        text = "stopped at a breakpoint: send a message with this taskId to continue"
        status["message"] = _agent_message(task_id, run.thread_id, text)
    elif state in ("failed", "canceled") and run.error:
        status["message"] = _agent_message(task_id, run.thread_id, run.error)
    return task


def _artifact(task_id: str, run: Run, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "artifactId": f"{task_id}-answer",
        "name": "answer",
        "parts": [
            {"kind": "text", "text": answer_text(result)},
            {"kind": "data", "data": answer_fields(run, result)},
        ],
    }


async def _latest(keel: Keel, tenant: str, task_id: str) -> Run:
    """The task's latest run: the run it started as, or the last one that continued it."""
    try:
        first = await keel.persistence.runs.get(task_id, tenant=tenant)
    except NotFound:
        raise RpcError(TASK_NOT_FOUND, f"task {task_id} not found") from None
    for run in await keel.persistence.runs.list_for_thread(first.thread_id):  # newest first
        if (run.request.get("metadata") or {}).get(TASK_KEY) == task_id:
            return run
    return first


async def _submit(
    keel: Keel, tenant: str, assistant: dict[str, Any], params: SendParams, request: Request
) -> tuple[str, Run]:
    """Starts the message's run: a new task on a new thread or the given context, or the next
    run of an `input-required` task. Returns the task id and the run."""
    message = params.message
    breakpoints = _params(Breakpoints, message.metadata or {})
    question = "".join(p.text or "" for p in message.parts if p.kind == "text").strip()
    body: dict[str, Any] = {
        "assistant_id": assistant["assistant_id"],
        "stream_mode": [],
        **breakpoints.model_dump(exclude_none=True),
    }
    task_id, thread_id = None, message.context_id
    if message.task_id is not None:
        latest = await _latest(keel, tenant, message.task_id)
        if _state(latest) != "input-required":
            raise RpcError(INVALID_PARAMS, f"task {message.task_id} is {_state(latest)}")
        if thread_id not in (None, latest.thread_id):
            raise RpcError(INVALID_PARAMS, "contextId is not the task's context")
        task_id, thread_id = message.task_id, latest.thread_id
        body["metadata"] = {TASK_KEY: task_id}  # continues the thread from its breakpoint
    elif not question:
        raise RpcError(INVALID_PARAMS, "message has no text part")
    else:
        body["input"] = {"messages": [{"role": "user", "content": question}]}
    await enforce_token_quota(request, tenant, keel.limiter)  # a 429, as on every run route
    try:
        if thread_id is None:
            metadata = {"assistant_id": assistant["assistant_id"], "source": "a2a"}
            thread_id = (await create_thread(keel.persistence, tenant, metadata))["thread_id"]
        else:
            await get_thread(keel.persistence, tenant, thread_id)
        run = await start_run(keel, tenant, thread_id, RunCreate.model_validate(body))
    except NotFound as exc:
        raise RpcError(TASK_NOT_FOUND if task_id else INVALID_PARAMS, str(exc)) from None
    except KeelError as exc:
        raise RpcError(INVALID_PARAMS, f"{exc.code}: {exc}") from None
    return task_id or run.run_id, run


async def _send(
    keel: Keel, tenant: str, assistant: dict[str, Any], params: SendParams, request: Request
) -> dict[str, Any]:
    task_id, run = await _submit(keel, tenant, assistant, params, request)
    if (params.configuration or {}).get("blocking") is not False:
        await keel.runs.outcome(run)
    return task_body(task_id, await keel.persistence.runs.get(run.run_id))


async def _cancel(keel: Keel, tenant: str, params: TaskParams) -> dict[str, Any]:
    run = await _latest(keel, tenant, params.id)
    if run.status not in ("pending", "running"):
        raise RpcError(TASK_NOT_CANCELABLE, f"task {params.id} is {_state(run)}")
    run = await keel.runs.cancel(run)
    await keel.runs.outcome(run)
    return task_body(params.id, await keel.persistence.runs.get(run.run_id))


async def _updates(keel: Keel, task_id: str, run: Run) -> AsyncIterator[dict[str, Any]]:
    """The task, then a working status per node, then its answer and final status."""
    yield task_body(task_id, run)
    context = run.thread_id
    async for _, name, data in keel.runs.follow(run, 0):
        if name == "node.started":
            text = f"{data['node']} started"
            yield _status(
                task_id, context, "working", False, _agent_message(task_id, context, text)
            )
        elif name in TERMINAL_EVENTS:
            break
    ended = await keel.persistence.runs.get(run.run_id)
    task = task_body(task_id, ended)
    for artifact in task["artifacts"]:
        yield {
            "kind": "artifact-update",
            "taskId": task_id,
            "contextId": context,
            "artifact": artifact,
            "lastChunk": True,
        }
    yield {
        "kind": "status-update",
        "taskId": task_id,
        "contextId": context,
        "status": task["status"],
        "final": True,
    }


def _status(
    task: str, context: str, state: str, final: bool, message: dict[str, Any]
) -> dict[str, Any]:
    return {
        "kind": "status-update",
        "taskId": task,
        "contextId": context,
        "status": {"state": state, "message": message},
        "final": final,
    }


STREAMING = ("message/stream", "tasks/resubscribe")  # methods answered with an SSE stream
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the JSON-RPC response (an error included), or for `message/stream` and "
        "`tasks/resubscribe` an SSE stream of JSON-RPC responses",
        "content": {"application/json": {}, "text/event-stream": {}},
    },
    400: {"description": "not a JSON-RPC request", "content": {"application/json": {}}},
}


@router.post("/a2a/{assistant_id}", openapi_extra=jsonrpc.OPENAPI, responses=RESPONSES)
async def rpc(
    assistant_id: AssistantIdPath, request: Request, keel: KeelDep, tenant: TenantDep
) -> Any:
    """A2A's JSON-RPC methods: `message/send`, `message/stream`, `tasks/get`, `tasks/cancel`,
    `tasks/resubscribe` (the task, then its updates from its latest run's start, replayed from
    the run's log: a client that lost its stream misses nothing)."""
    assistant = await load_assistant(keel, tenant, assistant_id)
    envelope = jsonrpc.parse(await request.body())
    if isinstance(envelope, JSONResponse):
        return envelope
    try:
        if envelope.method == "message/stream":
            task_id, run = await _submit(
                keel, tenant, assistant, _params(SendParams, envelope.params), request
            )
            return _stream(keel, envelope.id, task_id, run)
        if envelope.method == "tasks/resubscribe":  # the task from its latest run's start
            task_params = _params(TaskParams, envelope.params)
            run = await _latest(keel, tenant, task_params.id)
            return _stream(keel, envelope.id, task_params.id, run)
        if envelope.method == "message/send":
            params = _params(SendParams, envelope.params)
            result = await _send(keel, tenant, assistant, params, request)
        elif envelope.method == "tasks/get":
            task_params = _params(TaskParams, envelope.params)
            result = task_body(task_params.id, await _latest(keel, tenant, task_params.id))
        elif envelope.method == "tasks/cancel":
            result = await _cancel(keel, tenant, _params(TaskParams, envelope.params))
        else:
            raise RpcError(METHOD_NOT_FOUND, f"method {envelope.method[:80]!r} not found")
    except RpcError as exc:
        error = jsonrpc.reply(envelope.id, error=(exc.code, exc.message))
        if envelope.method in STREAMING:  # a stream's client reads events, not a body
            return EventSourceResponse(_one(ServerSentEvent(data=json.dumps(error))))
        return error
    return jsonrpc.reply(envelope.id, result)


async def _one(event: ServerSentEvent) -> AsyncIterator[ServerSentEvent]:
    yield event


def _stream(keel: Keel, rpc_id: str | int | None, task_id: str, run: Run) -> EventSourceResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        async for update in _updates(keel, task_id, run):
            yield ServerSentEvent(data=json.dumps(jsonrpc.reply(rpc_id, update)))

    return EventSourceResponse(events(), ping=keel.settings.sse_ping_s)


@router.get("/.well-known/agent-card.json")
async def card(
    request: Request,
    keel: KeelDep,
    tenant: TenantDep,
    assistant_id: Annotated[
        str, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a graph id or assistant UUID")
    ],
) -> dict[str, Any]:
    """The assistant's A2A agent card (its endpoint: `/a2a/{assistant_id}`)."""
    assistant = await load_assistant(keel, tenant, assistant_id)
    return agent_card(assistant, str(request.url_for("rpc", assistant_id=assistant_id)))
