"""OpenTelemetry spans through the SDK's in-memory exporter: one `chat {model}` client span per
LLM attempt with the GenAI attributes and `error.type`, message content only when opted in, and a
turn's node, retrieval and rerank spans nested under one parent."""

import json
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from graph.errors import ProviderError
from graph.settings import Settings
from integrations import tracing
from integrations.breakers import LocalBreakers
from integrations.llm import LLMChain
from tests.fakes import failing, recording

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The process's tracer provider, exporting to memory (set once: OpenTelemetry allows one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_one_chat_span_per_attempt_with_genai_attributes(spans, monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    llm = LLMChain(Settings(llm_max_retries=2), [recording("cited answer")], LocalBreakers())
    await llm.stream(llm.models[0], [HumanMessage("jane@example.com asks")], lambda _: None)
    (chat,) = spans.get_finished_spans()
    assert chat.name == "chat RecordingChatModel" and chat.kind == trace.SpanKind.CLIENT
    attrs = attributes(chat)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "RecordingChatModel"
    assert attrs["gen_ai.request.model"] == "RecordingChatModel"
    assert attrs["gen_ai.request.max_tokens"] == 512
    assert (
        attrs["gen_ai.usage.output_tokens"] >= 0 and "gen_ai.response.time_to_first_chunk" in attrs
    )
    assert "error.type" not in attrs and not any("messages" in key for key in attrs)

    spans.clear()
    llm = LLMChain(Settings(llm_max_retries=2), [failing()], LocalBreakers())
    with pytest.raises(ProviderError):
        await llm.stream(llm.models[0], [HumanMessage("q")], lambda _: None)
    attempts = spans.get_finished_spans()
    assert len(attempts) == 3  # the first try and two retries, each its own span
    assert {attributes(s)["error.type"] for s in attempts} == {"ConnectionError"}
    assert all(s.status.status_code == trace.StatusCode.ERROR for s in attempts)


async def test_message_content_only_when_opted_in_and_as_given(spans, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    llm = LLMChain(Settings(), [recording("the answer [1].")], LocalBreakers())
    await llm.stream(llm.models[0], [HumanMessage("what is <EMAIL_ADDRESS>?")], lambda _: None)
    attrs = attributes(spans.get_finished_spans()[0])
    sent = json.loads(attrs["gen_ai.input.messages"])
    assert sent == [
        {"role": "user", "parts": [{"type": "text", "content": "what is <EMAIL_ADDRESS>?"}]}
    ]
    answer = json.loads(attrs["gen_ai.output.messages"])
    assert (
        answer[0]["role"] == "assistant" and answer[0]["parts"][0]["content"] == "the answer [1]."
    )


async def test_a_turn_nests_node_retrieval_and_rerank_spans_under_one_parent(spans, harness):
    h = harness()
    with tracing.span("turn") as parent:
        await h.turn(
            "How does keel avoid duplicate chunks when a file is ingested twice?", use_cache=False
        )
    finished = {s.name: s for s in spans.get_finished_spans()}
    trace_id = parent.get_span_context().trace_id
    assert all(s.context.trace_id == trace_id for s in finished.values())
    nodes = ["guard", "cache_lookup", "retrieve", "rerank", "generate"]
    for node in nodes:
        assert finished[node].parent.span_id == parent.get_span_context().span_id, node
        assert attributes(finished[node])["langgraph.node"] == node
    retrieval = finished["retrieval keel"]
    assert retrieval.parent.span_id == finished["retrieve"].context.span_id
    assert attributes(retrieval)["gen_ai.operation.name"] == "retrieval"
    assert attributes(retrieval)["gen_ai.data_source.id"] == "keel"
    assert attributes(retrieval)["keel.retrieval.passages"] > 0
    (rerank,) = [s for s in finished.values() if s.name.startswith("rerank ")]
    assert rerank.parent.span_id == finished["rerank"].context.span_id
    assert attributes(rerank)["keel.rerank.candidates"] > 0
