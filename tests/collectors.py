"""Loopback receivers for what keel sends out: OTLP/HTTP traces (decoded from protobuf) and
LangSmith run payloads (raw bodies). Each runs a real HTTP server on a free port in a thread."""

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


class _Receiver:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                owner.bodies.append((self.path, body))
                self._answer(owner.answer(self.path))

            def do_GET(self) -> None:
                self._answer(b"{}")

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str) -> bytes:
        return b"{}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class OtlpReceiver(_Receiver):
    """An OTLP/HTTP trace receiver: `spans()` decodes every export it got."""

    def answer(self, path: str) -> bytes:
        return ExportTraceServiceResponse().SerializeToString()

    def spans(self) -> list[dict[str, Any]]:
        """Each span as {name, trace_id, span_id, parent_id, kind, attributes, resource}."""
        out = []
        for path, body in list(self.bodies):
            if path != "/v1/traces":
                continue
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "resource": resource,
                            }
                        )
        return out


class LangSmithReceiver(_Receiver):
    """Records every request LangSmith's client posts (runs, batches, multipart), raw."""

    def text(self) -> str:
        return "\n".join(body.decode("utf-8", "replace") for _, body in self.bodies)

    def posted(self) -> list[str]:
        return [path for path, _ in self.bodies]
