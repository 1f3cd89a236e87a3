"""The JSON-RPC 2.0 envelope both agent protocols (MCP, A2A) receive: checked here, so that
what is not a JSON-RPC request gets a 400 before either protocol reads it, and declared in the
OpenAPI schema (and fuzzed) as exactly what is accepted."""

import json
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PARSE_ERROR, INVALID_REQUEST = -32700, -32600


class Envelope(BaseModel):
    """A JSON-RPC 2.0 request (a notification without `id`)."""

    model_config = ConfigDict(strict=True)  # JSON's types: `true` is no id, `"1"` no object

    jsonrpc: Literal["2.0"]
    id: str | int | None = None
    method: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)


def reply(rpc_id: str | int | None, result: Any = None, error: tuple[int, str] | None = None):
    """A JSON-RPC response: `result`, or `error` as (code, message)."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id}
    if error is not None:
        body["error"] = {"code": error[0], "message": error[1]}
    else:
        body["result"] = result
    return body


def parse(body: bytes) -> Envelope | JSONResponse:
    """The request's envelope, or the 400 response for a body that is not one."""
    try:
        return Envelope.model_validate(json.loads(body))
    except ValidationError:
        error = (INVALID_REQUEST, "not a JSON-RPC 2.0 request")
    except ValueError:
        error = (PARSE_ERROR, "request body is not valid JSON")
    return JSONResponse(reply(None, error=error), status_code=400)


OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": Envelope.model_json_schema()}},
    }
}
