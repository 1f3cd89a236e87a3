"""Liveness and readiness."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import KeelDep
from api.schemas import Readiness

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is down"}},
)
async def ready(keel: KeelDep) -> JSONResponse:
    """Checks the checkpoint database, the vector store and the cache; 503 when one is down."""
    checks: dict[str, str] = {}

    async def check(name: str, probe) -> None:  # type: ignore[no-untyped-def]
        try:
            await asyncio.wait_for(probe(), timeout=5)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"

    await check(
        "checkpoints",
        lambda: keel.persistence.saver.aget_tuple(
            {"configurable": {"thread_id": "__ready__", "checkpoint_ns": ""}}
        ),
    )
    await check("vector_store", lambda: asyncio.to_thread(keel.deps.corpora.heartbeat))
    await check("cache", keel.deps.cache.ping)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )
