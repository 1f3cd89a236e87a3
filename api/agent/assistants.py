"""Assistants: the compiled graph `keel` is the one assistant; read-only."""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import PydanticUserError, create_model

from api.agent.schemas import AssistantSearch
from api.deps import KeelDep, TenantDep
from graph.errors import InvalidInput, NotFound
from runtime.keel import Keel

router = APIRouter(prefix="/assistants", tags=["agent: assistants"])
GRAPH_ID = "keel"
# The reference server's namespace: the SDKs and Studio derive an assistant's id from its graph.
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
ASSISTANT_ID = str(uuid.uuid5(NAMESPACE_GRAPH, GRAPH_ID))
# Context fields the server sets itself: a client may neither see nor send them.
SERVER_CONTEXT = ("tenant", "user_message")
_CREATED = datetime.now(UTC).isoformat()


def resolve_assistant(assistant_id: str) -> str:
    """The graph id for an assistant given by graph id or UUID; `NotFound` for any other."""
    if assistant_id in (GRAPH_ID, ASSISTANT_ID):
        return GRAPH_ID
    raise NotFound(f"assistant {assistant_id} not found")


def assistant() -> dict[str, Any]:
    """The default assistant's record."""
    return {
        "assistant_id": ASSISTANT_ID,
        "graph_id": GRAPH_ID,
        "name": GRAPH_ID,
        "description": "retrieval-augmented chat with citations",
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "version": 1,
        "created_at": _CREATED,
        "updated_at": _CREATED,
    }


def _matches(query: AssistantSearch) -> bool:
    record = assistant()
    return (
        query.graph_id in (None, GRAPH_ID)
        and (query.name is None or query.name.lower() in GRAPH_ID)
        and all(record["metadata"].get(k) == v for k, v in (query.metadata or {}).items())
    )


def context_schema(keel: Keel) -> dict[str, Any]:
    """The JSON schema of the run knobs a client may set (`graph.context.Context` without the
    fields the server fills in)."""
    schema = keel.graph.get_context_jsonschema() or {}
    for name in SERVER_CONTEXT:
        schema.get("properties", {}).pop(name, None)
    return schema


def state_schema(keel: Keel) -> dict[str, Any]:
    """The JSON schema of the thread's state channels, as the reference server derives it: a
    channel whose type has no JSON schema is typed `Any`."""
    graph = keel.graph
    fields: dict[str, Any] = {}
    for name in graph.stream_channels_list:
        kind = getattr(graph.channels[name], "UpdateType", Any)
        try:
            create_model(name, value=(kind, None)).model_json_schema()
        except PydanticUserError:
            kind = Any
        fields[name] = (kind, None)
    return create_model("State", **fields).model_json_schema()


@router.post("/search")
async def search(_: TenantDep, query: AssistantSearch | None = None) -> list[dict[str, Any]]:
    """The assistants matching graph id, name and metadata (only `keel`)."""
    query = query or AssistantSearch()
    found = [assistant()] if _matches(query) else []
    return found[query.offset : query.offset + query.limit]


@router.post("/count")
async def count(_: TenantDep, query: AssistantSearch | None = None) -> int:
    """How many assistants match."""
    return int(_matches(query or AssistantSearch()))


@router.get("/{assistant_id}")
async def get(assistant_id: str, _: TenantDep) -> dict[str, Any]:
    """An assistant, by graph id or UUID."""
    resolve_assistant(assistant_id)
    return assistant()


@router.get("/{assistant_id}/graph")
async def graph(
    assistant_id: str,
    keel: KeelDep,
    _: TenantDep,
    xray: Annotated[str, Query(pattern=r"^(true|false|True|False|[0-9]{1,3})$")] = "false",
) -> dict[str, Any]:
    """The graph's nodes and edges as Studio draws them (`xray` expands subgraphs)."""
    resolve_assistant(assistant_id)
    depth: bool | int = xray.lower() == "true" if not xray.isdigit() else int(xray)
    if depth == 0 and xray.isdigit():
        raise InvalidInput("xray must be true, false or a positive depth")
    drawable = (await keel.graph.aget_graph(xray=depth)).to_json()
    for node in drawable.get("nodes", []):
        if isinstance(data := node.get("data"), dict):
            data.pop("id", None)
    return drawable


@router.get("/{assistant_id}/schemas")
async def schemas(assistant_id: str, keel: KeelDep, _: TenantDep) -> dict[str, Any]:
    """JSON schemas of the graph's input, output, state and context (Studio's forms)."""
    resolve_assistant(assistant_id)
    return {
        "graph_id": GRAPH_ID,
        "input_schema": keel.graph.get_input_jsonschema(),
        "output_schema": keel.graph.get_output_jsonschema(),
        "state_schema": state_schema(keel),
        "config_schema": {},
        "context_schema": context_schema(keel),
    }


@router.get("/{assistant_id}/subgraphs")
async def subgraphs(assistant_id: str, _: TenantDep) -> dict[str, Any]:
    """keel's graph has no subgraphs."""
    resolve_assistant(assistant_id)
    return {}
