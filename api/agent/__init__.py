"""The LangGraph Agent Server API dialect at the root paths (`/assistants`, `/threads`, `/ok`,
`/info`), over keel's runtime, so the official SDKs and LangGraph Studio work unchanged."""

from fastapi import APIRouter, Depends

from api.agent import assistants, runs, system, threads
from api.errors import error_responses
from api.ratelimit import enforce_rate_limit


def build_router() -> APIRouter:
    """The dialect's routes: authenticated and rate limited like /v1, except `/ok` and `/info`."""
    router = APIRouter()
    common = error_responses(401, 404, 413, 422, 429)
    for module in (assistants, threads, runs):
        router.include_router(
            module.router, dependencies=[Depends(enforce_rate_limit)], responses=common
        )
    router.include_router(system.router)
    return router
