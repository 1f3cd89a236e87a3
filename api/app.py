"""The FastAPI application: lifespan-owned clients, routers per resource, error mapping."""

import asyncio
import gc
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext

from fastapi import Depends, FastAPI
from langchain_core.language_models import BaseChatModel
from opentelemetry.trace import INVALID_SPAN, SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import audit
from api.agent import build_router as agent_router
from api.agent import reject_unknown_query
from api.agent.mcp import McpEndpoint
from api.auth import Authenticator
from api.errors import PayloadTooLarge, error_body, error_responses, install_error_handlers
from api.pages import install_pages
from api.ratelimit import enforce_rate_limit
from api.routes import admin, documents, health, runs, threads
from api.routes import metrics as metrics_route
from graph.settings import Settings
from integrations import metrics, tracing
from runtime import logs
from runtime.keel import open_keel

log = logging.getLogger("keel")
access = logging.getLogger("keel.access")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Probes and scrapes arrive every few seconds: no span, and a log line only when they fail.
QUIET_PATHS = frozenset({"/health", "/ready", "/livez", "/readyz", "/startupz", "/metrics"})


class RequestTelemetry:
    """Per request: a server span (continuing the caller's `traceparent`), an `X-Request-ID`
    (the caller's, if well-formed, else a new one) echoed on the response and tagged on every log
    line, the duration metric by route template (never the raw path: ids would make unbounded
    series), method and status, and one JSON log line at the end (probes: see QUIET_PATHS)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        method, quiet = scope["method"], scope["path"] in QUIET_PATHS

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with (
            logs.bind(request_id=request_id),
            nullcontext(INVALID_SPAN)
            if quiet
            else tracing.tracer.start_as_current_span(
                method,
                context=tracing.extract(headers),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
            ) as span,
        ):
            try:
                await self.app(scope, receive, observed)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                elapsed = time.perf_counter() - started
                metrics.HTTP_DURATION.labels(route, method, str(status)).observe(elapsed)
                tenant = scope.get("state", {}).get("tenant")
                tenant_tag = tracing.tenant_hash(tenant) if tenant else None
                span.update_name(f"{method} {route}")
                span.set_attributes({"http.route": route, "http.response.status_code": status})
                if tenant_tag:
                    span.set_attribute("keel.tenant.hash", tenant_tag)
                if status >= 500:
                    tracing.fail(span, str(status))
                if not quiet or status >= 400:
                    access.info(
                        "request",
                        extra={
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_s": round(elapsed, 4),
                            "tenant_hash": tenant_tag,
                        },
                    )


class BodyLimit:
    """Rejects request bodies over `limit` bytes with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _reject(send, self.limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLarge(f"request body larger than {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


class HeaderLimit:
    """Rejects requests whose headers total more than `limit` bytes with 431."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.limit:
            size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
            if size > self.limit:
                message = f"request headers larger than {self.limit} bytes"
                await _send_error(send, 431, "headers_too_large", message)
                return
        await self.app(scope, receive, send)


async def _reject(send: Send, limit: int) -> None:
    await _send_error(send, 413, "payload_too_large", f"request body larger than {limit} bytes")


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    settings: Settings | None = None, chat_models: list[BaseChatModel] | None = None
) -> FastAPI:
    """Builds the app; clients are created in the lifespan and closed in reverse order."""
    settings = settings or Settings()
    audit.configure()
    authenticator = Authenticator(settings)
    mcp = McpEndpoint(settings.max_message_chars)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not authenticator.enabled:
            log.warning(
                "no authentication configured (KEEL_API_KEYS, KEEL_JWT_SECRET, "
                "KEEL_JWT_PUBLIC_KEY_FILE): every caller is tenant 'default'"
            )
        async with open_keel(settings, chat_models) as keel, mcp.run():
            app.state.keel, app.state.limiter = keel, keel.limiter
            # Everything built at start-up (models, tokenizers, corpora) lives as long as the
            # process: out of the collector's sight, a full collection no longer walks it (one
            # paused the event loop for 270 ms in a cache-hit benchmark). The default corpus is
            # searched once first, so that what its first query loads is frozen too.
            try:
                await asyncio.to_thread(keel.deps.corpora.load)
            except Exception as exc:  # the first query opens it, and reports a failure
                log.warning("default corpus not loaded at start: %s", exc)
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()  # collectable again once the app is gone (tests build many)

    app = FastAPI(
        title="keel",
        version="0.1.0",
        description="Retrieval-augmented chat over a checkpointed LangGraph state machine.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # keel's own server span (RequestTelemetry) is the one its logs and runs join; FastAPI's
        # native spans would duplicate it and add three operation spans per request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.authenticator = authenticator
    install_error_handlers(app)
    # Errors every authenticated route may answer; routes declare their own on top.
    common = error_responses(401, 413, 422, 429)
    for module in (threads, runs, admin):
        app.include_router(
            module.router, dependencies=[Depends(enforce_rate_limit)], responses=common
        )
    app.include_router(
        documents.router,
        dependencies=[Depends(enforce_rate_limit)],
        responses={**common, **error_responses(400, 404, 415)},
    )
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    install_pages(app)
    # The LangGraph Agent Server API at the root paths (the official SDKs and Studio).
    app.include_router(agent_router())
    # The agent protocols beside it: MCP at /mcp.
    app.include_router(
        mcp.router,
        dependencies=[Depends(enforce_rate_limit), Depends(reject_unknown_query)],
        responses=common,
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(HeaderLimit, limit=settings.max_header_bytes)
    app.add_middleware(RequestTelemetry)
    return app
