"""Stream-mode events for runs started through the Agent Server API.

A run that asks for stream modes (values, updates, messages-tuple, custom, debug, tasks,
checkpoints) records each mode's parts in its durable event log, beside keel's own events, as
`lg:<mode>` events whose data is `{"ns": [...], "data": <JSON>}`. Runs that ask for none (all /v1
runs) record nothing more."""

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Final, cast

from langgraph.types import StreamMode
from pydantic import BaseModel

PREFIX: Final = "lg:"
# Modes the graph streams itself; messages-tuple is built from keel's (redacted) token events,
# never from the raw LLM stream, so output redaction holds.
GRAPH_MODES: Final = ("values", "updates", "custom", "debug", "tasks", "checkpoints")
TOKEN_MODE: Final = "messages-tuple"
STREAM_MODES: Final = (*GRAPH_MODES, TOKEN_MODE)


def to_json(value: Any) -> Any:
    """`value` as plain JSON: messages and models dumped, dataclasses as dicts, the rest as text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, BaseModel):
        return to_json(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return str(value)


def graph_modes(stream_modes: Sequence[str]) -> list[StreamMode]:
    """The LangGraph stream modes a run must ask the graph for."""
    return [cast(StreamMode, m) for m in GRAPH_MODES if m in stream_modes]


def part_events(
    part: dict[str, Any], stream_modes: Sequence[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The log events of one `astream(..., version="v2")` part, for the requested modes."""
    if part["type"] in stream_modes:
        yield PREFIX + part["type"], {"ns": list(part["ns"]), "data": to_json(part["data"])}


def token_events(
    run_id: str, node: str, text: str, stream_modes: Sequence[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A `messages-tuple` event for one streamed token: (message chunk, metadata)."""
    if TOKEN_MODE in stream_modes:
        chunk = {"type": "AIMessageChunk", "id": f"run-{run_id}-{node}", "content": text}
        metadata = {"run_id": run_id, "langgraph_node": node}
        yield PREFIX + "messages", {"ns": [], "data": [chunk, metadata]}
