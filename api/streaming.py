"""Logged run events on the wire as Server-Sent Events."""

import json
from typing import Any

from sse_starlette import ServerSentEvent

from api.errors import MalformedLastEventId


def to_sse(run_id: str, seq: int, event: str, data: dict[str, Any]) -> ServerSentEvent:
    """One logged event on the wire: `id: <run_id>:<seq>`, `event:`, JSON `data:`."""
    return ServerSentEvent(data=json.dumps(data), event=event, id=f"{run_id}:{seq}")


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
