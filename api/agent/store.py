"""The Agent Server's store (`/store/items`, search, namespaces): JSON items under namespaces, in
LangGraph's own store on keel's database (`AsyncPostgresStore` on the shared pool).

Each tenant's items live under `("keel", "store", <tenant>)`, a prefix the client never sees nor
names: another tenant's item is simply absent (`null` on get, as the reference server answers
for a missing item; never listed, never deleted).

Semantic search: the fields an item's `index` names (else `KEEL_STORE_INDEX_FIELDS`) are
embedded by keel's MiniLM when it is put, one vector per field in `keel_store_vectors`; a
search `query` ranks the items under the prefix by cosine similarity (`checkpoints.store_vectors`)."""

import asyncio
import re
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Response, status
from langgraph.store.base import GetOp, Item, SearchItem
from langgraph.store.base.embed import get_text_at_path

from api.agent.schemas import StoreDelete, StoreNamespaces, StorePut, StoreSearch
from api.deps import Keel, KeelDep, TenantDep
from checkpoints.store_vectors import joined
from graph.errors import InvalidInput

router = APIRouter(prefix="/store", tags=["agent: store"])
FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
FILTER_FIELD = re.compile(r"[A-Za-z0-9_.-]+")
# A query with a filter ranks at most this many matching items.
FILTERED_CANDIDATES = 10_000
# Ranked beyond the page, for items that expired or went since their vectors were written.
SPARE = 20


def _root(tenant: str) -> tuple[str, ...]:
    return ("keel", "store", tenant)


def _item(item: Any, depth: int) -> dict[str, Any]:
    """A stored item as the SDKs read it, without the tenant's hidden prefix."""
    record: dict[str, Any] = item.dict()
    record["namespace"] = record["namespace"][depth:]
    return record


def _labels(namespace: list[str], what: str) -> tuple[str, ...]:
    """`namespace` checked the way the reference server checks it (non-empty labels without
    dots); the request schemas already hold bodies to this, query strings are checked here."""
    if not namespace or any(not label or "." in label or "\x00" in label for label in namespace):
        raise InvalidInput(f"{what} must be non-empty labels without dots")
    return tuple(namespace)


def _check_filter(filter: dict[str, Any]) -> None:
    """A value filter compares fields with a value, or with operators: a nested object is read
    as operators, so anything else in one is refused (422), not left to fail in SQL. Field names
    are what both stores can query (letters, digits, `_`, `-`, and `.` between path parts): the
    embedded store refuses any other, so both do."""
    for field, condition in filter.items():
        if not FILTER_FIELD.fullmatch(field):
            raise InvalidInput(f"filter field {field!r}: use letters, digits, '_', '-' and '.'")
        if isinstance(condition, dict):
            unknown = sorted(set(condition) - set(FILTER_OPERATORS))
            if unknown or not condition:
                raise InvalidInput(
                    f"filter on {field!r}: use a value or the operators {list(FILTER_OPERATORS)}"
                )


async def _vectors(keel: Keel, value: dict[str, Any], fields: list[str]) -> dict[str, np.ndarray]:
    """The unit vectors of `value`'s texts at the field paths (LangGraph's path syntax: `a.b`,
    `[*]`, `$` for the whole value), keyed `path` (or `path#n` for a path's n-th text)."""
    texts: dict[str, str] = {}
    for path in fields:
        found = [t for t in get_text_at_path(value, path) if t.strip()]
        for n, text in enumerate(found):
            texts[path if len(found) == 1 else f"{path}#{n}"] = text
    if not texts:
        return {}
    rows = await asyncio.to_thread(keel.deps.corpora.embedder.embed, list(texts.values()))
    return dict(zip(texts, rows, strict=True))


