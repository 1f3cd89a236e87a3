"""Assistants: `keel` (the compiled graph) is every tenant's default assistant, read-only;
a tenant adds configured variants of it (config or context knobs, metadata), versioned, stored
in `keel_assistants` (see `checkpoints.assistants`). A run's knobs start from its assistant's."""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import PydanticUserError, create_model

from api import audit
from api.agent.schemas import (
    AssistantCreate,
    AssistantLatest,
    AssistantPatch,
    AssistantSearch,
    AssistantVersions,
    RunConfig,
    RunKnobs,
)
from api.deps import KeelDep, TenantDep
from checkpoints.assistants import AssistantFields
from checkpoints.containment import contains
from checkpoints.thread_search import search_threads
from checkpoints.threads import delete_thread
from graph.errors import InvalidInput
from runtime.agent_runs import ASSISTANT_ID, GRAPH_ID
from runtime.keel import Keel

router = APIRouter(prefix="/assistants", tags=["agent: assistants"])
_CREATED = datetime.now(UTC).isoformat()
AssistantIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a graph id or an assistant UUID")
]


def default_assistant() -> dict[str, Any]:
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


async def load_assistant(keel: Keel, tenant: str, assistant_id: str) -> dict[str, Any]:
    """The assistant named by graph id or UUID: the default one, or one of the tenant's
    variants; `NotFound` for any other (another tenant's included)."""
    if assistant_id in (GRAPH_ID, ASSISTANT_ID):
        return default_assistant()
    return await keel.persistence.assistants.get(tenant, assistant_id)


def knobs_of(config: RunConfig | None, context: RunKnobs | None) -> dict[str, Any] | None:
    """The knobs a `config.configurable` or a `context` sets (None when neither does); both at
    once is ambiguous and refused, as the reference server does."""
    configurable = config.configurable if config else None
    if configurable is not None and context is not None:
        raise InvalidInput("set knobs in config.configurable or in context, not in both")
    knobs = configurable or context
    return None if knobs is None else knobs.model_dump(exclude_unset=True)


def _check_graph(graph_id: str) -> None:
    if graph_id != GRAPH_ID:
        raise InvalidInput(f"graph {graph_id!r} does not exist: this server serves {GRAPH_ID!r}")


def _check_model(keel: Keel, knobs: dict[str, Any]) -> None:
    if not keel.deps.llm.allows(knobs.get("model")):
        raise InvalidInput(f"model {knobs.get('model')!r} is not allowed on this server")


def _variant(assistant_id: str) -> str:
    if assistant_id in (GRAPH_ID, ASSISTANT_ID):
        raise InvalidInput("the default assistant is read-only: create a variant of it")
    return assistant_id


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


async def _matching(keel: Keel, tenant: str, query: AssistantSearch) -> list[dict[str, Any]]:
    """The default assistant and the tenant's variants matching graph id, name and metadata."""
    metadata = query.metadata or {}
    variants = await keel.persistence.assistants.search(
        tenant, query.graph_id, query.name, metadata
    )
    default = default_assistant()
    if (
        query.graph_id in (None, GRAPH_ID)
        and (query.name is None or query.name.lower() in default["name"])
        and contains(default["metadata"], metadata)
    ):
        variants.append(default)
    return variants


@router.post("", responses={409: {"description": "the assistant id is taken"}})
async def create(body: AssistantCreate, keel: KeelDep, tenant: TenantDep) -> dict[str, Any]:
    """Creates a variant of the graph whose config or context knobs become its runs' defaults
    (`if_exists=do_nothing` returns the tenant's existing assistant instead of 409)."""
    _check_graph(body.graph_id)
    knobs = knobs_of(body.config, body.context) or {}
    _check_model(keel, knobs)
    fields: AssistantFields = {
        "graph_id": body.graph_id,
        "name": body.name or "Untitled",
        "description": body.description,
        "config": {"configurable": knobs},
        "context": knobs,
        "metadata": body.metadata or {},
    }
    assistant_id = _variant(body.assistant_id or str(uuid.uuid4()))
    return await keel.persistence.assistants.create(tenant, assistant_id, fields, body.if_exists)


@router.post("/search")
async def search(
    keel: KeelDep, tenant: TenantDep, query: AssistantSearch | None = None
) -> list[dict[str, Any]]:
    """The assistants matching graph id, name (a substring) and metadata, sorted and paged."""
    query = query or AssistantSearch()
    found = await _matching(keel, tenant, query)
    found.sort(key=lambda a: (a[query.sort_by] or "", a["assistant_id"]))
    if query.sort_order == "desc":
        found.reverse()
    page = found[query.offset : query.offset + query.limit]
    if query.select:
        page = [{k: v for k, v in a.items() if k in query.select} for a in page]
    return page


