"""Logged run events on the wire as Server-Sent Events."""

import json
from typing import Any

from sse_starlette import ServerSentEvent


def to_sse(run_id: str, seq: int, event: str, data: dict[str, Any]) -> ServerSentEvent:
    """One logged event on the wire: `id: <run_id>:<seq>`, `event:`, JSON `data:`."""
    return ServerSentEvent(data=json.dumps(data), event=event, id=f"{run_id}:{seq}")
