"""MCP at `/mcp` (Streamable HTTP, the official `mcp` SDK's server): each assistant the caller's
tenant sees is a tool; a call runs the graph as `/runs/wait` does and returns the cited answer.

Stateless transport: every POST carries its own request and answers it (as an SSE stream when the
client asked for progress), so any replica serves any call and nothing pins a client to one.
Authentication, tenants and the request rate are the Agent Server routes' own dependencies: the
route below resolves them before the SDK sees the request."""

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Message, Receive, Scope, Send

from api.agent import jsonrpc
from api.agent.answers import answer_fields, answer_text
from api.agent.assistants import default_assistant
from api.agent.runs import start_run
from api.agent.schemas import RunCreate
from api.deps import Keel, TenantDep
from api.errors import RateLimited
from api.ratelimit import enforce_token_quota
from api.schemas import THREAD_ID_PATTERN
from checkpoints.runs import TERMINAL_EVENTS, Run
from checkpoints.threads import create_thread
from graph.errors import KeelError
from runtime.agent_runs import GRAPH_ID

# The least time between two progress notifications of one call (after the first).
PROGRESS_INTERVAL_S = 0.1
TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]+")
# What a call returns besides its text: the client checks it against this schema.
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "citations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "n": {"type": "integer"},
                    "id": {"type": "string"},
                    "source": {"type": "string"},
                    "snippet": {"type": "string"},
                    "section": {"type": "string"},
                },
                "required": ["n", "id", "source", "snippet"],
            },
        },
        "thread_id": {"type": "string"},
        "run_id": {"type": "string"},
        "assistant_id": {"type": "string"},
        "service_level": {"type": "string"},
        "degraded": {"type": "array", "items": {"type": "string"}},
        "cached": {"type": "boolean"},
        "found": {"type": "boolean"},
    },
    "required": ["answer", "citations", "thread_id", "run_id", "service_level", "degraded"],
}


class ToolCall(BaseModel):
    """A tool's arguments: the question, and the thread to continue (a new one without)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="the question to answer from the documents")
    thread_id: Annotated[str, Field(pattern=THREAD_ID_PATTERN)] | None = Field(
        default=None, description="continue this thread (from an earlier call's thread_id)"
    )


def input_schema(max_chars: int) -> dict[str, Any]:
    """Every tool's input schema, with the server's message length limit."""
    schema = ToolCall.model_json_schema()
    schema["properties"]["question"]["maxLength"] = max_chars
    schema.pop("title", None)
    return schema


def tool_names(assistants: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Assistants by tool name: the assistant's name made safe (`[A-Za-z0-9_-]`), with the
    start of its id when that name is empty or already taken."""
    tools: dict[str, dict[str, Any]] = {}
    for assistant in assistants:
        name = TOOL_NAME.sub("_", assistant["name"]).strip("_")[:40]
        if not name or name in tools:
            name = f"{name or 'assistant'}_{assistant['assistant_id'][:8]}"
        tools[name] = assistant
    return tools


async def _tools(keel: Keel, tenant: str) -> dict[str, dict[str, Any]]:
    """The tenant's tools: the default assistant first, then its variants by creation."""
    variants = await keel.persistence.assistants.search(tenant, GRAPH_ID, None, {})
    variants.sort(key=lambda a: (a["created_at"], a["assistant_id"]))
    return tool_names([default_assistant(), *variants])


def _caller(ctx: ServerRequestContext[Any, Any]) -> tuple[Request, Keel, str]:
    request = ctx.request
    assert isinstance(request, Request)  # the Streamable HTTP transport attaches it
    return request, request.app.state.keel, request.state.tenant


async def list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    """The caller's assistants as tools (one page: a tenant keeps a handful)."""
    _, keel, tenant = _caller(ctx)
    schema = input_schema(keel.settings.max_message_chars)
    return types.ListToolsResult(
        tools=[
            types.Tool(
                name=name,
                title=assistant["name"],
                description=assistant.get("description")
                or f"answers questions from the documents, with citations ({name})",
                input_schema=schema,
                output_schema=OUTPUT_SCHEMA,
                annotations=types.ToolAnnotations(read_only_hint=False, open_world_hint=False),
                _meta={"keel/assistant_id": assistant["assistant_id"]},
            )
            for name, assistant in (await _tools(keel, tenant)).items()
        ]
    )


def _failure(code: str, message: str) -> types.CallToolResult:
    """A tool error the calling model can read (not a protocol error: the call was well-formed)."""
    return types.CallToolResult(
        content=[types.TextContent(text=f"{code}: {message}")], is_error=True
    )