@router.put("/items", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def put_item(body: StorePut, keel: KeelDep, tenant: TenantDep) -> Response:
    """Stores or replaces an item; with `ttl`, it expires that many minutes after its last
    write or read. Its `index` fields (the server's default when absent, none with `false`)
    are embedded for semantic search."""
    store = keel.persistence.store
    if body.ttl is not None and not store.supports_ttl:
        raise InvalidInput("this server's store keeps no ttl (memory://): leave ttl unset")
    namespace = _root(tenant) + _labels(body.namespace, "namespace")
    fields = keel.settings.store_index_fields if body.index is None else body.index or []
    vectors = await _vectors(keel, body.value, fields)
    await store.aput(namespace, body.key, body.value, index=False, ttl=body.ttl)
    await keel.persistence.vectors.replace(namespace, body.key, vectors)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/items")
async def get_item(
    keel: KeelDep,
    tenant: TenantDep,
    key: Annotated[str, Query(min_length=1, max_length=1000, pattern=r"^[^\x00]+$")],
    namespace: Annotated[str, Query(max_length=4000, description="labels joined by dots")] = "",
    refresh_ttl: Annotated[bool | None, Query()] = None,
) -> dict[str, Any] | None:
    """The item, or `null` when the tenant has none under that namespace and key."""
    root = _root(tenant)
    labels = _labels(namespace.split("."), "namespace")
    item = await keel.persistence.store.aget(root + labels, key, refresh_ttl=refresh_ttl)
    return None if item is None else _item(item, len(root))


@router.delete("/items", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_item(body: StoreDelete, keel: KeelDep, tenant: TenantDep) -> Response:
    """Deletes the item if the tenant has it (deleting a missing item is not an error)."""
    namespace = _root(tenant) + _labels(body.namespace, "namespace")
    await keel.persistence.store.adelete(namespace, body.key)
    await keel.persistence.vectors.remove(namespace, body.key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/items/search")
async def search_items(
    keel: KeelDep, tenant: TenantDep, body: StoreSearch | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The tenant's items under `namespace_prefix` whose values match `filter`, most recently
    updated first, `limit` after `offset`; with `query`, the indexed ones most similar to it
    first, each with its `score` (cosine similarity of its best indexed field)."""
    body = body or StoreSearch()
    _check_filter(body.filter or {})
    root = _root(tenant)
    prefix = root + (
        _labels(body.namespace_prefix, "namespace_prefix") if body.namespace_prefix else ()
    )
    if body.query:
        found = await _ranked(keel, prefix, body)
        return {"items": [_item(item, len(root)) for item in found]}
    items = await keel.persistence.store.asearch(
        prefix,
        filter=body.filter,
        limit=body.limit,
        offset=body.offset,
        refresh_ttl=body.refresh_ttl,
    )
    return {"items": [_item(item, len(root)) for item in items]}


async def _ranked(keel: Keel, prefix: tuple[str, ...], body: StoreSearch) -> list[SearchItem]:
    """A page of the items under `prefix` matching `body.filter`, by similarity to
    `body.query`; vectors whose item has gone (deleted, expired) are removed on the way."""
    store, vectors = keel.persistence.store, keel.persistence.vectors
    among = None
    if body.filter:
        matching = await store.asearch(prefix, filter=body.filter, limit=FILTERED_CANDIDATES)
        among = {(joined(item.namespace), item.key) for item in matching}
    query = await asyncio.to_thread(keel.deps.corpora.embedder.embed, [body.query or ""])
    wanted = body.offset + body.limit
    ranked = await vectors.ranked(prefix, query[0], wanted + SPARE, among)
    refresh = body.refresh_ttl is not False  # the store refreshes on read by default
    ops = [GetOp(tuple(ns.split(".")), key, refresh_ttl=refresh) for ns, key, _ in ranked]
    found: list[SearchItem] = []
    for (ns, key, score), item in zip(ranked, await store.abatch(ops), strict=True):
        if not isinstance(item, Item):
            await vectors.remove(ns.split("."), key)
            continue
        found.append(
            SearchItem(
                item.namespace, item.key, item.value, item.created_at, item.updated_at, score
            )
        )
    return found[body.offset : wanted]


@router.post("/namespaces")
async def list_namespaces(
    keel: KeelDep, tenant: TenantDep, body: StoreNamespaces | None = None
) -> dict[str, list[list[str]]]:
    """The tenant's namespaces under `prefix` and ending with `suffix`, cut at `max_depth`
    labels, deduplicated and sorted, `limit` after `offset`."""
    body = body or StoreNamespaces()
    root = _root(tenant)
    prefix = root + (_labels(body.prefix, "prefix") if body.prefix else ())
    suffix = _labels(body.suffix, "suffix") if body.suffix else None
    found = await keel.persistence.store.alist_namespaces(
        prefix=prefix,
        suffix=suffix,
        max_depth=None if body.max_depth is None else len(root) + body.max_depth,
        limit=body.limit,
        offset=body.offset,
    )
    return {"namespaces": [list(namespace[len(root) :]) for namespace in found]}
