"""The Agent Server's store (`/store/items`, search, namespaces): JSON items under namespaces, in
LangGraph's own store on keel's database (`AsyncPostgresStore` on the shared pool).

Each tenant's items live under `("keel", "store", <tenant>)`, a prefix the client never sees nor
names: another tenant's item is simply absent (`null` on get, as the reference server answers
for a missing item; never listed, never deleted)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from api.agent.schemas import StoreDelete, StoreNamespaces, StorePut, StoreSearch
from api.deps import KeelDep, TenantDep
from graph.errors import InvalidInput

router = APIRouter(prefix="/store", tags=["agent: store"])
FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


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
    as operators, so anything else in one is refused (422), not left to fail in SQL."""
    for field, condition in filter.items():
        if isinstance(condition, dict):
            unknown = sorted(set(condition) - set(FILTER_OPERATORS))
            if unknown or not condition:
                raise InvalidInput(
                    f"filter on {field!r}: use a value or the operators {list(FILTER_OPERATORS)}"
                )


@router.put("/items", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def put_item(body: StorePut, keel: KeelDep, tenant: TenantDep) -> Response:
    """Stores or replaces an item; with `ttl`, it expires that many minutes after its last
    write or read."""
    store = keel.persistence.store
    if body.ttl is not None and not store.supports_ttl:
        raise InvalidInput("this server's store keeps no ttl (memory://): leave ttl unset")
    if body.index:
        raise InvalidInput("keel's store has no semantic index: leave index unset")
    namespace = _root(tenant) + _labels(body.namespace, "namespace")
    await store.aput(namespace, body.key, body.value, index=False, ttl=body.ttl)
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
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/items/search")
async def search_items(
    keel: KeelDep, tenant: TenantDep, body: StoreSearch | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The tenant's items under `namespace_prefix` whose values match `filter`, most recently
    updated first, `limit` after `offset`."""
    body = body or StoreSearch()
    if body.query:
        raise InvalidInput("keel's store has no semantic index: search by filter, not query")
    _check_filter(body.filter or {})
    root = _root(tenant)
    prefix = root + (
        _labels(body.namespace_prefix, "namespace_prefix") if body.namespace_prefix else ()
    )
    items = await keel.persistence.store.asearch(
        prefix,
        filter=body.filter,
        limit=body.limit,
        offset=body.offset,
        refresh_ttl=body.refresh_ttl,
    )
    return {"items": [_item(item, len(root)) for item in items]}


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