@router.post("/count")
async def count(keel: KeelDep, tenant: TenantDep, query: AssistantSearch | None = None) -> int:
    """How many assistants match."""
    return len(await _matching(keel, tenant, query or AssistantSearch()))


@router.get("/{assistant_id}")
async def get(assistant_id: AssistantIdPath, keel: KeelDep, tenant: TenantDep) -> dict[str, Any]:
    """An assistant, by graph id or UUID."""
    return await load_assistant(keel, tenant, assistant_id)


@router.patch("/{assistant_id}")
async def patch(
    assistant_id: AssistantIdPath, body: AssistantPatch, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """A new version of a variant: metadata merged, the other given fields replaced."""
    changes: dict[str, Any] = body.model_dump(
        include={"name", "description", "metadata"}, exclude_none=True
    )
    if body.graph_id is not None:
        _check_graph(body.graph_id)
        changes["graph_id"] = body.graph_id
    knobs = knobs_of(body.config, body.context)
    if knobs is not None:
        _check_model(keel, knobs)
        changes |= {"config": {"configurable": knobs}, "context": knobs}
    return await keel.persistence.assistants.patch(tenant, _variant(assistant_id), changes)


@router.delete(
    "/{assistant_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete(
    assistant_id: AssistantIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    request: Request,
    delete_threads: Annotated[bool, Query(description="also the threads tagged with it")] = False,
) -> Response:
    """Deletes a variant and its versions; with `delete_threads`, also the tenant's threads
    whose metadata names it (`{"assistant_id": ...}`)."""
    await keel.persistence.assistants.delete(tenant, _variant(assistant_id))
    if delete_threads:
        tagged = {"assistant_id": assistant_id}
        for record, _ in await search_threads(keel.persistence, tenant, tagged, None, 10_000, 0):
            await delete_thread(keel.persistence, tenant, record["thread_id"])
    audit.action(request, "assistant_deleted", assistant_id=assistant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{assistant_id}/versions")
async def versions(
    assistant_id: AssistantIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    body: AssistantVersions | None = None,
) -> list[dict[str, Any]]:
    """An assistant's versions, newest first, filtered by metadata."""
    body = body or AssistantVersions()
    if assistant_id in (GRAPH_ID, ASSISTANT_ID):
        record = default_assistant()
        del record["updated_at"]
        found = [record] if contains(record["metadata"], body.metadata or {}) else []
        return found[body.offset : body.offset + body.limit]
    return await keel.persistence.assistants.versions(
        tenant, assistant_id, body.metadata or {}, body.limit, body.offset
    )


@router.post("/{assistant_id}/latest")
async def set_latest(
    assistant_id: AssistantIdPath, body: AssistantLatest, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """Makes one of a variant's versions its current one."""
    return await keel.persistence.assistants.set_latest(
        tenant, _variant(assistant_id), body.version
    )


@router.get("/{assistant_id}/graph")
async def graph(
    assistant_id: AssistantIdPath,
    keel: KeelDep,
    tenant: TenantDep,
    xray: Annotated[str, Query(pattern=r"^(true|false|True|False|[0-9]{1,3})$")] = "false",
) -> dict[str, Any]:
    """The graph's nodes and edges as Studio draws them (`xray` expands subgraphs)."""
    await load_assistant(keel, tenant, assistant_id)
    depth: bool | int = xray.lower() == "true" if not xray.isdigit() else int(xray)
    if depth == 0 and xray.isdigit():
        raise InvalidInput("xray must be true, false or a positive depth")
    drawable = (await keel.graph.aget_graph(xray=depth)).to_json()
    for node in drawable.get("nodes", []):
        if isinstance(data := node.get("data"), dict):
            data.pop("id", None)
    return drawable


@router.get("/{assistant_id}/schemas")
async def schemas(
    assistant_id: AssistantIdPath, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """JSON schemas of the graph's input, output, state and context (Studio's forms)."""
    await load_assistant(keel, tenant, assistant_id)
    return {
        "graph_id": GRAPH_ID,
        "input_schema": keel.graph.get_input_jsonschema(),
        "output_schema": keel.graph.get_output_jsonschema(),
        "state_schema": state_schema(keel),
        "config_schema": {},
        # The knobs: `graph.context.Context` skips the fields the server sets in its schema.
        "context_schema": keel.graph.get_context_jsonschema(),
    }


@router.get("/{assistant_id}/subgraphs")
async def subgraphs(
    assistant_id: AssistantIdPath, keel: KeelDep, tenant: TenantDep
) -> dict[str, Any]:
    """keel's graph has no subgraphs."""
    await load_assistant(keel, tenant, assistant_id)
    return {}
