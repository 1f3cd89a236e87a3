"""The LangGraph Agent Server API dialect at the root paths (`/assistants`, `/threads`, `/runs`,
`/store`, `/ok`, `/info`), over keel's runtime, so the official SDKs and LangGraph Studio work
unchanged; beside it, over its run start, the agent protocols: A2A (`a2a`, in this router) and
MCP (`mcp`, mounted by the app, whose lifespan runs its transport)."""

from fastapi import APIRouter, Depends, Request

from api.agent import a2a, assistants, crons, runs, store, system, thread_stream, threads
from api.errors import error_responses
from api.ratelimit import enforce_rate_limit
from graph.errors import InvalidInput


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not declare (a typo must not pass silently)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known, pending = set(), [dependant]
    while pending:
        current = pending.pop()
        known |= {param.alias for param in current.query_params}
        pending += current.dependencies
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidInput(f"unknown query parameters: {', '.join(unknown)[:200]}")


def build_router() -> APIRouter:
    """The dialect's routes: authenticated and rate limited like /v1, except `/ok` and `/info`."""
    router = APIRouter()
    # 400: a body that is not JSON; 409: a taken thread id, or a busy thread (strategy reject).
    common = error_responses(400, 401, 404, 409, 413, 422, 429)
    checks = [Depends(enforce_rate_limit), Depends(reject_unknown_query)]
    for module in (assistants, threads, thread_stream, crons, runs, store, a2a):
        router.include_router(module.router, dependencies=checks, responses=common)
    router.include_router(system.router)
    return router
