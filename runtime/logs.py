"""Structured logs: one JSON object per line, tagged with the trace, request, run and tenant.

The tags come from context variables set where a request or a run starts (`bind`) and from the
current OpenTelemetry span, so every line logged while serving a request or executing a run can be
joined to its trace. Tenants appear only as a hash. Lines carry ids, names, sizes and outcomes,
never message text (a test seeds PII into requests and reads every line).
"""

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_TAGS: ContextVar[dict[str, str] | None] = ContextVar("keel_log_tags", default=None)
# Attributes every LogRecord has; anything else on a record came from `extra=`.
# `color_message` is uvicorn's copy of the message with ANSI colours, for its own formatter.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


@contextmanager
def bind(**tags: str | None) -> Iterator[None]:
    """Tags the log lines written inside the block (request_id, run_id, tenant_hash)."""
    token = _TAGS.set((_TAGS.get() or {}) | {k: v for k, v in tags.items() if v is not None})
    try:
        yield
    finally:
        _TAGS.reset(token)


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time, level, logger, message, trace and context tags, and
    the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            line["trace_id"] = format(current.trace_id, "032x")
            line["span_id"] = format(current.span_id, "016x")
        line |= _TAGS.get() or {}
        line |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(format: str, verbose: bool) -> None:
    """keel's own INFO logs on stderr, as JSON lines or text (`auto`: text on a terminal, JSON
    otherwise); other libraries' (presidio loads 19 recognizers at INFO) only when verbose."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json" or (format == "auto" and not sys.stderr.isatty()):
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("keel").setLevel(logging.INFO)
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)  # "Uvicorn running on ..."