async def _progress(
    ctx: ServerRequestContext[Any, Any], keel: Keel, run: Run
) -> tuple[str, dict[str, Any]] | None:
    """Progress notifications until the run ends: the run recorded (naming it and its thread) at
    once, then the node that started last, at most one each `PROGRESS_INTERVAL_S`. The spec asks
    senders to rate-limit: a run of quick nodes costs the client one parse, and a slow node (the
    model writing) is still named while it runs. Returns the terminal event the log ended on."""
    await ctx.session.report_progress(1, None, f"run {run.run_id} on thread {run.thread_id}")
    sent, latest = time.monotonic(), (1, "")
    trailing: asyncio.Task[None] | None = None  # sends `latest` once the interval has passed

    async def report(delay: float) -> None:
        nonlocal sent
        await asyncio.sleep(delay)
        await ctx.session.report_progress(latest[0], None, latest[1])
        sent = time.monotonic()

    try:
        async for _, name, data in keel.runs.follow(run, 0):
            if name in TERMINAL_EVENTS:
                return name, data
            if name == "node.started":
                latest = (latest[0] + 1, f"{data['node']} started")
                if trailing is None or trailing.done():
                    delay = sent + PROGRESS_INTERVAL_S - time.monotonic()
                    trailing = asyncio.create_task(report(max(delay, 0)))
        return None
    finally:  # the run ended, or the call went away: nothing more is reported
        if trailing is not None:
            trailing.cancel()
            await asyncio.wait({trailing})


async def call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    """Runs the tool's assistant on a new thread (or the given one) and returns its answer."""
    request, keel, tenant = _caller(ctx)
    assistant = (await _tools(keel, tenant)).get(params.name)
    if assistant is None:
        raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name[:80]!r}")
    try:
        args = ToolCall.model_validate(params.arguments or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        return _failure("invalid_arguments", problems)
    try:
        await enforce_token_quota(request, tenant, keel.limiter)
        thread_id = args.thread_id
        if thread_id is None:
            metadata = {"assistant_id": assistant["assistant_id"], "source": "mcp"}
            thread_id = (await create_thread(keel.persistence, tenant, metadata))["thread_id"]
        body = RunCreate(
            assistant_id=assistant["assistant_id"],
            input={"messages": [{"role": "user", "content": args.question}]},
            stream_mode=[],
        )
        run = await start_run(keel, tenant, thread_id, body)
    except RateLimited as exc:
        return _failure(exc.code, f"{exc} (retry after {exc.retry_after_s:.0f} s)")
    except KeelError as exc:
        return _failure(exc.code, str(exc))
    ended = False
    try:
        outcome = await _progress(ctx, keel, run)  # sends nothing when the client asked for none
        # A finished run is final; an error in the log may be an attempt that was retried.
        name, data = (
            outcome if outcome and outcome[0] == "run.finished" else await keel.runs.outcome(run)
        )
        ended = True
    finally:
        if not ended:  # the client cancelled the call or went away: the run goes with it
            asyncio.get_running_loop().create_task(keel.runs.cancel(run))
    if name == "run.error":
        return _failure(data["code"], data["message"])
    return types.CallToolResult(
        content=[types.TextContent(text=answer_text(data))],
        structured_content=answer_fields(run, data),
    )


class McpEndpoint:
    """The MCP server and its Streamable HTTP transport, run for as long as the app."""

    def __init__(self, max_message_chars: int) -> None:
        schema = input_schema(max_message_chars)
        self.server: Server[Any] = Server(
            "keel",
            version="0.1.0",
            instructions="Each tool answers a question from this server's documents, with "
            "citations; pass the thread_id of an earlier answer to ask a follow-up.",
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            # Every tool takes the same arguments: no listing per call to check their headers.
            get_tool_input_schema=lambda name: schema,
        )
        # keel's own server span covers the request (api.app.RequestTelemetry); the SDK's span
        # per message would duplicate it.
        self.server.middleware = []
        self.manager = StreamableHTTPSessionManager(self.server, stateless=True)
        self.router = APIRouter(tags=["agent: mcp"])
        self.router.add_api_route(
            "/mcp",
            self.handle,
            methods=["POST"],
            response_class=Response,
            openapi_extra=jsonrpc.OPENAPI,
            responses=RESPONSES,
            summary="MCP (Streamable HTTP)",
        )

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Runs the transport's task group; requests are served inside it."""
        async with self.manager.run():
            yield

    async def handle(self, request: Request, tenant: TenantDep) -> Response:
        """One JSON-RPC message from an MCP client, checked, then answered by the SDK."""
        body = await request.body()
        envelope = jsonrpc.parse(body)
        if isinstance(envelope, Response):
            return envelope
        return _Delegate(self.manager, body)


class _Delegate(Response):
    """A response that hands the request, its body replayed, to the SDK's ASGI app."""

    def __init__(self, manager: StreamableHTTPSessionManager, body: bytes):
        super().__init__()
        self.manager, self.body = manager, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # the client's disconnect, if it goes
            replayed = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        await self.manager.handle_request(scope, replay, send)


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the JSON-RPC response, or an SSE stream of progress and the response",
        "content": {"application/json": {}, "text/event-stream": {}},
    },
    202: {"description": "a notification or response was accepted"},
    400: {"description": "not a JSON-RPC message", "content": {"application/json": {}}},
    406: {"description": "the Accept header must allow JSON and SSE"},
    415: {"description": "the body must be application/json"},
}
