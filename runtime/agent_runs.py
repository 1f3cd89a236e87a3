"""keel's runs as the Agent Server API shows them (its run body and statuses): the runs router
answers with it and webhooks post it."""

import uuid
from datetime import UTC, datetime
from typing import Any

from checkpoints.runs import Run

GRAPH_ID = "keel"
# The reference server's namespace: the SDKs and Studio derive an assistant's id from its graph.
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
ASSISTANT_ID = str(uuid.uuid5(NAMESPACE_GRAPH, GRAPH_ID))
RUN_STATUS = {
    "pending": "pending",
    "running": "running",
    "succeeded": "success",
    "failed": "error",
    "cancelled": "interrupted",
    "interrupted": "error",  # its replica kept dying; one stopped at a breakpoint: interrupted
}


def iso(timestamp: float) -> str:
    """A Unix time as the API's ISO 8601 (UTC)."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def run_body(run: Run) -> dict[str, Any]:
    """A run row in the Agent Server's shape."""
    at_breakpoint = run.status == "interrupted" and run.result is not None
    return {
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "assistant_id": run.request.get("assistant_id", ASSISTANT_ID),
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "status": "interrupted" if at_breakpoint else RUN_STATUS[run.status],
        "metadata": run.request.get("metadata") or {},
        "multitask_strategy": run.strategy,
        "kwargs": {"stream_mode": run.request.get("stream_modes", [])},
    }
