"""Tracing: OpenTelemetry spans (GenAI semantic conventions) and LangSmith, both off by default.

OpenTelemetry turns on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set:
spans go out over OTLP/HTTP in batches. Without it the API's no-op tracer costs next to nothing.
A trace follows a run across replicas: `inject()` records the submitting request's context on the
run row and the replica that executes the run continues it with `extract()`.

Spans carry ids, names, sizes and outcomes, never message text; with
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` the LLM spans also carry the prompt and
answer as the model saw them, which is the redacted text (the guard redacts before anything else).

LangSmith traces runs when `LANGSMITH_TRACING=true`, through a client that redacts every string of
every payload (inputs, outputs, metadata) before it leaves the process.
"""

import functools
import hashlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from integrations.pii import PatternRedactor

tracer = trace.get_tracer("keel")
_provider: Any = None
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def configure(service_name: str = "keel") -> bool:
    """Installs the OTLP/HTTP exporter once per process when an endpoint is configured."""
    global _provider
    if _provider is not None:
        return True
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    instance = f"{socket.gethostname()}:{os.getpid()}"  # tells replicas apart within a trace
    _provider = TracerProvider(
        resource=Resource.create({"service.name": name, "service.instance.id": instance})
    )
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    return True


def shutdown() -> None:
    """Exports the spans still buffered (at server shutdown)."""
    if _provider is not None:
        _provider.force_flush()


def capture_content() -> bool:
    """Whether LLM spans record the (redacted) prompt and answer: opt-in."""
    flag = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return flag.lower() in ("1", "true", "yes")


def tenant_hash(tenant: str) -> str:
    """A stable, non-reversible tag of a tenant for logs and spans."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:12]


def inject() -> dict[str, str]:
    """The current trace context as W3C headers (empty outside a recorded trace)."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    return carrier


def extract(carrier: dict[str, str] | None) -> otel_context.Context:
    """A context continuing the trace recorded by `inject` (possibly on another replica)."""
    return propagate.extract(carrier or {})


def fail(span: Span, error: BaseException | str) -> None:
    """Marks a span as failed with `error.type` (a class name or a short failure kind)."""
    kind = error if isinstance(error, str) else type(error).__qualname__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    context: otel_context.Context | None = None,
) -> Iterator[Span]:
    """A span around a block (a child of `context` if given, else of the current span); an
    exception escaping it records `error.type`."""
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            fail(current, exc)
            raise


def traced_node(name: str, node: F) -> F:
    """A graph node wrapped in a span named after it (its signature is kept for LangGraph)."""

    @functools.wraps(node)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        with span(name, {"langgraph.node": name}):
            return await node(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def messages_attribute(messages: Sequence[BaseMessage]) -> str:
    """Messages in the GenAI conventions' shape (role and text parts), as JSON."""
    roles = {"human": "user", "ai": "assistant", "system": "system"}
    return json.dumps(
        [
            {"role": roles.get(m.type, m.type), "parts": [{"type": "text", "content": m.text}]}
            for m in messages
        ]
    )


def langsmith_enabled() -> bool:
    """Whether `LANGSMITH_TRACING` (or the older `LANGCHAIN_TRACING_V2`) asks for tracing."""
    flag = os.environ.get("LANGSMITH_TRACING") or os.environ.get("LANGCHAIN_TRACING_V2") or ""
    return flag.lower() == "true"


@functools.cache
def _langsmith_client(redactor: PatternRedactor) -> Any:
    from langsmith import Client

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return redactor.redact(value).text
        if isinstance(value, dict):
            return {key: scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(item) for item in value]
        return value

    return Client(hide_inputs=scrub, hide_outputs=scrub, hide_metadata=scrub)


@contextmanager
def langsmith(redactor: PatternRedactor, project: str = "keel") -> Iterator[None]:
    """Traces the graph runs inside to LangSmith with every string redacted, when enabled."""
    if not langsmith_enabled():
        yield
        return
    from langchain_core.tracers.context import tracing_v2_enabled

    name = os.environ.get("LANGSMITH_PROJECT", project)
    with tracing_v2_enabled(project_name=name, client=_langsmith_client(redactor)):
        yield
